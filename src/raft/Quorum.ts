/**
 * Majority arithmetic over a set of voters. Blixard changes membership one server at a time, so a
 * configuration is a single majority set (never the joint configurations of etcd's `quorum` package).
 */

/** The number of votes that form a majority of `n` voters. */
export const majority = (n: number): number => Math.floor(n / 2) + 1

/**
 * The largest index that a majority of `voters` have acknowledged, given each voter's acknowledged
 * index (`acked(id)`, 0 when unknown). With no voters, returns `Infinity`-free 0 ("nothing can commit").
 */
export const committedIndex = (voters: ReadonlyArray<number>, acked: (id: number) => number): number => {
  const n = voters.length
  if (n === 0) return 0
  const xs = new Array<number>(n)
  for (let i = 0; i < n; i++) xs[i] = acked(voters[i]!)
  xs.sort((a, b) => b - a)
  // Descending: the majority(n)-th largest value is held by at least a majority.
  return xs[majority(n) - 1]!
}

export type VoteResult = "won" | "lost" | "pending"

/**
 * Tally of an election (or a ReadIndex confirmation round): `votes` maps voter id to its answer;
 * ids not in `voters` are ignored. Won once a majority granted, lost once a majority is out of reach.
 */
export const voteResult = (voters: ReadonlyArray<number>, votes: ReadonlyMap<number, boolean>): VoteResult => {
  const n = voters.length
  if (n === 0) return "won" // like etcd: an empty configuration wins every vote (never happens in Blixard)
  let granted = 0
  let missing = 0
  for (const id of voters) {
    const v = votes.get(id)
    if (v === undefined) missing++
    else if (v) granted++
  }
  const q = majority(n)
  if (granted >= q) return "won"
  if (granted + missing >= q) return "pending"
  return "lost"
}
