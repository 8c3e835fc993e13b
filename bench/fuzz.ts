/**
 * `npm run bench -- fuzz`: generated requests (methods, paths, query strings, headers, bodies, and
 * tokens of every kind: none, garbage, read-only, operator, admin) thrown at the API of a real
 * `blixard node` on loopback. Counted: answers by status, 5xx (must be 0), requests the node
 * refused (4xx) that changed its state anyway (must be 0), and whether the node is still up.
 *
 * State is compared as what a refused request could change: each VM's spec, desired state and
 * placement, each node's schedulability, and the API tokens (not VM status, which the node's agent
 * reports on its own). Membership changes are not sent with an admin token: a random
 * `cluster join` adds a learner that never catches up, by design.
 *
 * `FUZZ_RUNS` (default 20,000) and `FUZZ_SEED` choose the budget and the inputs; test/e2e/fuzz.test.ts
 * runs a small budget. Then the peer endpoint's fuzzer (bench/peerFuzz.ts) runs against a fresh
 * node, `FUZZ_PEER_RUNS` inputs (default 100,000); then, against nodes serving TLS (their default),
 * TLS itself (bench/tlsFuzz.ts, `FUZZ_TLS_RUNS`, default 20,000), the API over HTTPS and the peer
 * endpoint behind mutual TLS, with the same budgets. A budget of 0 skips that part; `FUZZ_TLS_ONLY=1`
 * runs only the parts against TLS nodes.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as http from "node:http"
import * as https from "node:https"
import * as os from "node:os"
import * as path from "node:path"
import fc from "fast-check"
import { clusterOfCa } from "../src/net/Tls.js"
import { freePort } from "../src/node/FreePort.js"
import { fuzzPeers, type PeerFuzzResult, type PeerTarget } from "./peerFuzz.js"
import { badCertificates, fuzzTls, senderCertificates, type TlsFuzzResult } from "./tlsFuzz.js"

const root = path.resolve(import.meta.dirname, "../..")
const defaultBin = path.join(root, "bin/blixard.js")

export interface FuzzRequest {
  readonly method: string
  readonly path: string
  readonly headers: Record<string, string>
  readonly body: string | undefined
  readonly principal: "none" | "garbage" | "read-only" | "operator" | "admin"
}

export interface FuzzResult {
  readonly name: string
  readonly seed: number
  readonly inputs: number
  readonly byStatus: Record<string, number>
  readonly serverErrors: number
  readonly refusedThatChangedState: number
  /** Requests the client itself could not send, or whose connection the server closed (e.g. after 413). */
  readonly connectionErrors: number
  readonly nodeAlive: boolean
  readonly seconds: number
  readonly inputsPerSecond: number
  /** The first few failures, to reproduce. */
  readonly failures: ReadonlyArray<string>
}

const vmNames = ["seed", "web", "db", "Web", "a".repeat(64), "-x", "x-", "", "..", "%2e%2e", "seed%00"]
const knownPaths = [
  "/v1/vms",
  "/v1/vms/seed",
  "/v1/vms/seed/start",
  "/v1/vms/seed/stop",
  "/v1/vms/seed/labels",
  "/v1/vms/seed/status",
  "/v1/nodes",
  "/v1/nodes/1",
  "/v1/nodes/1/cordon",
  "/v1/nodes/1/uncordon",
  "/v1/nodes/1/drain",
  "/v1/nodes/1/statuses",
  "/v1/cluster",
  "/v1/cluster/members",
  "/v1/cluster/members/1",
  "/v1/cluster/leader",
  "/v1/tokens",
  "/v1/tokens/0123456789abcdef",
  "/v1/cluster/tokens",
  "/v1/cluster/tokens/0123456789abcdef",
  "/v1/cluster/tokens/0123456789abcdef/consume",
  "/v1/tls/ca",
  "/v1/tls/join",
  "/v1/health",
  "/openapi.json",
  "/raft"
]

