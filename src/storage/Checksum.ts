/**
 * Checksums over what Raft stores. SQLite protects its own page structure, but not the meaning of a
 * row: a flipped bit inside an entry's payload is a valid page holding wrong data. Every entry, the
 * hard state and the snapshot carry a CRC-32 of their fields, checked on every read.
 */
import { crc32 } from "node:zlib"
import type { Entry, HardState, SnapshotMetadata } from "../raft/Types.js"

const fieldSeparator = "\u0000"

export const entryChecksum = (entry: Entry): number =>
  crc32(entry.data, crc32(`${entry.index}${fieldSeparator}${entry.term}${fieldSeparator}${entry.kind}${fieldSeparator}`))

export const hardStateChecksum = (hs: HardState): number =>
  crc32(`hs${fieldSeparator}${hs.term}${fieldSeparator}${hs.vote}${fieldSeparator}${hs.commit}`)

/** The snapshot's checksum before its data: `crc32(data, snapshotHeaderChecksum(m))` is `snapshotChecksum`. */
export const snapshotHeaderChecksum = (metadata: SnapshotMetadata): number =>
  crc32(
    `snap${fieldSeparator}${metadata.index}${fieldSeparator}${metadata.term}${fieldSeparator}${JSON.stringify(metadata.confState)}${fieldSeparator}`
  )

export const snapshotChecksum = (metadata: SnapshotMetadata, data: string): number => crc32(data, snapshotHeaderChecksum(metadata))
