/**
 * `GET /v1/vms/NAME/logs?follow=true&tail=N` on every node: the VM's log (`vm/VmLogs.ts`) as
 * `text/plain`, streamed (chunked) for as long as the client listens when following.
 *
 * One of the server's raw routes (`RawRoutes.ts`): the answer is a stream of text, not one JSON
 * value. Errors are still Blixard's JSON errors with their status. It needs the `logs` access
 * (operator or admin, `Auth.ts`): a guest may print secrets on its console. The node that hosts the
 * VM (per this node's replicated state) serves it from its disk; any other node forwards the
 * request to the hosting node's API with its own node credential (as a follower forwards writes),
 * marked so the hosting node answers from its disk and never forwards again. When the client goes
 * away, the stream (a file poll or `journalctl`) or the forwarded request is ended at once.
 */
import { Cause, Effect, Exit, Schema, Stream } from "effect"
import * as http from "node:http"
import * as https from "node:https"
import { BlixardError, InvalidArgument, Unavailable, VmNotFound } from "../domain/Errors.js"
import type { NodeId } from "../domain/NodeId.js"
import { VmName } from "../domain/VmName.js"
import type { VmLogRequest } from "../vm/VmLogs.js"
import type { ClientTls } from "./Client.js"
import { errorResponse, type RawRoute } from "./RawRoutes.js"

/** Where the VM's log is: here, on another node (its API address), or nowhere. */
export type LogLocation =
  | { readonly _tag: "Here" }
  | { readonly _tag: "Remote"; readonly node: NodeId; readonly address: string }
  | { readonly _tag: "Missing"; readonly error: BlixardError }

export interface VmLogsRouteOptions {
  readonly node: NodeId
  /** Where `name`'s log is, from this node's replicated state. */
  readonly locate: (name: VmName) => LogLocation
  /** The log on this node. */
  readonly local: (request: VmLogRequest) => Stream.Stream<string, { readonly message: string }>
  /** This node's credential for other nodes' APIs (`Auth.nodeCredential`); a function is asked at each request (the cluster secret may be rotated). */
  readonly credential: string | (() => string)
  /** How long the hosting node may take to begin its answer (default 5 s). */
  readonly connectTimeoutMs?: number | undefined
  /** The cluster's TLS (this node's certificate, the CA the hosting node's must chain to); absent: plain HTTP. */
  readonly tls?: ClientTls | undefined
}

/** Set on a forwarded request: the receiver serves from its own disk, never forwards again. */
export const ForwardedHeader = "x-blixard-forwarded-by"

const encodeError = Schema.encodeSync(BlixardError)

const statusOf = (error: BlixardError): number =>
  error._tag === "VmNotFound" ? 404 : error._tag === "InvalidArgument" ? 400 : error._tag === "Unavailable" ? 503 : 502

const sendError = (response: http.ServerResponse, error: BlixardError): void => {
  if (response.headersSent) {
    // Mid-stream: the client sees the error as the log's last line.
    response.end(`\n# ${error.code}: ${error.message}\n`)
    return
  }
  const body = JSON.stringify(encodeError(error))
  response.writeHead(statusOf(error), { "content-type": "application/json", "content-length": Buffer.byteLength(body) })
  response.end(body)
}

const Query = Schema.Struct({
  follow: Schema.optionalWith(Schema.BooleanFromString, { exact: true }),
  tail: Schema.optionalWith(Schema.NumberFromString.pipe(Schema.int(), Schema.between(0, 1_000_000)), { exact: true })
})
const decodeQuery = Schema.decodeUnknownEither(Query, { onExcessProperty: "error" })

const parse = (rawName: string, params: URLSearchParams): VmLogRequest | InvalidArgument => {
  const where = `GET /v1/vms/${rawName}/logs`
  const name = Schema.decodeUnknownEither(VmName)(rawName)
  if (name._tag === "Left") return new InvalidArgument({ subject: rawName, message: `${where}: the VM name must be a lowercase DNS label` })
  const decoded = decodeQuery(Object.fromEntries(params))
  if (decoded._tag === "Left") {
    return new InvalidArgument({ subject: "query", message: `${where}: follow is true or false, tail a whole number of lines from 0 to 1000000` })
  }
  return { name: name.right, follow: decoded.right.follow ?? false, ...(decoded.right.tail !== undefined ? { tail: decoded.right.tail } : {}) }
}