/** The API's routes, as method and a path to them. */
const routes: ReadonlyArray<readonly [string, string]> = [
  ["GET", "/v1/vms"],
  ["POST", "/v1/vms"],
  ["GET", "/v1/vms/seed"],
  ["DELETE", "/v1/vms/seed"],
  ["POST", "/v1/vms/seed/start"],
  ["POST", "/v1/vms/seed/stop"],
  ["PUT", "/v1/vms/seed/labels"],
  ["PUT", "/v1/vms/seed/status"],
  ["GET", "/v1/nodes"],
  ["PUT", "/v1/nodes/1"],
  ["POST", "/v1/nodes/1/cordon"],
  ["POST", "/v1/nodes/1/uncordon"],
  ["POST", "/v1/nodes/1/drain"],
  ["PUT", "/v1/nodes/1/statuses"],
  ["GET", "/v1/cluster"],
  ["POST", "/v1/cluster/members"],
  ["DELETE", "/v1/cluster/members/1"],
  ["POST", "/v1/cluster/leader"],
  ["POST", "/v1/tokens"],
  ["GET", "/v1/tokens"],
  ["DELETE", "/v1/tokens/0123456789abcdef"],
  ["POST", "/v1/cluster/tokens"],
  ["GET", "/v1/cluster/tokens"],
  ["DELETE", "/v1/cluster/tokens/0123456789abcdef"],
  ["POST", "/v1/cluster/tokens/0123456789abcdef/consume"],
  ["POST", "/v1/tls/join"],
  ["GET", "/v1/health"],
  ["GET", "/openapi.json"]
]

const text = fc.oneof(fc.string({ maxLength: 40 }), fc.fullUnicodeString({ maxLength: 20 }), fc.constantFrom("", " ", "null", "-1", "1e309", "\u0000"))

const segment = fc.oneof(
  fc.constantFrom("v1", "vms", "nodes", "cluster", "tokens", "members", "start", "stop", "labels", "status", "1", "0", "-1", "99999999999", ...vmNames),
  text.map(encodeURIComponent)
)

const pathArb = fc.oneof(
  { weight: 12, arbitrary: fc.constantFrom(...knownPaths) },
  { weight: 2, arbitrary: fc.tuple(fc.constantFrom("/v1/vms/", "/v1/nodes/", "/v1/tokens/", "/v1/cluster/members/"), segment).map(([p, s]) => `${p}${s}`) },
  { weight: 1, arbitrary: fc.array(segment, { minLength: 1, maxLength: 6 }).map((s) => `/${s.join("/")}`) },
  { weight: 1, arbitrary: fc.webPath() }
)

const query = fc.option(
  fc.dictionary(
    fc.oneof(fc.constantFrom("stale", "ifRevision", "__proto__", "constructor"), fc.string({ maxLength: 10 })),
    fc.oneof(fc.constantFrom("true", "false", "1", "-1", "0", "1.5", "", "x"), fc.string({ maxLength: 10 })),
    { maxKeys: 3 }
  ).map((q) => `?${new URLSearchParams(q).toString()}`),
  { nil: "" }
)

const source = fc.oneof(
  fc.record({ _tag: fc.constant("Runner"), path: fc.oneof(fc.constantFrom("/srv/anything", "/nix/store/x-runner", "/nix/store/../../etc", "/nix/storex", "relative", "/"), text) }),
  fc.record({ _tag: fc.constant("Flake"), ref: fc.oneof(fc.constantFrom("-x#y", "--option#a", "github:me/vms#web", "/etc/vms#web", "a#b c"), text) }),
  fc.record({ _tag: fc.constant("Inline"), module: fc.oneof(fc.constant("{ ... }: { }"), text) }),
  fc.record({ _tag: text }),
  fc.anything()
)

const number = fc.oneof(fc.integer(), fc.double(), fc.constantFrom(0, 1, 512, -1, 2 ** 53), text)

const spec = fc.record(
  {
    name: fc.oneof(fc.constantFrom(...vmNames), text),
    source,
    vcpus: number,
    memoryMiB: number,
    labels: fc.oneof(fc.dictionary(text, text, { maxKeys: 3 }), fc.anything()),
    constraints: fc.oneof(fc.constant([]), fc.array(fc.record({ key: text, op: fc.constantFrom("eq", "neq", "x"), value: text }), { maxLength: 2 }), fc.anything()),
    restartPolicy: fc.oneof(fc.constantFrom("always", "on-failure", "never"), text),
    antiAffinity: text,
    extra: fc.anything()
  },
  { requiredKeys: [] }
)

