/**
 * The log endpoint over real `node:http` servers on loopback: a node that does not host the VM
 * forwards the request to the one that does; when the client goes away, the hosting node's log
 * stream ends (its finalizer runs: no file poll or journalctl left behind); an unreachable hosting
 * node is a clear `BLX_UNAVAILABLE`.
 */
import { describe, expect, it } from "vitest"
import { Effect, Runtime, Schedule, Stream } from "effect"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import { NodeId } from "../../src/domain/NodeId.js"
import type { RawRoute } from "../../src/api/RawRoutes.js"
import * as VmLogsRoute from "../../src/api/VmLogsRoute.js"
import { freePort } from "../../src/node/FreePort.js"
import { waitFor } from "../e2e/harness.js"

const runFork = Runtime.runFork(Runtime.defaultRuntime)

/** The route alone on a bare server (the API server's matching and token check are tested in Server.test.ts). */
const serve = async (route: RawRoute): Promise<{ server: http.Server; address: string }> => {
  const server = http.createServer((request, response) => {
    const [path, query] = (request.url ?? "").split("?")
    const match = /^\/v1\/vms\/([^/]+)\/logs$/.exec(path!)
    if (match === null) return void response.writeHead(404).end()
    const fail = (error: unknown) => void response.writeHead(500).end(String(error))
    route.handle(request, response, { params: { name: decodeURIComponent(match[1]!) }, query: new URLSearchParams(query ?? ""), runFork, fail })
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  return { server, address: `127.0.0.1:${(server.address() as AddressInfo).port}` }
}

describe("GET /v1/vms/NAME/logs", () => {
  it("a non-hosting node forwards it; the client going away ends the hosting node's stream", async () => {
    let open = 0
    let forwardedBy: string | undefined
    let n = 0
    const ticks = Stream.scoped(Effect.acquireRelease(Effect.sync(() => void open++), () => Effect.sync(() => void open--))).pipe(
      Stream.flatMap(() => Stream.repeatEffectWithSchedule(Effect.sync(() => `tick ${n++}\n`), Schedule.spaced("50 millis")))
    )
    const hostRoute = VmLogsRoute.route({
      node: NodeId.make(2),
      locate: () => ({ _tag: "Here" }),
      local: (request) => (request.follow ? ticks : Stream.make("whole log\n")),
      credential: "unused"
    })
    const host = await serve({
      ...hostRoute,
      handle: (request, response, context) => {
        forwardedBy = request.headers[VmLogsRoute.ForwardedHeader] as string | undefined
        hostRoute.handle(request, response, context)
      }
    })
    const proxy = await serve(
      VmLogsRoute.route({
        node: NodeId.make(1),
        locate: () => ({ _tag: "Remote", node: NodeId.make(2), address: host.address }),
        local: () => Stream.die("the proxy must not read its own disk"),
        credential: "blxn_1_secret"
      })
    )
    try {
      const whole = await fetch(`http://${proxy.address}/v1/vms/web/logs`)
      expect(whole.status).toBe(200)
      expect(await whole.text()).toBe("whole log\n")
      expect(forwardedBy).toBe("1")

      let received = ""
      const request = http.get(`http://${proxy.address}/v1/vms/web/logs?follow=true&tail=5`, (answer) => {
        answer.setEncoding("utf8")
        answer.on("data", (chunk: string) => (received += chunk))
      })
      request.on("error", () => undefined)
      await waitFor("three ticks through the proxy", async () => (received.includes("tick 2\n") ? true : undefined), 20_000)
      expect(open).toBe(1)
      request.destroy()
      await waitFor("the hosting node's stream to end", async () => (open === 0 ? true : undefined), 20_000)

      const bad = await fetch(`http://${proxy.address}/v1/vms/web/logs?tail=-1`)
      expect(bad.status).toBe(400)
      expect(((await bad.json()) as { code: string }).code).toBe("BLX_INVALID_ARGUMENT")
    } finally {
      proxy.server.close()
      host.server.close()
      proxy.server.closeAllConnections()
      host.server.closeAllConnections()
    }
  })

  it("an unreachable hosting node is BLX_UNAVAILABLE naming it", async () => {
    const port = await freePort()
    const proxy = await serve(
      VmLogsRoute.route({
        node: NodeId.make(1),
        locate: () => ({ _tag: "Remote", node: NodeId.make(3), address: `127.0.0.1:${port}` }),
        local: () => Stream.empty,
        credential: "blxn_1_secret"
      })
    )
    try {
      const answer = await fetch(`http://${proxy.address}/v1/vms/web/logs?follow=true`)
      expect(answer.status).toBe(503)
      const error = (await answer.json()) as { code: string; message: string }
      expect(error.code).toBe("BLX_UNAVAILABLE")
      expect(error.message).toContain("node 3")
    } finally {
      proxy.server.close()
    }
  })
})
