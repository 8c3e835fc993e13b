/**
 * The API's serving path alone: closed loop, HTTP/1.1 keep-alive, each request a POST /v1/vms of a
 * ~150-byte VM spec, answered by a trivial in-memory `ControlPlane` (no Raft, no storage). 64 clients,
 * then 1 client. The load generator runs in a worker thread (its own event loop, same two cores).
 *
 *  - `node:http` baseline: JSON.parse and a fixed answer, no validation (the machine's ceiling).
 *  - `the API as built`: `layerServer`, the API's own adapter on `node:http` (route table compiled
 *    from `BlixardApi`, the body decoded and the answer encoded with its schemas, the handler run as
 *    an Effect), with its defaults (no request log).
 *  - `…, on the node's shared port`: the same as a node serves it (`layerSharedPort`), with the
 *    peers' `/raft` endpoint (`PeerTransport`'s websocket upgrades and requests) on the same
 *    `http.Server`: every request's path is checked against the peers' path before the API's routes.
 */
import { HttpServer } from "@effect/platform"
import { Context, Effect, Exit, Layer, Scope } from "effect"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import { Worker } from "node:worker_threads"
import { ControlPlane, type ControlPlaneShape } from "../src/api/ControlPlane.js"
import { layerServer, layerSharedPort } from "../src/api/Server.js"
import { trusted } from "../src/domain/Decode.js"
import { NotImplemented } from "../src/domain/Errors.js"
import type { NodeId } from "../src/domain/NodeId.js"
import { VmRecord, VmStatus } from "../src/domain/VmStatus.js"
import * as PeerTransport from "../src/net/PeerTransport.js"

export interface HttpResult {
  readonly name: string
  readonly clients: number
  readonly secondsPerRound: number
  /** Requests/s of the median round. */
  readonly requestsPerSecond: number
  /** Requests/s of every round, in order (the variants take turns, so drift hits them alike). */
  readonly rounds: ReadonlyArray<number>
  /** Latency percentiles of the median round. */
  readonly p50Ms: number
  readonly p99Ms: number
  /** Answers other than 201, over all rounds. */
  readonly errors: number
}

/** A server under test, listening on a loopback port. */
interface Variant {
  readonly name: string
  readonly port: number
  readonly stop: () => Promise<void>
}

/**
 * Answers `createVm` with a record built from the spec and a counter; nothing else is served. The
 * record is built `trusted` (unvalidated), as the replicated state builds it: validating it again
 * costs ~60 µs a record here, more than decoding the request and encoding the answer together, and
 * would measure the domain classes instead of the serving path.
 */
const trivialControlPlane = (): ControlPlaneShape => {
  let revision = 0
  const unused = (method: string) =>
    Effect.fail(new NotImplemented({ message: `${method} is not part of the HTTP benchmark` }))
  return {
    createVm: (spec) =>
      Effect.sync(
        () =>
          new VmRecord(
            {
              spec,
              desired: "stopped",
              node: 1 as NodeId,
              status: new VmStatus({ phase: "stopped", since: 0, restarts: 0 }, trusted),
              revision: ++revision,
              createdAt: 0
            },
            trusted
          )
      ),
    listVms: () => unused("listVms"),
    updateVm: () => unused("updateVm"),
    getVm: () => unused("getVm"),
    startVm: () => unused("startVm"),
    stopVm: () => unused("stopVm"),
    deleteVm: () => unused("deleteVm"),
    setVmLabels: () => unused("setVmLabels"),
    createToken: () => unused("createToken"),
    listTokens: () => unused("listTokens"),
    revokeToken: () => unused("revokeToken"),
    createJoinToken: () => unused("createJoinToken"),
    listJoinTokens: () => unused("listJoinTokens"),
    revokeJoinToken: () => unused("revokeJoinToken"),
    consumeJoinToken: () => unused("consumeJoinToken"),
    listCertificates: () => unused("listCertificates"),
    revokeCertificate: () => unused("revokeCertificate"),
    recordCertificate: () => unused("recordCertificate"),
    caStatus: () => unused("caStatus"),
    rotateCa: unused("rotateCa"),
    finishCaRotation: unused("finishCaRotation"),
    caRotationMoved: () => unused("caRotationMoved"),
    listNodes: () => unused("listNodes"),
    heartbeat: () => unused("heartbeat"),
    setNodeState: () => unused("setNodeState"),
    registerNode: () => unused("registerNode"),
    reportVmStatus: () => unused("reportVmStatus"),
    reportVmStatuses: () => unused("reportVmStatuses"),
    clusterStatus: unused("clusterStatus"),
    join: () => unused("join"),
    leave: () => unused("leave"),
    transferLeader: () => unused("transferLeader"),
    health: unused("health")
  }
}