const body = fc.oneof(
  { weight: 2, arbitrary: fc.constant(undefined) },
  { weight: 3, arbitrary: spec.map((s) => JSON.stringify({ spec: s })) },
  { weight: 1, arbitrary: fc.record({ role: fc.oneof(fc.constantFrom("admin", "operator", "read-only"), text), name: text }, { requiredKeys: [] }).map((b) => JSON.stringify(b)) },
  { weight: 1, arbitrary: fc.record({ ifRevision: number, labels: fc.anything(), node: number, status: fc.anything(), id: number, address: text }, { requiredKeys: [] }).map((b) => JSON.stringify(b)) },
  { weight: 1, arbitrary: fc.record({ ttlMs: number, hash: text, node: number, token: text, csr: text, names: fc.anything() }, { requiredKeys: [] }).map((b) => JSON.stringify(b)) },
  { weight: 1, arbitrary: fc.json() },
  { weight: 1, arbitrary: fc.anything().map((v) => JSON.stringify(v) ?? "undefined") },
  { weight: 1, arbitrary: fc.string({ maxLength: 200 }) }
)

const headerName = fc.stringMatching(/^[a-z][a-z0-9-]{0,15}$/)
const headerValue = fc.stringMatching(/^[\x20-\x7e]{0,40}$/)

export const requestArb: fc.Arbitrary<FuzzRequest> = fc
  .record({
    route: fc.oneof(
      { weight: 6, arbitrary: fc.constantFrom(...routes) },
      {
        weight: 2,
        arbitrary: fc.tuple(fc.constantFrom("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"), pathArb)
      }
    ),
    query,
    body,
    contentType: fc.option(fc.oneof(fc.constantFrom("application/json", "application/json; charset=utf-8", "text/plain", "multipart/form-data", ""), headerValue), { nil: undefined }),
    idempotencyKey: fc.option(headerValue, { nil: undefined }),
    extra: fc.dictionary(headerName, headerValue, { maxKeys: 2 }),
    principal: fc.constantFrom<FuzzRequest["principal"]>("none", "garbage", "read-only", "operator", "admin", "admin")
  })
  .map(({ route: [method, p], query: q, body: b, contentType, idempotencyKey, extra, principal }) => {
    const headers: Record<string, string> = { ...extra }
    delete headers.authorization
    delete headers["content-length"]
    delete headers["transfer-encoding"]
    delete headers.connection
    delete headers.host
    delete headers.expect
    delete headers.upgrade
    if (contentType !== undefined) headers["content-type"] = contentType
    if (idempotencyKey !== undefined) headers["idempotency-key"] = idempotencyKey
    return { method, path: `${p}${q}`, headers, body: method === "GET" || method === "HEAD" ? undefined : b, principal }
  })
  // A random join adds a learner that never catches up, and leave removes the only member: both
  // are what an admin asked for, not bugs, so the fuzzer does not send them as admin.
  .filter((r) => !(r.principal === "admin" && /^\/v1\/cluster\/members/.test(r.path)))

