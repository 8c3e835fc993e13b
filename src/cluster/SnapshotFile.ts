/**
 * The cluster snapshot file of `blixard cluster snapshot save|restore`: the replicated state as of
 * one applied index, with what it is (the header) and a checksum over all of it (the trailer).
 *
 * UTF-8 text, three lines:
 *
 * 1. the header, JSON: `{ magic, format, clusterId, index, term, node, createdAt }`;
 * 2. the state: `ClusterState`'s snapshot text (one line of JSON) as of `index`;
 * 3. the trailer, JSON: `{ bytes, sha256 }` of lines 1 and 2 with their newlines.
 *
 * The trailer comes last so a node can stream the file while it serialises the state, a piece at a
 * time, without holding it whole; a file cut short has no valid trailer, so truncation is caught
 * as surely as a flipped bit. `read` checks everything — the header's schema, the checksum, the
 * state's schema and that the state is the one the header names — before anything is written.
 */
import { Either, ParseResult, Schema } from "effect"
import { createHash } from "node:crypto"
import { SnapshotInvalid } from "../domain/Errors.js"
import { NodeId } from "../domain/NodeId.js"
import { ClusterState } from "./ClusterState.js"

export const SnapshotMagic = "blixard-cluster-snapshot"
/** The format this build writes and reads. */
export const SnapshotFormat = 1

export class SnapshotHeader extends Schema.Class<SnapshotHeader>("SnapshotHeader")({
  magic: Schema.Literal(SnapshotMagic),
  format: Schema.Literal(SnapshotFormat),
  /** The cluster the state was taken from. */
  clusterId: Schema.String.pipe(Schema.maxLength(64)),
  /** The applied index the state is as of (confirmed by the leader with a ReadIndex round). */
  index: Schema.Int.pipe(Schema.positive()),
  /** The leader's term when it confirmed the index. */
  term: Schema.Int.pipe(Schema.positive()),
  /** The node that serialised the state. */
  node: NodeId,
  /** When, as an ISO-8601 time. */
  createdAt: Schema.String.pipe(Schema.pattern(/^\d{4}-\d\d-\d\dT[0-9:.]+Z$/))
}) {}

const Trailer = Schema.Struct({
  bytes: Schema.Int.pipe(Schema.nonNegative()),
  sha256: Schema.String.pipe(Schema.pattern(/^[0-9a-f]{64}$/))
})

const decodeHeader = Schema.decodeUnknownEither(Schema.parseJson(SnapshotHeader))
const decodeTrailer = Schema.decodeUnknownEither(Schema.parseJson(Trailer))
const encodeHeader = Schema.encodeSync(SnapshotHeader)

/**
 * The file's text for the state `pieces` (`ClusterState.snapshotView`, joined: its snapshot text),
 * produced as it is iterated: the header, the pieces as they come, then the trailer.
 */
export function* encode(header: SnapshotHeader, pieces: Iterable<string>): Generator<string> {
  const hash = createHash("sha256")
  let bytes = 0
  const counted = (text: string): string => {
    hash.update(text, "utf8")
    bytes += Buffer.byteLength(text, "utf8")
    return text
  }
  yield counted(`${JSON.stringify(encodeHeader(header))}\n`)
  for (const piece of pieces) if (piece !== "") yield counted(piece)
  yield counted("\n")
  yield `${JSON.stringify({ bytes, sha256: hash.digest("hex") })}\n`
}

export interface SnapshotContents {
  readonly header: SnapshotHeader
  /** The state as of `header.index`, decoded through its schema. */
  readonly state: ClusterState
  /** The file's SHA-256 (of the header and the state, as the trailer records it). */
  readonly sha256: string
}

const newline = 0x0a

/**
 * Verifies a snapshot file's bytes and decodes them; `origin` names the file in every message. Fails
 * with `SnapshotInvalid` saying what is wrong: not a snapshot, another format, cut short, a checksum
 * mismatch, or a state that does not decode.
 */
export const read = (bytes: Uint8Array, origin: string): Either.Either<SnapshotContents, SnapshotInvalid> => {
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const invalid = (problem: string) =>
    Either.left(new SnapshotInvalid({ subject: origin, message: `${origin}: ${problem}; nothing was written` }))
  const damaged = (problem: string) =>
    invalid(`${problem}: the file is truncated or damaged (an interrupted copy?); use another copy of the snapshot, or save a new one`)

  const headerEnd = buffer.indexOf(newline)
  const headerText = buffer.subarray(0, headerEnd === -1 ? Math.min(buffer.length, 4096) : headerEnd).toString("utf8")
  let headerJson: unknown
  try {
    headerJson = JSON.parse(headerText)
  } catch {
    headerJson = undefined
  }
  if (typeof headerJson !== "object" || headerJson === null || (headerJson as { magic?: unknown }).magic !== SnapshotMagic) {
    return headerEnd === -1 && buffer.toString("utf8", 0, Math.min(buffer.length, 64)).includes(SnapshotMagic)
      ? damaged("its header is cut short")
      : invalid(`not a Blixard cluster snapshot (made by \`blixard cluster snapshot save\`)`)
  }
  const format = (headerJson as { format?: unknown }).format
  if (format !== SnapshotFormat) {
    return invalid(`the snapshot has format ${JSON.stringify(format)}; this blixard reads format ${SnapshotFormat} (use the blixard version that saved it)`)
  }
  const header = decodeHeader(headerText)
  if (Either.isLeft(header)) return damaged(`its header does not match the schema (${ParseResult.TreeFormatter.formatErrorSync(header.left)})`)

  if (buffer.length === 0 || buffer[buffer.length - 1] !== newline) return damaged("it does not end with its checksum line")
  const trailerStart = buffer.lastIndexOf(newline, buffer.length - 2) + 1
  if (trailerStart <= headerEnd + 1) return damaged("its checksum line is missing")
  const trailer = decodeTrailer(buffer.subarray(trailerStart, buffer.length - 1).toString("utf8"))
  if (Either.isLeft(trailer)) return damaged("its checksum line is missing or unreadable")
  if (trailer.right.bytes !== trailerStart) {
    return damaged(`it holds ${trailerStart} bytes before its checksum line, not the ${trailer.right.bytes} it records`)
  }
  const sha256 = createHash("sha256").update(buffer.subarray(0, trailerStart)).digest("hex")
  if (sha256 !== trailer.right.sha256) return damaged(`its SHA-256 is ${sha256}, not the ${trailer.right.sha256} it records`)

  let state: ClusterState
  try {
    state = ClusterState.restore(buffer.toString("utf8", headerEnd + 1, trailerStart - 1))
  } catch (error) {
    const detail = ParseResult.isParseError(error) ? ParseResult.TreeFormatter.formatErrorSync(error) : String(error)
    return invalid(`its checksum holds, but the state in it does not match this blixard's schema: ${detail}`)
  }
  if (state.appliedIndex !== header.right.index || state.clusterId !== header.right.clusterId) {
    return invalid(
      `its header names cluster ${header.right.clusterId} at index ${header.right.index}, but the state in it is cluster ${state.clusterId} at index ${state.appliedIndex}`
    )
  }
  return Either.right({ header: header.right, state, sha256 })
}