// The load generator, as plain JavaScript evaluated in a worker thread.
const generator = `
const { parentPort, workerData } = require("node:worker_threads")
const http = require("node:http")
const { port, clients, seconds } = workerData
const agent = new http.Agent({ keepAlive: true, maxSockets: clients })
const latencies = []
let requests = 0
let errors = 0
let sequence = 0
const deadline = performance.now() + seconds * 1000
const once = () => new Promise((resolve) => {
  // ~150 bytes (every VmSpec field is required on the wire):
  // {"spec":{"name":"web-123","source":{"_tag":"Flake","ref":"github:me/vms#web"},"vcpus":1,"memoryMiB":512,"labels":{},"constraints":[],"restartPolicy":"on-failure"}}
  const body = JSON.stringify({ spec: { name: "web-" + (sequence++ % 100000), source: { _tag: "Flake", ref: "github:me/vms#web" },
    vcpus: 1, memoryMiB: 512, labels: {}, constraints: [], restartPolicy: "on-failure" } })
  const started = performance.now()
  const request = http.request({ host: "127.0.0.1", port, path: "/v1/vms", method: "POST", agent,
    headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) } }, (response) => {
    response.resume()
    response.on("end", () => {
      latencies.push(performance.now() - started)
      requests++
      if (response.statusCode !== 201) errors++
      resolve()
    })
  })
  request.on("error", () => { errors++; resolve() })
  request.end(body)
})
const loop = async () => { while (performance.now() < deadline) await once() }
Promise.all(Array.from({ length: clients }, loop)).then(() => {
  agent.destroy()
  parentPort.postMessage({ requests, errors, latencies })
})
`

interface Load {
  readonly requests: number
  readonly errors: number
  readonly latencies: Array<number>
}

const load = (port: number, clients: number, seconds: number): Promise<Load> =>
  new Promise((resolve, reject) => {
    const worker = new Worker(generator, { eval: true, workerData: { port, clients, seconds } })
    worker.once("message", (result: Load) => resolve(result))
    worker.once("error", reject)
  })

interface Round {
  readonly requestsPerSecond: number
  readonly p50Ms: number
  readonly p99Ms: number
  readonly errors: number
}

const round = async (port: number, clients: number, seconds: number): Promise<Round> => {
  const run = await load(port, clients, seconds)
  const sorted = run.latencies.sort((a, b) => a - b)
  const pick = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? Number.NaN
  return {
    requestsPerSecond: Math.round(run.requests / seconds),
    p50Ms: Number(pick(0.5).toFixed(3)),
    p99Ms: Number(pick(0.99).toFixed(3)),
    errors: run.errors
  }
}

const listen = (server: http.Server): Promise<number> =>
  new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as AddressInfo).port)))

const close = (server: http.Server): Promise<void> =>
  new Promise((resolve) => {
    server.closeAllConnections()
    server.close(() => resolve())
  })

const rawNode = async (): Promise<Variant> => {
  let revision = 0
  const server = http.createServer((request, response) => {
    const chunks: Array<Buffer> = []
    request.on("data", (chunk: Buffer) => chunks.push(chunk))
    request.on("end", () => {
      const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as { spec: unknown }
      const answer = JSON.stringify({ spec: body.spec, desired: "stopped", node: 1, revision: ++revision, createdAt: 0 })
      response.writeHead(201, { "content-type": "application/json", "content-length": Buffer.byteLength(answer) })
      response.end(answer)
    })
  })
  return { name: "node:http, JSON.parse, no validation (baseline)", port: await listen(server), stop: () => close(server) }
}

const controlPlane = Layer.sync(ControlPlane, trivialControlPlane)

const effectServer = async (name: string, server: Layer.Layer<HttpServer.HttpServer, unknown, ControlPlane>): Promise<Variant> => {
  const scope = Effect.runSync(Scope.make())
  const context = await Effect.runPromise(Layer.buildWithScope(server.pipe(Layer.provide(controlPlane)), scope))
  const address = Context.get(context, HttpServer.HttpServer).address
  if (address._tag !== "TcpAddress") throw new Error("expected a TCP address")
  return { name, port: address.port, stop: () => Effect.runPromise(Scope.close(scope, Exit.void)) }
}

const options = { port: 0, host: "127.0.0.1" }

/** As `Daemon.ts` composes it: the node's peer transport serves `/raft` on the API's port. */
const sharedPort = layerSharedPort(options).pipe(
  Layer.provide(PeerTransport.layerTransport({ self: 1, clusterSecret: "benchmark secret" }))
)

/**
 * All variants listen at once; each round gives every variant the same load in turn (64 clients for
 * `seconds`, then 1 client for half of it), so a busy machine's drift hits them alike. The median
 * round is reported, with every round's figure beside it.
 */
export const benchHttp = async (seconds = 5, rounds = 3): Promise<ReadonlyArray<HttpResult>> => {
  const variants = [
    await rawNode(),
    await effectServer("the API as built (layerServer: its node:http adapter, no request log)", layerServer(options)),
    await effectServer("the API as built, on the node's shared port beside /raft (layerSharedPort)", sharedPort)
  ]
  try {
    for (const variant of variants) await load(variant.port, 8, 1) // warm-up: JIT, connections
    const results: Array<HttpResult> = []
    for (const [clients, duration] of [
      [64, seconds],
      [1, Math.max(1, Math.round(seconds / 2))]
    ] as const) {
      const byVariant = variants.map(() => [] as Array<Round>)
      for (let i = 0; i < rounds; i++) {
        for (const [at, variant] of variants.entries()) byVariant[at]!.push(await round(variant.port, clients, duration))
      }
      for (const [at, variant] of variants.entries()) {
        const all = byVariant[at]!
        const median = [...all].sort((a, b) => a.requestsPerSecond - b.requestsPerSecond)[Math.floor(all.length / 2)]!
        results.push({
          name: variant.name,
          clients,
          secondsPerRound: duration,
          requestsPerSecond: median.requestsPerSecond,
          rounds: all.map((r) => r.requestsPerSecond),
          p50Ms: median.p50Ms,
          p99Ms: median.p99Ms,
          errors: all.reduce((sum, r) => sum + r.errors, 0)
        })
      }
    }
    return results
  } finally {
    for (const variant of variants) await variant.stop()
  }
}
