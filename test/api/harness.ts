/**
 * A real API server on a free loopback port over an in-memory control plane, and raw HTTP helpers
 * for what the derived client cannot send (malformed input).
 */
import { HttpServer } from "@effect/platform"
import { Context, Effect, Layer, type Scope } from "effect"
import * as http from "node:http"
import { ControlPlane, type ControlPlaneShape } from "../../src/api/ControlPlane.js"
import { makeMemory, type MemoryControlPlane } from "../../src/api/ControlPlaneMemory.js"
import { layerServer, type ApiOptions } from "../../src/api/Server.js"
import type { NodeId } from "../../src/domain/NodeId.js"
import type { VmName } from "../../src/domain/VmName.js"
import { InlineConfig, VmSpec } from "../../src/domain/VmSpec.js"

export interface Served {
  readonly plane: MemoryControlPlane
  /** `127.0.0.1:PORT` */
  readonly addr: string
  readonly url: string
}

/**
 * Starts the API on port 0 for the test's scope and tells where it listens. `serving` chooses what
 * the server calls (default: the in-memory control plane itself).
 */
export const serve = (
  options: ApiOptions = {},
  serving: (plane: MemoryControlPlane) => ControlPlaneShape = (plane) => plane
): Effect.Effect<Served, unknown, Scope.Scope> =>
  Effect.gen(function* () {
    const plane = makeMemory({ now: () => 1_700_000_000_000 })
    const context = yield* Layer.build(
      layerServer({ port: 0, host: "127.0.0.1", ...options }).pipe(Layer.provide(Layer.succeed(ControlPlane, serving(plane))))
    )
    const address = Context.get(context, HttpServer.HttpServer).address
    if (address._tag !== "TcpAddress") return yield* Effect.die(new Error("expected a TCP address"))
    const addr = `127.0.0.1:${address.port}`
    return { plane, addr, url: `http://${addr}` }
  })

export const vmName = (name: string) => name as VmName
export const nodeId = (id: number) => id as NodeId

export const spec = (name: string, fields: Partial<ConstructorParameters<typeof VmSpec>[0]> = {}) =>
  new VmSpec({ name: vmName(name), source: new InlineConfig({ module: "{ ... }: { }" }), ...fields })

/** The JSON a client would send for a VM spec (encoded form). */
export const specJson = (name: string, extra: Record<string, unknown> = {}) => ({
  name,
  source: { _tag: "Inline", module: "{ ... }: { }" },
  vcpus: 1,
  memoryMiB: 512,
  labels: {},
  constraints: [],
  restartPolicy: "on-failure",
  ...extra
})

export interface RawResponse {
  readonly status: number
  readonly contentType: string | undefined
  /** The `Allow` header (of a 405). */
  readonly allow: string | undefined
  readonly text: string
  readonly json: unknown
}

/** One request on a fresh connection; the body is sent as given (chunked when `chunked`). */
export const raw = (
  url: string,
  options: {
    readonly method?: string
    readonly path: string
    readonly body?: string | Buffer
    readonly headers?: Record<string, string>
    readonly chunked?: boolean
  }
): Effect.Effect<RawResponse, Error> =>
  Effect.async<RawResponse, Error>((resume) => {
    const headers: Record<string, string | number> = { ...options.headers }
    if (options.body !== undefined && options.chunked !== true) headers["content-length"] = Buffer.byteLength(options.body)
    if (options.body !== undefined && headers["content-type"] === undefined) headers["content-type"] = "application/json"
    const request = http.request(`${url}${options.path}`, { method: options.method ?? "GET", headers, agent: false }, (response) => {
      const chunks: Array<Buffer> = []
      response.on("data", (chunk: Buffer) => chunks.push(chunk))
      response.on("error", (error) => resume(Effect.fail(error)))
      response.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8")
        let json: unknown = undefined
        try {
          json = text === "" ? undefined : JSON.parse(text)
        } catch {
          json = undefined
        }
        resume(Effect.succeed({ status: response.statusCode ?? 0, contentType: response.headers["content-type"], allow: response.headers.allow, text, json }))
      })
    })
    request.on("error", (error) => resume(Effect.fail(error)))
    if (options.body !== undefined) {
      if (options.chunked === true) {
        // Several writes, so the body goes out as chunks without a Content-Length.
        const body = Buffer.from(options.body)
        const step = 64 * 1024
        for (let at = 0; at < body.length; at += step) request.write(body.subarray(at, at + step))
      } else {
        request.write(options.body)
      }
    }
    request.end()
    return Effect.sync(() => request.destroy())
  })
