/**
 * Paging and filtering `GET /v1/vms` and `GET /v1/nodes` on the server, so a client of a cluster of
 * 20,000 VMs reads the page it shows, not the whole state.
 *
 * Order is stable: VMs by name, nodes by id. A page is `limit` records after the cursor `after` (the
 * last name, or id, of the page before): keyset paging, so a VM created or deleted meanwhile never
 * shifts another one onto the next page or off it. Filters: the hosting node, the phase, and label
 * selectors (`key=value`, `key!=value`; all must hold). Without `limit` the answer is every match.
 */
import { Either, ParseResult, Schema } from "effect"
import { LabelKey, LabelValue, type Labels } from "./Labels.js"
import { NodeId } from "./NodeId.js"
import { type NodeInfo, NodeHealth, Schedulability } from "./NodeInfo.js"
import { VmName } from "./VmName.js"
import { Constraint, parseConstraint } from "./VmSpec.js"
import { VmPhase, type VmRecord } from "./VmStatus.js"

/** The most records one page may hold. */
export const MaxPageSize = 10_000

/** A label selector: `key=value` (must equal) or `key!=value` (must not); a node's or VM's labels. */
export const LabelSelector = Schema.transformOrFail(Schema.String, Schema.typeSchema(Constraint), {
  strict: true,
  decode: (text, _, ast) => {
    const parsed = parseConstraint(text)
    const key = parsed === undefined ? undefined : Schema.decodeUnknownEither(LabelKey)(parsed.key)
    const value = parsed === undefined ? undefined : Schema.decodeUnknownEither(LabelValue)(parsed.value)
    if (parsed === undefined || key === undefined || value === undefined || Either.isLeft(key) || Either.isLeft(value)) {
      return ParseResult.fail(
        new ParseResult.Type(ast, text, `a label selector is KEY=VALUE or KEY!=VALUE of a valid label, e.g. tier=web, not ${JSON.stringify(text)}`)
      )
    }
    return ParseResult.succeed(new Constraint({ key: key.right, op: parsed.op, value: value.right }))
  },
  encode: (c) => ParseResult.succeed(`${c.key}${c.op === "eq" ? "=" : "!="}${c.value}`)
})

const Limit = Schema.NumberFromString.pipe(
  Schema.compose(Schema.Int.pipe(Schema.between(1, MaxPageSize, { message: () => `limit is a whole number from 1 to ${MaxPageSize}` })))
)
const IdFromString = Schema.NumberFromString.pipe(Schema.compose(NodeId))
const Stale = Schema.optionalWith(Schema.BooleanFromString, { exact: true })
const Selectors = Schema.optionalWith(Schema.Array(LabelSelector), { exact: true })

/** `GET /v1/vms?limit=&after=&node=&phase=&label=k=v…` (and `stale`). */
export const VmListParams = Schema.Struct({
  stale: Stale,
  limit: Schema.optionalWith(Limit, { exact: true }),
  after: Schema.optionalWith(VmName, { exact: true }),
  node: Schema.optionalWith(IdFromString, { exact: true }),
  phase: Schema.optionalWith(VmPhase, { exact: true }),
  label: Selectors
})

/** `GET /v1/nodes?limit=&after=&state=&health=&label=k=v…` (and `stale`). */
export const NodeListParams = Schema.Struct({
  stale: Stale,
  limit: Schema.optionalWith(Limit, { exact: true }),
  after: Schema.optionalWith(IdFromString, { exact: true }),
  state: Schema.optionalWith(Schedulability, { exact: true }),
  health: Schema.optionalWith(NodeHealth, { exact: true }),
  label: Selectors
})

export type VmQuery = Omit<typeof VmListParams.Type, "stale">
export type NodeQuery = Omit<typeof NodeListParams.Type, "stale">

const matches = (labels: Labels, selectors: ReadonlyArray<Constraint> | undefined): boolean =>
  selectors === undefined || selectors.every((s) => (labels[s.key] === s.value) === (s.op === "eq"))

/** The first index of `sorted` past `after`. */
const start = <K extends string | number>(sorted: ReadonlyArray<K>, after: K | undefined): number => {
  if (after === undefined) return 0
  let lo = 0
  let hi = sorted.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (sorted[mid]! <= after) lo = mid + 1
    else hi = mid
  }
  return lo
}

const page = <K extends string | number, A>(sorted: ReadonlyArray<K>, get: (key: K) => A, after: K | undefined, limit: number | undefined, keep: (a: A) => boolean) => {
  const out: Array<A> = []
  for (let i = start(sorted, after); i < sorted.length && (limit === undefined || out.length < limit); i++) {
    const record = get(sorted[i]!)
    if (keep(record)) out.push(record)
  }
  return out
}

/** The page of `vms` (by name) that `query` asks for. */
export const selectVms = (vms: ReadonlyMap<string, VmRecord>, query: VmQuery = {}): Array<VmRecord> =>
  page([...vms.keys()].sort(), (name) => vms.get(name)!, query.after, query.limit, (vm) =>
    (query.node === undefined || vm.node === query.node) &&
    (query.phase === undefined || vm.status.phase === query.phase) &&
    matches(vm.spec.labels, query.label)
  )

/** The page of `nodes` (by id) that `query` asks for. */
export const selectNodes = (nodes: ReadonlyMap<number, NodeInfo>, query: NodeQuery = {}): Array<NodeInfo> =>
  page([...nodes.keys()].sort((a, b) => a - b), (id) => nodes.get(id)!, query.after, query.limit, (node) =>
    (query.state === undefined || node.state === query.state) &&
    (query.health === undefined || node.health === query.health) &&
    matches(node.labels, query.label)
  )
