/**
 * The client side of `GET /v1/cluster/snapshot`: the answer's body as a stream of bytes, or the
 * node's error as itself (its `BLX_…` code). The derived client (`Client.ts`) reads JSON answers
 * whole; a snapshot is streamed, so it is fetched here.
 */
import { Duration, Effect, Either, Schema } from "effect"
import { BlixardError, Timeout, Unavailable } from "../domain/Errors.js"
import { baseUrlOf, DefaultTimeout } from "./Client.js"
import * as SnapshotHttp from "./SnapshotHttp.js"

export interface DownloadOptions {
  readonly addr: string
  readonly token?: string | undefined
  /** How long the node may take to confirm the index and begin its answer (default 5 s). */
  readonly timeout?: Duration.DurationInput | undefined
}

const decodeError = Schema.decodeUnknownEither(BlixardError)

/** The snapshot file's bytes as the node sends them (the caller verifies them: `SnapshotFile.read`). */
export const download = (options: DownloadOptions): Effect.Effect<AsyncIterable<Uint8Array>, BlixardError> =>
  Effect.gen(function* () {
    const { addr } = options
    const timeout = options.timeout ?? DefaultTimeout
    const response = yield* Effect.tryPromise({
      try: (signal) =>
        fetch(`${baseUrlOf(addr)}${SnapshotHttp.path}`, {
          headers: options.token === undefined ? {} : { authorization: `Bearer ${options.token}` },
          signal
        }),
      catch: () => new Unavailable({ subject: addr, message: `no Blixard node answers at ${addr}; is it running? (--addr / BLIXARD_ADDR)` })
    }).pipe(
      Effect.timeoutFail({
        duration: timeout,
        onTimeout: () => new Timeout({ subject: addr, message: `the node at ${addr} did not begin the snapshot within ${Duration.format(timeout)}` })
      })
    )
    if (response.ok && response.body !== null && response.headers.get("content-type") === SnapshotHttp.contentType) {
      return response.body as unknown as AsyncIterable<Uint8Array>
    }
    const body = yield* Effect.promise(() => response.json().catch(() => undefined))
    const error = decodeError(body)
    return yield* Either.isRight(error)
      ? Effect.fail(error.right)
      : Effect.fail(
          new Unavailable({
            subject: addr,
            message: `the node at ${addr} answered HTTP ${response.status} to ${SnapshotHttp.path}, which this client does not understand (is it a Blixard node of the same version?)`
          })
        )
  })