interface Answer {
  readonly status: number
  readonly body: string
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
const tlsAgent = new https.Agent({ keepAlive: true, maxSockets: 1 })

/** Where requests go: a node's port, over HTTPS verified against `ca` when it serves TLS. */
export interface Endpoint {
  readonly port: number
  readonly ca?: string | undefined
}

const send = (to: Endpoint, method: string, pathname: string, headers: Record<string, string>, body?: string): Promise<Answer> =>
  new Promise((resolve, reject) => {
    let request: http.ClientRequest
    try {
      // Node's client frames a GET, DELETE or OPTIONS body only when told its length: unframed, the
      // body would reach the server as the start of the next request.
      const framed = body === undefined ? headers : { ...headers, "content-length": String(Buffer.byteLength(body)) }
      const options = { host: "127.0.0.1", port: to.port, method, path: pathname, headers: framed }
      const answered = (response: http.IncomingMessage) => {
        const chunks: Array<Buffer> = []
        response.on("data", (chunk: Buffer) => chunks.push(chunk))
        response.on("end", () => resolve({ status: response.statusCode ?? 0, body: Buffer.concat(chunks).toString() }))
        response.on("error", reject)
      }
      // The node's certificate names its node URI and 127.0.0.1; the chain to the cluster CA is what counts here.
      request =
        to.ca === undefined
          ? http.request({ ...options, agent }, answered)
          : https.request({ ...options, agent: tlsAgent, ca: to.ca, checkServerIdentity: () => undefined }, answered)
    } catch (error) {
      return reject(error)
    }
    request.on("error", reject)
    request.setTimeout(15_000, () => request.destroy(new Error("timeout")))
    request.end(body)
  })

// Declared only (`start: false`): the runner does not exist.
const seedSpec = JSON.stringify({
  spec: { name: "seed", source: { _tag: "Runner", path: "/nix/store/fuzz-seed" }, vcpus: 1, memoryMiB: 16, labels: {}, constraints: [], restartPolicy: "never" },
  start: false
})

/** The VM `seed` exists (the requests about it would otherwise all be 404 once a fuzzed delete got through). */
const ensureSeed = async (to: Endpoint, admin: string): Promise<void> => {
  const auth = { authorization: `Bearer ${admin}`, "content-type": "application/json" }
  if ((await send(to, "GET", "/v1/vms/seed?stale=true", auth)).status === 200) return
  const created = await send(to, "POST", "/v1/vms", auth, seedSpec)
  if (created.status !== 201) throw new Error(`fuzz: creating the seed VM answered ${created.status}: ${created.body}`)
}

export interface FuzzNode extends Endpoint {
  /** With TLS: the cluster CA, its key (the fuzzers make peers' certificates with it) and the cluster id. */
  readonly tls?: { readonly ca: string; readonly caKey: string; readonly clusterId: string } | undefined
  /** The cluster secret the node was started with (the peer fuzzer authenticates with it). */
  readonly clusterSecret: string
  readonly tokens: Record<FuzzRequest["principal"], string | undefined>
  readonly alive: () => boolean
  readonly stop: () => Promise<void>
}

/**
 * A one-node cluster in a temporary directory, with a VM `seed` and a read-only and an operator token.
 * In plain mode (the default) what is fuzzed is what a node parses once a connection is through TLS
 * (the API's requests, the peer endpoint's handshake and frames); with `tls` the node serves TLS as
 * a node does by default, and the fuzzers speak it (bench/tlsFuzz.ts fuzzes TLS itself).
 */
export const startFuzzNode = async (bin = defaultBin, options: { readonly tls?: boolean } = {}): Promise<FuzzNode> => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "blixard-fuzz-"))
  const port = await freePort()
  const clusterSecret = "fuzz-cluster-secret"
  fs.writeFileSync(path.join(dir, "cluster-secret"), `${clusterSecret}\n`, { mode: 0o600 })
  const child: ChildProcess = spawn(
    process.execPath,
    [bin, "node", "--id", "1", "--bind", `127.0.0.1:${port}`, ...(options.tls === true ? [] : ["--insecure-plaintext"]), "--data-dir", path.join(dir, "n1"), "--microvm-state-dir", path.join(dir, "vms"), "--cluster-secret-file", path.join(dir, "cluster-secret"), "--log-level", "error"],
    { stdio: "ignore" }
  )
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once("exit", resolve))
      child.kill("SIGKILL")
      await exited
    }
    fs.rmSync(dir, { recursive: true, force: true, maxRetries: 5 })
  }
  try {
    const end = Date.now() + 60_000
    let admin: string | undefined
    let endpoint: Endpoint = { port }
    let tls: FuzzNode["tls"]
    while (admin === undefined) {
      if (Date.now() > end) throw new Error("fuzz: the node did not start within 60 s")
      try {
        if (options.tls === true && tls === undefined) {
          const ca = fs.readFileSync(path.join(dir, "n1", "tls", "ca.crt"), "utf8")
          const caKey = fs.readFileSync(path.join(dir, "n1", "tls", "ca.key"), "utf8")
          tls = { ca, caKey, clusterId: clusterOfCa(ca)! }
          endpoint = { port, ca }
        }
        const token = fs.readFileSync(path.join(dir, "n1", "api-token"), "utf8").trim()
        if ((await send(endpoint, "GET", "/v1/cluster", { authorization: `Bearer ${token}` })).status === 200) admin = token
      } catch {
        await new Promise((resolve) => setTimeout(resolve, 100))
      }
    }
    const auth = { authorization: `Bearer ${admin}`, "content-type": "application/json" }
    // The node registers itself (and so gets the VMs placed) on its own, shortly after it serves:
    // wait for it, or that change would be blamed on whichever refused request came first.
    for (;;) {
      if (Date.now() > end) throw new Error("fuzz: the node did not register itself within 60 s")
      const nodes = await send(endpoint, "GET", "/v1/nodes?stale=true", auth).catch(() => undefined)
      if (nodes?.status === 200 && (JSON.parse(nodes.body) as Array<{ id: number }>).some((n) => n.id === 1)) break
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    await ensureSeed(endpoint, admin)
    const token = async (role: string) => {
      const answer = await send(endpoint, "POST", "/v1/tokens", auth, JSON.stringify({ role }))
      if (answer.status !== 201) throw new Error(`fuzz: creating a ${role} token answered ${answer.status}: ${answer.body}`)
      return (JSON.parse(answer.body) as { token: string }).token
    }
    const tokens = { none: undefined, garbage: "blxt_0123456789abcdef_AAAA", "read-only": await token("read-only"), operator: await token("operator"), admin }
    return { ...endpoint, tls, clusterSecret, tokens, alive: () => child.exitCode === null && child.signalCode === null, stop }
  } catch (error) {
    await stop()
    throw error
  }
}