/** Serves the log from this node's disk. */
const serveLocal = (
  options: VmLogsRouteOptions,
  request: VmLogRequest,
  response: http.ServerResponse,
  runFork: Parameters<RawRoute["handle"]>[2]["runFork"]
) => {
  const write = (chunk: string) =>
    Effect.async<void>((resume) => {
      if (response.destroyed) return resume(Effect.interrupt)
      if (!response.headersSent) response.writeHead(200, { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store" })
      // Backpressure: a slow client slows the reading, nothing piles up in memory.
      if (response.write(chunk)) resume(Effect.void)
      else response.once("drain", () => resume(Effect.void))
    })
  const fiber = runFork(Stream.runForEach(options.local(request), write))
  // The client went away: end the stream (its file poll or journalctl) now.
  response.once("close", () => fiber.unsafeInterruptAsFork(fiber.id()))
  fiber.addObserver((exit) => {
    if (Exit.isSuccess(exit)) {
      if (!response.headersSent) response.writeHead(200, { "content-type": "text/plain; charset=utf-8" })
      response.end()
      return
    }
    if (Cause.isInterruptedOnly(exit.cause)) return void response.destroy()
    const error = Cause.squash(exit.cause)
    sendError(
      response,
      Schema.is(BlixardError)(error)
        ? error
        : new Unavailable({ node: options.node, subject: request.name, message: `VM "${request.name}": reading its log on node ${options.node} failed: ${String(error)}` })
    )
  })
}

/** Forwards the request to the hosting node and relays its answer as it comes. */
const forward = (
  options: VmLogsRouteOptions,
  where: { readonly node: NodeId; readonly address: string },
  url: string,
  response: http.ServerResponse
) => {
  const unavailable = (why: string) =>
    new Unavailable({
      node: options.node,
      subject: `node ${where.node}`,
      message: `node ${options.node} could not get the VM's log from node ${where.node} (${where.address}), which hosts it: ${why}; is node ${where.node} up?`
    })
  const headers = { authorization: `Bearer ${typeof options.credential === "string" ? options.credential : options.credential()}`, [ForwardedHeader]: String(options.node) }
  const tls = options.tls
  const upstream = (tls === undefined ? http.get : https.get)(
    `${tls === undefined ? "http" : "https"}://${where.address}${url}`,
    tls === undefined
      ? { headers }
      : {
          headers,
          ca: tls.ca,
          ...(tls.cert !== undefined && tls.key !== undefined ? { cert: tls.cert, key: tls.key } : {}),
          ...(tls.checkServerIdentity !== undefined ? { checkServerIdentity: tls.checkServerIdentity as never } : {})
        },
    (answer) => {
      upstream.setTimeout(0)
      response.writeHead(answer.statusCode ?? 502, {
        "content-type": answer.headers["content-type"] ?? "text/plain; charset=utf-8",
        "cache-control": "no-store"
      })
      answer.pipe(response)
      answer.once("error", () => response.destroy())
    }
  )
  upstream.setTimeout(options.connectTimeoutMs ?? 5000, () => upstream.destroy(new Error("no answer in time")))
  upstream.once("error", (e) => {
    if (!response.headersSent) sendError(response, unavailable(e.message))
    else response.destroy()
  })
  // The client went away: so does the request to the hosting node (which then ends its stream).
  response.once("close", () => upstream.destroy())
}

export const path = "/v1/vms/:name/logs"

export const route = (options: VmLogsRouteOptions): RawRoute => ({
  method: "GET",
  path,
  access: "logs",
  operation: {
    tags: ["vms"],
    operationId: "vms.logs",
    description:
      "The VM's log: its runner's console output, the build log and Blixard's own lines (process mode: the log file; systemd mode: the build log, then the unit's journal), from whichever node hosts it (any node forwards). Streamed as text/plain; with follow, until the client goes away. Needs the operator or admin role: a guest may print secrets on its console.",
    parameters: [
      { name: "name", in: "path", required: true, description: "The VM's name", schema: { type: "string" } },
      { name: "follow", in: "query", required: false, description: "Keep sending what the VM writes (default false).", schema: { type: "boolean" } },
      { name: "tail", in: "query", required: false, description: "Begin with the last N lines (default: the whole log).", schema: { type: "integer", minimum: 0, maximum: 1_000_000 } }
    ],
    responses: {
      "200": { description: "The log, streamed", content: { "text/plain; charset=utf-8": { schema: { type: "string" } } } },
      "400": errorResponse("InvalidArgument: the name, follow or tail is malformed", "InvalidArgument"),
      "404": errorResponse("VmNotFound", "VmNotFound"),
      "503": errorResponse("Unavailable: the VM is not placed, or its node does not answer", "Unavailable")
    }
  },
  handle: (request, response, { params, query, runFork }) => {
    const parsed = parse(params.name!, query)
    if (parsed instanceof InvalidArgument) return sendError(response, parsed)
    const location = request.headers[ForwardedHeader] !== undefined ? { _tag: "Here" as const } : options.locate(parsed.name)
    switch (location._tag) {
      case "Missing":
        return sendError(response, location.error)
      case "Remote":
        return forward(options, location, request.url ?? "", response)
      case "Here":
        return serveLocal(options, parsed, response, runFork)
    }
  }
})

/** `locate` over a replicated state's VMs and nodes. */
export const locateIn = (
  self: NodeId,
  vms: { get(name: string): { readonly node?: NodeId | undefined } | undefined },
  nodes: { get(id: number): { readonly address: string } | undefined }
) =>
(name: VmName): LogLocation => {
  const vm = vms.get(name)
  if (vm === undefined) {
    return { _tag: "Missing", error: new VmNotFound({ node: self, subject: name, message: `no VM named "${name}" (asked node ${self})` }) }
  }
  if (vm.node === undefined) {
    return {
      _tag: "Missing",
      error: new Unavailable({ node: self, subject: name, message: `VM "${name}" is not placed on any node yet, so it has no log; see \`blixard vm status ${name}\`` })
    }
  }
  if (vm.node === self) return { _tag: "Here" }
  const node = nodes.get(vm.node)
  if (node === undefined) {
    return { _tag: "Missing", error: new Unavailable({ node: self, subject: name, message: `VM "${name}" is placed on node ${vm.node}, whose address node ${self} does not know` }) }
  }
  return { _tag: "Remote", node: vm.node, address: node.address }
}
