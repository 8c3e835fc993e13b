import { describe, expect, it } from "@effect/vitest"
import { type Duration, Effect, type Scope } from "effect"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import * as net from "node:net"
import { ApiClient, baseUrlOf } from "../../src/api/Client.js"
import { InvalidArgument, Timeout, Unavailable } from "../../src/domain/Errors.js"
import { spec, vmName } from "./harness.js"

const clientOf = (addr: string, timeout?: Duration.DurationInput) =>
  Effect.provide(ApiClient, ApiClient.layerFetch({ addr, ...(timeout === undefined ? {} : { timeout }) }))

/** A loopback listener for the test's scope; `onConnection` decides what the "node" does. */
const listen = (server: net.Server): Effect.Effect<string, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.async<string>((resume) => {
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed(`127.0.0.1:${(server.address() as AddressInfo).port}`)))
    }),
    () =>
      Effect.async<void>((resume) => {
        if ("closeAllConnections" in server) (server as http.Server).closeAllConnections()
        server.close(() => resume(Effect.void))
      })
  )

/** A port nothing listens on: bind port 0, note it, close it. */
const deadAddress = Effect.scoped(listen(net.createServer()))

describe("the client's own errors name the address", () => {
  it.live("nothing listening: Unavailable, naming the address and how to point elsewhere", () =>
    Effect.gen(function* () {
      const addr = yield* deadAddress
      const client = yield* clientOf(addr)
      const error = yield* Effect.flip(client.listVms())
      expect(error).toBeInstanceOf(Unavailable)
      expect(error.code).toBe("BLX_UNAVAILABLE")
      expect(error.subject).toBe(addr)
      expect(error.message).toBe(`no Blixard node answers at ${addr}; is it running? (--addr / BLIXARD_ADDR)`)
    })
  )

  it.scopedLive("a node that accepts but never answers: Timeout after the configured time, naming the address", () =>
    Effect.gen(function* () {
      const sockets: Array<net.Socket> = []
      const addr = yield* listen(net.createServer((socket) => void sockets.push(socket)))
      yield* Effect.addFinalizer(() => Effect.sync(() => sockets.forEach((socket) => socket.destroy())))
      const client = yield* clientOf(addr, "300 millis")
      const started = Date.now()
      const error = yield* Effect.flip(client.createVm(spec("web")))
      expect(error).toBeInstanceOf(Timeout)
      expect(error.code).toBe("BLX_TIMEOUT")
      expect(error.subject).toBe(addr)
      expect(error.message).toContain(`the node at ${addr} did not answer within`)
      expect(Date.now() - started).toBeGreaterThanOrEqual(250)
    })
  )

  it.scopedLive("an undeclared status with one of our errors as its body arrives as that error (e.g. 413)", () =>
    Effect.gen(function* () {
      const addr = yield* listen(
        http.createServer((_, response) => {
          response.writeHead(413, { "content-type": "application/json" })
          response.end(JSON.stringify({ _tag: "InvalidArgument", code: "BLX_INVALID_ARGUMENT", message: "too large" }))
        })
      )
      const error = yield* Effect.flip((yield* clientOf(addr)).startVm(vmName("web")))
      expect(error).toBeInstanceOf(InvalidArgument)
      expect(error.message).toBe("too large")
    })
  )

  it.scopedLive("something that is not a Blixard node: Unavailable saying the answer is not understood", () =>
    Effect.gen(function* () {
      const addr = yield* listen(
        http.createServer((request, response) => {
          response.writeHead(request.url === "/v1/vms" ? 200 : 418, { "content-type": "text/html" })
          response.end("<html>hello</html>")
        })
      )
      const client = yield* clientOf(addr)
      const listed = yield* Effect.flip(client.listVms())
      expect(listed).toBeInstanceOf(Unavailable)
      expect(listed.message).toContain(`the answer from ${addr} does not match the API`)
      const other = yield* Effect.flip(client.health())
      expect(other).toBeInstanceOf(Unavailable)
      expect(other.message).toContain(`the node at ${addr} answered HTTP 418`)
    })
  )
})

describe("addresses", () => {
  it("HOST:PORT becomes an http base URL; IPv6 stays bracketed", () => {
    expect(baseUrlOf("127.0.0.1:7001")).toBe("http://127.0.0.1:7001")
    expect(baseUrlOf("[::1]:7001")).toBe("http://[::1]:7001")
    expect(baseUrlOf("node-2.lan:7001")).toBe("http://node-2.lan:7001")
  })
})