/** A read of the fuzzer's own; a kept-alive connection the server has just closed is retried. */
const read = async (to: Endpoint, pathname: string, headers: Record<string, string>): Promise<Answer> => {
  for (let attempt = 1; ; attempt++) {
    try {
      const answer = await send(to, "GET", pathname, headers)
      if (answer.status === 200) return answer
      throw new Error(`GET ${pathname} answered ${answer.status}: ${answer.body}`)
    } catch (error) {
      if (attempt >= 3) throw error
    }
  }
}

/** What a refused request must not change (see the module comment), and whether a VM is moving. */
const readState = async (node: FuzzNode): Promise<{ readonly state: string; readonly moving: boolean }> => {
  const headers = { authorization: `Bearer ${node.tokens.admin}` }
  const [vms, nodes, tokens, joinTokens] = await Promise.all(
    ["/v1/vms?stale=true", "/v1/nodes?stale=true", "/v1/tokens?stale=true", "/v1/cluster/tokens?stale=true"].map((p) => read(node, p, headers))
  )
  const records = JSON.parse(vms!.body) as Array<{ spec: unknown; desired: string; node?: number; moving?: number }>
  const vmState = records.map((vm) => [vm.spec, vm.desired, vm.node])
  const nodeState = (JSON.parse(nodes!.body) as Array<{ id: number; state: string }>).map((n) => [n.id, n.state])
  return {
    state: JSON.stringify([vmState, nodeState, JSON.parse(tokens!.body), JSON.parse(joinTokens!.body)]),
    moving: records.some((vm) => vm.moving !== undefined)
  }
}

const stateOf = async (node: FuzzNode): Promise<string> => (await readState(node)).state

/**
 * The state once no VM is moving (or after 15 s). An accepted drain or resize moves a VM in two
 * phases: its node's agent stops and releases it after the answer, and only then is it placed
 * elsewhere; a refused request that follows must not be blamed for that.
 */
