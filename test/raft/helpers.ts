/** Helpers for tests that drive a single `Raft` core directly, message by message. */
import { MemoryStorage } from "../../src/raft/MemoryStorage.js"
import type { Message } from "../../src/raft/Message.js"
import { Raft } from "../../src/raft/Raft.js"
import { RawNode } from "../../src/raft/RawNode.js"
import type { Entry, HardState, Snapshot } from "../../src/raft/Types.js"
import type { NodeOptions } from "./network.js"
import { plain, seededRandom } from "./network.js"

/** Entries with the given terms at indexes 1, 2, … */
export const entriesWithTerms = (terms: ReadonlyArray<number>, from = 1): Array<Entry> =>
  terms.map((term, i) => ({ index: from + i, term, kind: "normal", data: `e${from + i}t${term}` }))

export const newRaft = (
  id: number,
  voters: ReadonlyArray<number>,
  options: NodeOptions = {},
  log: ReadonlyArray<Entry> = [],
  hardState?: HardState
): Raft =>
  new Raft({
    ...plain,
    ...options,
    id,
    storage: MemoryStorage.withLog(voters, log, hardState),
    random: seededRandom(id)
  })

/** Flush pending broadcasts and take the messages the core wants to send. */
export const readMessages = (r: Raft): Array<Message> => {
  r.flush()
  const out = r.msgs
  r.msgs = []
  return out
}

/**
 * Make what `r` holds durable, as a driver does between `ready()` and `advance()`: its unstable
 * entries and hard state go to its `MemoryStorage`, then the messages that vouch for them to itself
 * (its own appends, a sole voter's own vote) are stepped.
 */
export const persist = (r: Raft): void => {
  const st = r.log.storage as MemoryStorage
  const ents = r.log.unstableEntries().slice()
  st.append(ents)
  st.setHardState(r.hardState())
  const last = ents[ents.length - 1]
  if (last !== undefined) r.log.stableTo(last.index, last.term)
  const steps = r.msgsAfterAppend
  r.msgsAfterAppend = []
  for (const m of steps) r.step(m)
}

/**
 * Make `r` (a fresh core) the leader of `term` by a won election, discarding its messages; its
 * initial empty entry is made durable.
 */
export const makeLeader = (r: Raft): void => {
  r.campaign()
  persist(r)
  for (const m of readMessages(r)) {
    if (m.type === "vote") r.step({ type: "voteResp", term: m.term, from: m.to, to: r.id, reject: false })
  }
  readMessages(r)
  if (r.role !== "leader") throw new Error("makeLeader: not leader")
  persist(r)
}

/**
 * Node 1 of voters [1, 2], over `storage` holding entries 1–3 (term 1) compacted behind `snapshot`
 * (index 3), elected leader of term 2; node 2 then rejects its first append, so the Ready it has
 * sends node 2 the snapshot in chunks of `maxSizePerMsg`.
 */
export const leaderSendingSnapshot = (storage: MemoryStorage, snapshot: Snapshot, maxSizePerMsg: number): RawNode => {
  storage.append(entriesWithTerms([1, 1, 1]))
  storage.setHardState({ term: 1, vote: 1, commit: 3 })
  storage.createSnapshot(snapshot)
  storage.compact(3)
  const node = new RawNode({ ...plain, id: 1, storage, random: seededRandom(1), applied: 3, maxSizePerMsg, maxSnapshotChunksInflight: 4 })
  node.campaign()
  node.advance(node.ready())
  node.step({ type: "voteResp", term: 2, from: 2, to: 1, reject: false })
  node.advance(node.ready())
  if (node.role !== "leader") throw new Error("test setup: node 1 did not become leader")
  node.step({ type: "appResp", term: 2, from: 2, to: 1, index: 3, reject: true, rejectHint: 0, logTerm: 0 })
  return node
}
