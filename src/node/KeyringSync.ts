/**
 * How a member that joined with a join token follows the cluster secret's rotation
 * (`ClusterKeyring.ts`). Its keyring is `DATA-DIR/cluster-secret`, which it wrote itself, so no
 * operator edits it: every `SyncMs` it asks the other members in turn (`GET /v1/tls/keyring`, over
 * mutual TLS with its certificate and its node credential, `TlsBootstrap.ts`) and takes the first
 * answer. A keyring that differs from its own is written to the file (through a temporary file) and
 * used at once.
 *
 * Every step of a rotation accepts the steps beside it, so which member answers does not matter as
 * long as the operator waits for `blixard cluster secret status` to show every member (this node
 * included) on a step before the next. The limit: a node that is down for a whole rotation comes
 * back with only the old secret, which no member accepts any more; its credential is refused
 * (`BLX_UNAUTHORIZED`), it says so at each attempt, and the operator copies a member's secret file into
 * its `DATA-DIR/cluster-secret` (no restart needed: the file is followed).
 */
import { Duration, Effect, Schedule } from "effect"
import * as Auth from "../api/Auth.js"
import type { NodeId } from "../domain/NodeId.js"
import type * as Tls from "../net/Tls.js"
import * as ClusterKeyring from "./ClusterKeyring.js"
import * as TlsBootstrap from "./TlsBootstrap.js"

/** How often a node that joined with a join token asks the members for their keyring (ms). */
export const SyncMs = 10_000

export interface SyncOptions {
  readonly node: NodeId
  readonly dataDir: string
  readonly keyring: ClusterKeyring.LiveKeyring
  /** This node's certificate as it is now (renewal, CA rotation). */
  readonly tls: Pick<Tls.NodeTls, "ca" | "cert" | "key" | "clusterId">
  /** The other members' addresses as the replicated state has them now. */
  readonly members: () => ReadonlyArray<string>
  readonly timeoutMs: number
  readonly everyMs?: number | undefined
}

const same = (a: ReadonlyArray<string>, b: ReadonlyArray<string>) => a.length === b.length && a.every((s, i) => s === b[i])

/** One round: the first member that answers, adopted if it differs. True if the keyring changed. */
export const syncOnce = (options: SyncOptions): Effect.Effect<boolean> =>
  Effect.gen(function* () {
    const credential = Auth.nodeCredential(options.keyring.primary, options.node)
    const problems: Array<string> = []
    for (const address of options.members()) {
      const got = yield* Effect.either(TlsBootstrap.fetchKeyring(address, { tls: options.tls, credential, timeoutMs: options.timeoutMs }))
      if (got._tag === "Left") {
        problems.push(got.left.message)
        continue
      }
      if (same(got.right, options.keyring.secrets)) return false
      const before = options.keyring.fingerprints()
      yield* ClusterKeyring.writeReceived(options.dataDir, got.right, options.node)
      options.keyring.set(got.right)
      const after = options.keyring.fingerprints()
      yield* Effect.logInfo(
        `node ${options.node}: took the cluster secret keyring of the member at ${address}: now uses ${after.uses} and accepts ${after.accepts.join(", ")} (before: uses ${before.uses}, accepts ${before.accepts.join(", ")})`
      )
      return true
    }
    if (problems.length > 0) {
      yield* Effect.logWarning(
        `node ${options.node}: no member handed out the cluster secret keyring (${problems.join("; ")}); if every member has dropped this node's secret (uses ${options.keyring.fingerprints().uses}), copy a member's cluster secret file into ${options.dataDir}/${ClusterKeyring.receivedFileName}`
      )
    }
    return false
  }).pipe(Effect.catchAll((e) => Effect.as(Effect.logError(`node ${options.node}: ${e.message}`), false)))

/** `syncOnce` every `everyMs`, for as long as the calling scope lasts. */
export const follow = (options: SyncOptions): Effect.Effect<void> =>
  Effect.repeat(syncOnce(options), Schedule.spaced(Duration.millis(options.everyMs ?? SyncMs))).pipe(Effect.asVoid)