const settledStateOf = async (node: FuzzNode): Promise<string> => {
  const deadline = performance.now() + 15_000
  for (;;) {
    const { state, moving } = await readState(node)
    if (!moving || performance.now() > deadline) return state
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/** Sends `runs` generated requests to `node`, one at a time, checking each answer and the state. */
export const fuzzApi = async (node: FuzzNode, runs: number, seed: number): Promise<FuzzResult> => {
  const byStatus: Record<string, number> = {}
  const failures: Array<string> = []
  let serverErrors = 0
  let refusedThatChangedState = 0
  let connectionErrors = 0
  let inputs = 0
  let before = await stateOf(node)
  const started = performance.now()
  const chunk = 500
  const recent: Array<string> = []
  for (let offset = 0; offset < runs && node.alive(); offset += chunk) {
    for (const request of fc.sample(requestArb, { numRuns: Math.min(chunk, runs - offset), seed: seed + offset })) {
      inputs++
      const token = node.tokens[request.principal]
      const headers = { ...request.headers, ...(token !== undefined ? { authorization: `Bearer ${token}` } : {}) }
      let answer: Answer
      try {
        answer = await send(node, request.method, request.path, headers, request.body)
      } catch {
        connectionErrors++
        if (!node.alive()) failures.push(`the node died on: ${JSON.stringify(request)}`)
        continue
      }
      byStatus[answer.status] = (byStatus[answer.status] ?? 0) + 1
      if (answer.status >= 500) {
        serverErrors++
        if (failures.length < 10) failures.push(`${answer.status} ${answer.body.slice(0, 200)} for ${JSON.stringify(request)}`)
      }
      if (answer.status < 400) await ensureSeed(node, node.tokens.admin!)
      const after = answer.status < 400 ? await settledStateOf(node) : await stateOf(node)
      // A refused request's `before` is the state after the previous one (and its seed re-created).
      if (answer.status >= 400 && after !== before) {
        refusedThatChangedState++
        if (failures.length < 10) {
          failures.push(`refused with ${answer.status} ${answer.body.slice(0, 300)} but changed the state: ${JSON.stringify(request)} (the requests before, oldest first: ${recent.join(" | ")}; state before: ${before}; after: ${after})`)
        }
      }
      before = after
      recent.push(`${answer.status} ${answer.body.slice(0, 300)} for ${JSON.stringify(request)}`)
      if (recent.length > 5) recent.shift()
    }
  }
  const seconds = (performance.now() - started) / 1000
  const alive = node.alive() && (await send(node, "GET", "/v1/health", {}).then((a) => a.status === 200, () => false))
  return {
    name: `API fuzz: generated requests against one real node on loopback${node.ca !== undefined ? ", over HTTPS" : ""}`,
    seed,
    inputs,
    byStatus,
    serverErrors,
    refusedThatChangedState,
    connectionErrors,
    nodeAlive: alive,
    seconds: Math.round(seconds * 10) / 10,
    inputsPerSecond: Math.round(inputs / seconds),
    failures
  }
}

/** The fuzz node's peer endpoint, for `fuzzPeers` and `fuzzTls` (with TLS: certificates of its CA for the fuzzers' senders). */
export const peerTarget = async (node: FuzzNode): Promise<PeerTarget> => {
  const auth = { authorization: `Bearer ${node.tokens.admin}`, "content-type": "application/json" }
  return {
    host: "127.0.0.1",
    port: node.port,
    self: 1,
    clusterSecret: node.clusterSecret,
    // What the daemon binds into its peers' handshakes: the cluster id with TLS, none in plain mode
    // (see PeerTransport's options).
    clusterId: node.tls?.clusterId ?? "",
    ...(node.tls === undefined ? {} : { tls: { ca: node.tls.ca, certificates: await senderCertificates(node.tls) } }),
    alive: node.alive,
    state: async () => {
      const status = JSON.parse((await read(node, "/v1/cluster", auth)).body) as {
        clusterId?: string
        term: number
        commit: number
        leader?: number
        members: ReadonlyArray<{ id: number; address: string; role: string }>
      }
      const members = JSON.stringify(status.members.map((m) => [m.id, m.address, m.role]))
      return { clusterId: status.clusterId, term: status.term, commit: status.commit, leader: status.leader, members }
    },
    write: async (name) => {
      const body = JSON.parse(seedSpec) as { spec: Record<string, unknown> }
      const created = await send(node, "POST", "/v1/vms", auth, JSON.stringify({ ...body, spec: { ...body.spec, name } })).catch(
        (error: unknown) => ({ status: 0, body: String(error) })
      )
      return created.status === 201 ? true : `${created.status} ${created.body.slice(0, 300)}`
    }
  }
}

/** Budgets of the fuzzers: `api` and `peer` run against a plain node and again against a TLS node; `tls` fuzzes TLS itself. */
export interface FuzzBudget {
  readonly api: number
  readonly peer: number
  readonly tls: number
  /** Only the runs against TLS nodes. */
  readonly tlsOnly?: boolean
}

export const benchFuzz = async (budget: FuzzBudget, seed = 1): Promise<ReadonlyArray<FuzzResult | PeerFuzzResult | TlsFuzzResult>> => {
  const results: Array<FuzzResult | PeerFuzzResult | TlsFuzzResult> = []
  const fuzzers: Array<readonly [boolean, number, (node: FuzzNode) => Promise<FuzzResult | PeerFuzzResult | TlsFuzzResult>]> = [
    [false, budget.api, (node) => fuzzApi(node, budget.api, seed)],
    [false, budget.peer, async (node) => fuzzPeers(await peerTarget(node), budget.peer, seed)],
    [true, budget.tls, async (node) => fuzzTls(await peerTarget(node), await badCertificates(node.tls!.clusterId), budget.tls, seed)],
    [true, budget.api, (node) => fuzzApi(node, budget.api, seed)],
    [true, budget.peer, async (node) => fuzzPeers(await peerTarget(node), budget.peer, seed)]
  ]
  for (const [tls, runs, fuzz] of fuzzers) {
    if (runs === 0 || (budget.tlsOnly === true && !tls)) continue
    // A fresh node each: what one fuzzer left behind does not feed the other.
    const node = await startFuzzNode(defaultBin, { tls })
    try {
      results.push(await fuzz(node))
    } finally {
      await node.stop()
    }
  }
  return results
}
