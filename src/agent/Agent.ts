/**
 * The per-node agent: makes this node's hypervisor runners match the desired state of the VMs the
 * replicated state places on this node, applies each VM's restart policy, reports what it observes,
 * and fences itself when it loses the quorum.
 *
 * Three fibers, all timed by the `Clock` (so `TestClock` or the simulator's clock drives them):
 * the reconcile loop (every `intervalMs`, earlier when the backend reports an exit), the fencing
 * watchdog (wakes exactly at the fencing deadline, never waits for a reconcile round, which may sit
 * in a long nix build) and the reporter. Per VM placed here, the reconcile round does:
 * - desired `running`, no runner: `prepare` then `start`; reports `starting`, then `running` (pid,
 *   since). A `BackendFailed` is reported (`starting` with `lastError`) and retried with backoff.
 * - desired `stopped`, a runner: `stop`; reports `stopped`.
 * - an unexpected exit (a `subscribe` event, or a runner found gone): the restart policy decides.
 *   `always` restarts; `on-failure` restarts on a non-zero or unknown exit code or a signal;
 *   `never` (or `on-failure` after exit 0) reports `failed` with the exit code and the reason; the
 *   VM then stays down while its replicated status is `failed` — a start (or a new placement)
 *   clears that status and it is started again.
 *   Restarts wait an exponential backoff (`backoff.initialMs` doubling up to `backoff.maxMs`; reset
 *   once a runner has stayed up `backoff.maxMs`) and are counted in `restarts`.
 * A runner for a VM that is deleted or placed on another node (an orphan) is stopped and removed
 * (state directory deleted); nothing is reported for it. Only Blixard's own VMs are ever seen: the
 * backend lists only the directories it marked, never microvm.nix's own VMs beside them. Removing
 * and starting act on the state's word, so a round that would do either first runs `confirmFresh` (the daemon passes
 * `raft.readIndex`) and re-reads the state: a restarted daemon that has not re-applied its log yet
 * does not take its own VMs for orphans, and a node back from a partition does not start a VM the
 * majority has moved elsewhere. If it fails, nothing is removed or started this round.
 *
 * Start-up (a daemon restart): `subscribe` first, then `list`; a runner still `Running` is ADOPTED
 * (its pid and start time reported; never started a second time); runners of VMs not placed here
 * are stopped by the first round.
 *
 * FENCING. `quorumContact` answers when this node was last in contact with a quorum (see
 * `QuorumContact.ts`: a leader measures its majority's last responses of its term that its Raft loop
 * processed; any other node counts the send time of its newest ReadIndex round that succeeded, which
 * proves the leader heard it afterwards and had a quorum; a storage write still outstanding caps
 * either). When `now - contact > fencingMs` (or, after start-up, no contact for `fencingMs`) the
 * watchdog stops every runner on this node (orphans too), with `fenceStopTimeoutMs`, and repeats
 * every interval while fenced; the reconcile round does nothing, and starts nothing, until contact
 * is back. `start` re-checks contact after the build, under a lock the watchdog also takes, so a
 * runner is never launched after the watchdog decided to fence. After start-up it starts nothing before the first contact, and adopted
 * runners are fenced if no contact comes within `fencingMs`.
 *
 * A DAEMON THAT DIES (kill -9, a crash, out of memory) or hangs cannot run this watchdog fiber, while
 * its runners live on. That case is covered outside the daemon, by `hostFence` (`node/HostFence.ts`):
 * each time `assess` measures contact, the agent renews the node's LEASE (`NodeLease.ts`) with the
 * very deadline this fiber fences at, `contact + fencingMs`, and never extends it without contact.
 * The node's fencing watchdog (`Watchdog.ts`), a separate process that outlives the daemon, stops
 * every runner of the node once that deadline has passed with no renewal, through the same
 * `VmBackend` stop, and keeps watching: a restarted daemon that proves contact before the deadline
 * renews the lease and adopts the runners (nothing stopped, nothing started twice); one that is not
 * back in time finds them stopped. With a `hostFence`, this fiber wakes at least every fencingMs / 4
 * (so the lease is renewed well before it runs out), and `start` also requires the watchdog to be
 * running and not in a fence round (`startBlocked`, read after the renewal: see `Watchdog.ts`).
 *
 * The lease write never holds up fencing. It goes to the data directory's disk, which may stall
 * while the daemon still has contact; were the fencing fiber to wait for it, contact lost meanwhile
 * would be fenced only by the watchdog process (later, and it may be the stuck one). So `assess`
 * only ASKS for the renewal; a fiber of its own writes the newest deadline asked, one write at a
 * time (one outstanding at most; a deadline asked meanwhile is written next), and fencing fires at
 * contact + fencingMs whatever the write does. A write outstanding for longer than fencingMs / 4 is
 * logged once, with the node, the data directory and what to do. `start` alone waits for the write:
 * under the start lock it measures contact, waits until the lease renewal of THAT contact has
 * finished, and only then reads `startBlocked` (the write-then-read order `Watchdog.ts` relies on).
 * It waits at most until that contact's fencing deadline (the fencing fiber needs the lock then):
 * a write still hung by then starts nothing.
 *
 * Timing argument: a symmetric partition cuts this node off at P. The new leader on the majority side
 * last heard from this node at or before P, so it marks it down (and reschedules its VMs) no earlier
 * than P + nodeDownMs. This node's contact is at most P, so its watchdog wakes at P + fencingMs
 * (+1 ms) and its runners are dead by P + fencingMs + fenceStopTimeoutMs (plus, at worst, one
 * in-flight `start` call it waits for under the lock). The configuration requires nodeDownMs ≥ fencingMs + 2 election
 * timeouts, so `fenceStopTimeoutMs` must stay below two election timeouts (minus the commit and apply
 * time of the reschedule). A daemon that dies at D: its last contact C ≤ D, and the leader last
 * heard from it no earlier than C (a follower's contact is when it sent a heartbeat answer or a
 * ReadIndex the leader then received, `QuorumContact.ts`; a dead leader's successor gives it nodeDownMs of grace from its own election, after D), so the cluster reschedules no earlier than C + nodeDownMs, while the lease it left ends
 * at C + fencingMs: the host watchdog's deadline is this fiber's, and the same margin holds
 * (`stopTimeoutMs` of the watchdog = `fenceStopTimeoutMs`). Both read this host's wall clock, so
 * there is no skew between the lease's writer and its reader. A one-way partition (this node hears
 * the leader, the leader does not hear it) is a partition like any other here: this node's heartbeat
 * answers and ReadIndex probes never reach the leader, so its contact stops at the last one that did — which the leader
 * received, so it marks this node down no earlier than that + nodeDownMs. What is NOT covered: the
 * watchdog dying while the daemon is down or hung too (a live daemon starts it again within a second).
 *
 * Wiring (the daemon): `state: () => holder.current`; `reportMany` proposes
 * `ReportVmStatuses({ node, reports })` and `report` `ReportVmStatus({ name, node, status })`
 * through `ControlPlaneShape` (forwarded to the leader);
 * `quorumContact: yield* QuorumContact.fromRaft(raft, { probeEveryMs: electionTimeoutMs })`;
 * `confirmFresh: raft.readIndex`; `fencingMs` from `timeouts.fencingMs`; `intervalMs` e.g. 1 s (a
 * start or a stop waits up to that, an exit event wakes it at once); `fenceStopTimeoutMs` below two
 * election timeouts; `hostFence: yield* HostFence.make(…)`; the `VmBackend` layer of the node's
 * backend kind. Shutting the agent down (its scope) leaves the runners running and the lease as it
 * is: the next daemon adopts them if it proves contact before the lease ends, else the watchdog
 * stops them.
 *
 * Status reports are best effort and never block reconciling or fencing: a separate fiber sends
 * each VM's statuses in order, many VMs to a request and a log entry (`internal/reportOutbox.ts`;
 * one VM per request while the cluster's log version is below `BatchedStatusReports`); a failed
 * report is logged and retried (only the newest status of each VM) on its next round; a status
 * equal to the last one sent (or to the replicated one) is not sent.
 */
import type { Scope } from "effect"
import { Clock, Duration, Effect, Fiber, Option, Queue, Stream, SubscriptionRef } from "effect"
import { BatchedStatusReports } from "../cluster/ClusterVersion.js"
import { MaxStatusReports, type StatusReport } from "../domain/Command.js"
import { type BlixardError, formatError } from "../domain/Errors.js"
import type { NodeId } from "../domain/NodeId.js"
import type { VmName } from "../domain/VmName.js"
import * as Metrics from "../metrics/Metrics.js"
import type { RestartPolicy } from "../domain/VmSpec.js"
import type { VmPhase, VmRecord } from "../domain/VmStatus.js"
import { BuildProgress, VmStatus } from "../domain/VmStatus.js"
import type { RunnerExit, RunnerObservation, RunnerState } from "../vm/VmBackend.js"
import { VmBackend } from "../vm/VmBackend.js"
import { Wakeup } from "../util/Wakeup.js"
import { ReportOutbox } from "./internal/reportOutbox.js"
import { fencingPaths } from "./internal/fencingFiles.js"

/**
 * The node's fence outside the daemon (`node/HostFence.ts`): the lease the agent renews and the
 * watchdog process that enforces it.
 */
export interface HostFence {
  /** The node's data directory, which holds the lease (named when a lease write hangs). */
  readonly dataDir: string
  /** Records that quorum contact lets this node run VMs until `validUntil` (epoch ms); an earlier one than it has is ignored. */
  readonly renew: (validUntil: number) => Effect.Effect<void>
  /** Why no runner may be started now (no watchdog running, a fence round running), or undefined. */
  readonly startBlocked: Effect.Effect<string | undefined>
}

/** The default grace of a fencing stop before SIGKILL (well below two election timeouts). */
export const DefaultFenceStopTimeoutMs = 500

export interface AgentOptions {
  /** This node. */
  readonly node: NodeId
  /**
   * The current replicated state (e.g. `() => holder.current`); only its VMs are read, so a host
   * that is not a Raft member passes a mirror of the VMs placed on it (`node/HostAgent.ts`).
   */
  readonly state: () => { readonly vms: ReadonlyMap<string, VmRecord>; readonly clusterVersion?: number }
  /** Proposes `ReportVmStatus` for this node (through the leader). May fail; it is retried. */
  readonly report: (name: VmName, status: VmStatus) => Effect.Effect<void, BlixardError>
  /**
   * Proposes `ReportVmStatuses`: several VMs' statuses, one entry. Used unless the state's
   * `clusterVersion` is below `BatchedStatusReports`, or the cluster refused a batch within the
   * last `SinglyForMs` (a member of an older release); absent, every status goes by `report`.
   */
  readonly reportMany?: ((reports: ReadonlyArray<StatusReport>) => Effect.Effect<void, BlixardError>) | undefined
  /** Epoch ms of this node's last contact with a quorum; `undefined` if none since start-up. */
  readonly quorumContact: Effect.Effect<number | undefined>
  /** Run before starting VMs; resolves once the local state is up to date (e.g. `raft.readIndex`). */
  readonly confirmFresh?: Effect.Effect<void, BlixardError> | undefined
  /** Reconcile (and report) at least this often. */
  readonly intervalMs: number
  /** Stop everything after this long without quorum contact. */
  readonly fencingMs: number
  /** Restart / retry backoff: `initialMs` doubling to `maxMs` (defaults 1 s and 60 s). */
  readonly backoff?: { readonly initialMs: number; readonly maxMs: number } | undefined
  /** Grace for a normal stop (default 30 s) and for a fencing stop (default `DefaultFenceStopTimeoutMs`). */
  readonly stopTimeoutMs?: number | undefined
  readonly fenceStopTimeoutMs?: number | undefined
  /** A report taking longer than this counts as failed (default 5 s). */
  readonly reportTimeoutMs?: number | undefined
  /** The lease and the watchdog outside the daemon; absent, fencing works only while the daemon runs. */
  readonly hostFence?: HostFence | undefined
  /** A build's progress (its newest output line) is reported at most this often (default 2 s). */
  readonly progressEveryMs?: number | undefined
}

/** What the agent knows of one runner on this node. */
interface Runner {
  /** The pid believed running (started or adopted); `undefined` when none. */
  pid: number | undefined
  since: number
  restarts: number
  /** Consecutive failed starts / crashes: the backoff exponent. */
  failures: number
  notBefore: number
  lastError: string | undefined
  exitCode: number | undefined
  /** The spec generation the runner was prepared from (see `VmRecord.generation`). */
  generation: number
  /** A build under way, or the last one that failed; reported with every status. */
  build: BuildProgress | undefined
  /** An update to this generation failed to build: not tried again until the spec changes. */
  failedGeneration: number | undefined
  /**
   * Exited and the restart policy said no, and the `failed` status is still on its way to the
   * cluster; once it is out of the outbox, the replicated status decides (see `reconcile`).
   */
  gaveUp: boolean
}

export interface Agent {
  /** Reconcile now (as an exit event would). */
  readonly wake: Effect.Effect<void>
  /** True while this node is fenced (no quorum contact for longer than `fencingMs`). */
  readonly fenced: Effect.Effect<boolean>
}

const MaxError = 4096

/** After the cluster refused a batch of reports, statuses go one per request this long before a batch is tried again. */
export const SinglyForMs = 60_000

/**
 * What this node is to make of a VM placed here: a VM moving off it is to be stopped (and reported
 * `released`) whatever its owner asked for; it will run on its next node.
 */
const wanted = (vm: VmRecord): VmRecord["desired"] => (vm.moving !== undefined ? "stopped" : vm.desired)

/** The longest build output line a status carries. */
const MaxBuildLine = 512

const describeExit = (exit: { readonly exitCode: number | undefined; readonly signal: string | undefined }): string =>
  exit.signal !== undefined
    ? `was killed by ${exit.signal}`
    : exit.exitCode !== undefined
      ? `exited with code ${exit.exitCode}`
      : "exited (exit status unknown)"

const startResult = { ok: Metrics.tags(["result", "ok"]), failed: Metrics.tags(["result", "failed"]) }

/** Whether the policy restarts a runner after this exit. An unknown status counts as a failure. */
export const shouldRestart = (
  policy: RestartPolicy,
  exit: { readonly exitCode: number | undefined; readonly signal: string | undefined }
): boolean => policy === "always" || (policy === "on-failure" && (exit.signal !== undefined || exit.exitCode !== 0))

/** The `attempt`-th backoff (1-based): `initialMs · 2^(attempt-1)`, at most `maxMs`. */
export const backoffMs = (attempt: number, backoff: { readonly initialMs: number; readonly maxMs: number }): number =>
  Math.min(backoff.maxMs, backoff.initialMs * 2 ** Math.max(0, Math.min(attempt - 1, 30)))

/**
 * Starts the agent in the current scope (its fibers end with the scope). The first round runs at
 * once: `subscribe`, `list`, adopt, reconcile.
 */
export const make = (options: AgentOptions): Effect.Effect<Agent, never, VmBackend | Scope.Scope> =>
  Effect.gen(function* () {
    const backend = yield* VmBackend
    const self = options.node
    const backoff = options.backoff ?? { initialMs: 1000, maxMs: 60_000 }
    const stopTimeout: Duration.DurationInput = `${options.stopTimeoutMs ?? 30_000} millis`
    const fenceStopTimeout: Duration.DurationInput = `${options.fenceStopTimeoutMs ?? DefaultFenceStopTimeoutMs} millis`
    const reportTimeout: Duration.DurationInput = `${options.reportTimeoutMs ?? 5000} millis`
    const who = (name: string) => `node ${self}: VM "${name}"`
    const progressEveryMs = options.progressEveryMs ?? 2000

    const runners = new Map<VmName, Runner>()
    /** Exits seen on the subscription, not yet handled. */
    const exits = new Map<VmName, RunnerExit>()
    /** Per VM: statuses waiting to be reported, oldest first; and the last one sent. */
    const outbox = new ReportOutbox()
    /** Until then (epoch ms) statuses go one per request: the cluster refused a batch (a member of an older release). */
    let singlyUntil = 0
    let fenced = false

    const wakeups = new Wakeup()
    const reportWakeups = new Wakeup()
    const startedAt = yield* Clock.currentTimeMillis
    const startLock = yield* Effect.makeSemaphore(1)

    const hostFence = options.hostFence
    /** With a host fence, the watchdog fiber wakes at least this often, to renew the lease in time. */
    const renewEveryMs = hostFence === undefined ? Infinity : Math.max(1, Math.floor(options.fencingMs / 4))

    // ---- the lease renewal ----------------------------------------------------------------------

    /** The newest deadline asked of the lease (`contact + fencingMs`). */
    let leaseAsked = 0
    /** The newest deadline whose renewal has finished (`hostFence.renew` returned). */
    const leaseRenewed = yield* SubscriptionRef.make(0)
    /** The renewal under way, if one is. */
    let renewing: { readonly validUntil: number; readonly since: number; logged: boolean } | undefined
    const renewWakeups = yield* Queue.sliding<void>(1)

    /** Asks for the lease to run until `validUntil`; never waits for the write. */
    const askRenewal = (validUntil: number) =>
      Effect.sync(() => {
        if (hostFence === undefined || validUntil <= leaseAsked) return
        leaseAsked = validUntil
        Queue.unsafeOffer(renewWakeups, undefined)
      })

    /** The renewal fiber: writes the newest deadline asked, one write at a time. */
    const renewer = (fence: HostFence) =>
      Effect.gen(function* () {
        for (;;) {
          yield* Queue.take(renewWakeups)
          for (let done = yield* SubscriptionRef.get(leaseRenewed); leaseAsked > done; done = yield* SubscriptionRef.get(leaseRenewed)) {
            const validUntil = leaseAsked
            renewing = { validUntil, since: yield* Clock.currentTimeMillis, logged: false }
            const ok = yield* fence.renew(validUntil).pipe(
              Effect.as(true),
              Effect.catchAllCause((cause) => Effect.as(Effect.logError(`node ${self}: renewing the lease failed; retrying at the next contact`, cause), false))
            )
            const finished = renewing
            renewing = undefined
            if (finished.logged) {
              const tookMs = (yield* Clock.currentTimeMillis) - finished.since
              yield* Effect.logInfo(`node ${self}: the lease write that hung has finished after ${tookMs} ms`)
            }
            if (!ok) break
            yield* SubscriptionRef.set(leaseRenewed, validUntil)
          }
        }
      })

    /** A lease write outstanding for longer than `renewEveryMs` is logged, once per write. */
    const reportHungRenewal = (now: number) =>
      Effect.suspend(() => {
        const write = renewing
        if (hostFence === undefined || write === undefined || write.logged || now - write.since < renewEveryMs) return Effect.void
        write.logged = true
        const file = fencingPaths(hostFence.dataDir).lease
        return Effect.logError(
          `node ${self}: the lease write to ${file} has not finished for ${now - write.since} ms: the disk under the data directory ${hostFence.dataDir} may be stalled. ` +
            `This node still stops its VMs at its own fencing deadline (fencingMs after its last quorum contact), and starts none until the lease is written; ` +
            `the fencing watchdog process stops them when the lease written last runs out. Check that disk (dmesg, the file system's health); if it stays stalled, stop this daemon and move its data directory to a working disk`
        )
      })

    /**
     * Waits for the renewal of `validUntil` to finish, at most until `validUntil` itself (the
     * fencing deadline of the contact it renews); false if it did not.
     */
    const awaitRenewal = (validUntil: number) =>
      Effect.gen(function* () {
        const now = yield* Clock.currentTimeMillis
        const renewed = yield* leaseRenewed.changes.pipe(
          Stream.filter((done) => done >= validUntil),
          Stream.take(1),
          Stream.runDrain,
          Effect.timeoutOption(Duration.millis(Math.max(0, validUntil - now)))
        )
        return Option.isSome(renewed)
      })

    /**
     * Measures quorum contact now, asks for the lease to be renewed with what it proves (without
     * waiting for the write: fencing must not depend on the disk) and updates `fenced`.
     */
    const assess = Effect.gen(function* () {
      const contact = yield* options.quorumContact
      if (contact !== undefined) yield* askRenewal(contact + options.fencingMs)
      const now = yield* Clock.currentTimeMillis
      yield* reportHungRenewal(now)
      const contactAgo = now - (contact ?? startedAt)
      const wasFenced = fenced
      fenced = contactAgo > options.fencingMs
      if (fenced !== wasFenced) {
        if (fenced) Metrics.agentFencingEvents.unsafeUpdate(1, Metrics.noTags)
        Metrics.agentFenced.unsafeUpdate(fenced ? 1 : 0, Metrics.noTags)
        // Said once per loss, whoever stops the runners: the fencing watchdog, whose lease may lag
        // this deadline by a renewal step (`HostFence.ts`), may have stopped them already.
        yield* fenced
          ? Effect.logError(
              `node ${self}: FENCING — no quorum contact for ${contactAgo} ms (limit ${options.fencingMs} ms); every runner on this node is stopped and nothing starts until quorum contact is back; check this node's network and its data directory's disk`
            )
          : Effect.logWarning(`node ${self}: quorum contact is back after fencing; its VMs run again where the cluster places them`)
      }
      return { now, contact, contactAgo, mayStart: contact !== undefined && !fenced }
    })

    const placedHere = (vm: VmRecord | undefined): vm is VmRecord => vm !== undefined && vm.node === self

    // ---- reports ------------------------------------------------------------------------------

    const enqueue = (name: VmName, record: VmRecord, fields: {
      readonly phase: VmPhase
      readonly since: number
      readonly restarts: number
      readonly pid?: number | undefined
      readonly exitCode?: number | undefined
      readonly lastError?: string | undefined
      readonly released?: number | undefined
    }) => {
      // What is known of the runner's build goes with every status of the VM.
      const runner = runners.get(name)
      const status = new VmStatus({
        phase: fields.phase,
        since: fields.since,
        restarts: fields.restarts,
        ...(fields.pid !== undefined ? { pid: fields.pid } : {}),
        ...(fields.exitCode !== undefined ? { exitCode: fields.exitCode } : {}),
        ...(fields.lastError !== undefined ? { lastError: fields.lastError.slice(0, MaxError) } : {}),
        ...(fields.phase === "running" && runner !== undefined ? { generation: runner.generation } : {}),
        ...(runner?.build !== undefined ? { build: runner.build } : {}),
        ...(fields.released !== undefined ? { released: fields.released } : {})
      })
      if (outbox.add(name, status, record.status)) reportWakeups.signal()
    }

    /** Sends `batch`: as one report (one entry) or, `singly`, one request each until one fails. How many were applied, and why the rest were not. */
    const deliver = (batch: ReadonlyArray<StatusReport>, singly: boolean) =>
      Effect.gen(function* () {
        const timed = (effect: Effect.Effect<void, BlixardError>) =>
          effect.pipe(
            Effect.timeoutFail({ duration: reportTimeout, onTimeout: () => ({ _tag: "Timeout" as const, message: `no answer within ${options.reportTimeoutMs ?? 5000} ms` }) }),
            Effect.either
          )
        if (!singly) {
          const result = yield* timed(options.reportMany!(batch))
          return { delivered: result._tag === "Right" ? batch.length : 0, error: result._tag === "Left" ? result.left : undefined }
        }
        for (const [i, { name, status }] of batch.entries()) {
          const result = yield* timed(options.report(name, status))
          if (result._tag === "Left") return { delivered: i, error: result.left }
        }
        return { delivered: batch.length, error: undefined }
      })

    const sendReports = Effect.gen(function* () {
      const state = options.state()
      for (const name of outbox.names()) if (!placedHere(state.vms.get(name))) outbox.forget(name)
      for (;;) {
        const batch = outbox.next(MaxStatusReports)
        if (batch.length === 0) return
        const now = yield* Clock.currentTimeMillis
        const singly = options.reportMany === undefined || (state.clusterVersion ?? BatchedStatusReports) < BatchedStatusReports || now < singlyUntil
        const { delivered, error } = yield* deliver(batch, singly)
        outbox.settle(batch, delivered)
        if (error === undefined) continue
        if (!singly && (error._tag === "ClusterVersionTooLow" || error._tag === "InvalidArgument")) {
          // A member of an older release: it has no batches (`ClusterVersionTooLow`) or does not know the request (`InvalidArgument`, 404).
          singlyUntil = now + SinglyForMs
          yield* Effect.logInfo(`node ${self}: the cluster refused a batch of status reports (${error.message}); reporting one VM per request for ${SinglyForMs / 1000} s`)
          continue
        }
        const failed = batch[delivered]!
        yield* Effect.logWarning(
          `${who(failed.name)}: reporting "${failed.status.phase}"${batch.length > 1 ? ` (with ${batch.length - 1} other VMs' statuses)` : ""} failed (${error.message}); the newest status of each is retried in ${options.intervalMs} ms`
        )
        return
      }
    })

    // ---- the backend --------------------------------------------------------------------------

    const fresh = (record: VmRecord): Runner => ({
      pid: undefined,
      since: 0,
      restarts: record.status.restarts,
      failures: 0,
      notBefore: 0,
      lastError: undefined,
      exitCode: undefined,
      generation: record.status.generation ?? 0,
      build: undefined,
      failedGeneration: record.status.build?.state === "failed" ? record.status.build.generation : undefined,
      gaveUp: false
    })

    const removeOrphan = (name: VmName, observed: RunnerState) =>
      Effect.gen(function* () {
        if (observed._tag === "Running") {
          yield* Effect.logInfo(`${who(name)} is not placed on this node (deleted or moved); stopping its runner (pid ${observed.pid}) and removing its state`)
          yield* backend.stop(name, stopTimeout)
          Metrics.agentStops.unsafeUpdate(1, Metrics.noTags)
        } else {
          yield* Effect.logInfo(`${who(name)} is not placed on this node; removing its state directory`)
        }
        yield* backend.remove(name)
        runners.delete(name)
        exits.delete(name)
        outbox.forget(name)
      }).pipe(
        Effect.catchAll((e) => Effect.logWarning(`${who(name)}: removing the orphan failed (${e.message}); retrying in ${options.intervalMs} ms`))
      )

    const handleExit = (name: VmName, record: VmRecord, runner: Runner, exit: { readonly exitCode: number | undefined; readonly signal: string | undefined }, now: number) =>
      Effect.gen(function* () {
        runner.pid = undefined
        runner.exitCode = exit.exitCode
        const what = `runner ${describeExit(exit)}`
        if (shouldRestart(record.spec.restartPolicy, exit)) {
          runner.restarts++
          Metrics.agentRestarts.unsafeUpdate(1, Metrics.noTags)
          runner.failures++
          const delay = backoffMs(runner.failures, backoff)
          runner.notBefore = now + delay
          runner.lastError = what
          yield* Effect.logWarning(`${who(name)}: ${what}; restart policy ${record.spec.restartPolicy}: restarting in ${delay} ms (restart ${runner.restarts})`)
          enqueue(name, record, { phase: "starting", since: now, restarts: runner.restarts, exitCode: exit.exitCode, lastError: what })
        } else {
          runner.gaveUp = true
          runner.lastError = what
          yield* Effect.logWarning(`${who(name)}: ${what}; restart policy ${record.spec.restartPolicy}: not restarting (start it again to retry)`)
          enqueue(name, record, { phase: "failed", since: now, restarts: runner.restarts, exitCode: exit.exitCode, lastError: what })
        }
      })

    /**
     * `prepare` (build or link the runner) of `record`'s spec, reporting its progress as the VM's
     * `build` (the newest output line, at most every `progressEveryMs`): `phase` and `pid` are what
     * the VM is meanwhile (`starting`, or `running` on the old runner during an update).
     */
    const build = (name: VmName, record: VmRecord, runner: Runner, during: { readonly phase: VmPhase; readonly since: number }) =>
      Effect.gen(function* () {
        const generation = record.generation ?? 0
        const startedAt = yield* Clock.currentTimeMillis
        runner.build = new BuildProgress({ state: "building", generation, startedAt })
        const report = Effect.sync(() =>
          enqueue(name, record, { ...during, restarts: runner.restarts, pid: runner.pid, exitCode: runner.exitCode, lastError: runner.lastError })
        )
        const onProgress = (line: string) =>
          Effect.sync(() => {
            const lastLine = line.length > MaxBuildLine ? `${line.slice(0, MaxBuildLine - 1)}…` : line
            if (lastLine !== "") runner.build = new BuildProgress({ state: "building", generation, startedAt, lastLine })
          })
        // A build that takes a while shows in the VM's status, its newest line every
        // `progressEveryMs` (not every line: each report is a replicated write); a quick one (a
        // prebuilt runner linked) does not.
        const ticker = yield* Effect.fork(Effect.forever(Effect.zipRight(Effect.sleep(`${progressEveryMs} millis`), report)))
        const result = yield* Effect.either(backend.prepare(record.spec, onProgress))
        yield* Fiber.interrupt(ticker)
        const lastLine = runner.build.lastLine
        runner.build =
          result._tag === "Left" ? new BuildProgress({ state: "failed", generation, startedAt, ...(lastLine !== undefined ? { lastLine } : {}) }) : undefined
        return result
      })

    /** Starts the runner under the lock the fencing watchdog takes, if this node may still start it; or says why not. */
    const launch = (name: VmName) =>
      startLock.withPermits(1)(
        Effect.gen(function* () {
          // A build may take minutes: check again that this node may still start it (contact with
          // the quorum, still placed here, still wanted).
          const { mayStart, contact } = yield* assess
          const latest = options.state().vms.get(name)
          if (!mayStart || contact === undefined || !placedHere(latest) || wanted(latest) !== "running" || latest.status.phase === "failed") {
            return "fenced, or the VM changed meanwhile"
          }
          if (hostFence === undefined) return yield* backend.start(name)
          // The lease must be renewed with this contact before the watchdog's phase is read (the
          // order `Watchdog.ts` relies on). The wait holds the lock fencing takes, so it ends at
          // the contact's fencing deadline at the latest: a hung write then starts nothing.
          if (!(yield* awaitRenewal(contact + options.fencingMs))) {
            return `the lease renewal has not finished by the fencing deadline (see the lease write logged as not finished)`
          }
          const blocked = yield* hostFence.startBlocked
          return blocked ?? (yield* backend.start(name))
        })
      )

    /** A start or restart failed: back off, and report it (`starting` with the error). */
    const startFailed = (name: VmName, record: VmRecord, runner: Runner, error: Parameters<typeof formatError>[0]) =>
      Effect.gen(function* () {
        const after = yield* Clock.currentTimeMillis
        Metrics.agentStarts.unsafeUpdate(1, startResult.failed)
        runner.failures++
        const delay = backoffMs(runner.failures, backoff)
        runner.notBefore = after + delay
        // With its code: e.g. BLX_VM_DIR_FOREIGN, a directory of microvm.nix's own under the VM's name.
        runner.lastError = formatError(error)
        yield* Effect.logWarning(`${who(name)}: starting failed (${runner.lastError}); retrying in ${delay} ms`)
        enqueue(name, record, { phase: "starting", since: after, restarts: runner.restarts, lastError: runner.lastError })
      })

    const started = (name: VmName, record: VmRecord, runner: Runner, pid: number) =>
      Effect.gen(function* () {
        Metrics.agentStarts.unsafeUpdate(1, startResult.ok)
        runner.pid = pid
        runner.since = yield* Clock.currentTimeMillis
        runner.generation = record.generation ?? 0
        runner.lastError = undefined
        runner.exitCode = undefined
        yield* Effect.logInfo(`${who(name)} is running (pid ${pid})`)
        enqueue(name, record, { phase: "running", since: runner.since, restarts: runner.restarts, pid })
      })

    const start = (name: VmName, runner: Runner) =>
      Effect.gen(function* () {
        // Re-read: `confirmFresh` may have brought news (deleted, stopped, moved away).
        const record = options.state().vms.get(name)
        if (!placedHere(record) || wanted(record) !== "running" || record.status.phase === "failed") return
        const now = yield* Clock.currentTimeMillis
        yield* Effect.logInfo(`${who(name)}: preparing and starting its runner${runner.failures > 0 ? ` (attempt ${runner.failures + 1})` : ""}`)
        enqueue(name, record, { phase: "starting", since: now, restarts: runner.restarts, exitCode: runner.exitCode, lastError: runner.lastError })
        const built = yield* build(name, record, runner, { phase: "starting", since: now })
        if (built._tag === "Left") return yield* startFailed(name, record, runner, built.left)
        const result = yield* Effect.either(launch(name))
        if (result._tag === "Left") return yield* startFailed(name, record, runner, result.left)
        if (typeof result.right === "string") {
          return yield* Effect.logInfo(`${who(name)}: not starting after all (${result.right}); the next round decides`)
        }
        yield* started(name, record, runner, result.right)
      })

    /**
     * `vm update` (microvm.nix's `microvm -u`): the runner of the record's newer generation is built
     * while the old one keeps running; once built, the old one is stopped and the new one started.
     * A failed build leaves the old runner running, its status saying why (not retried until the
     * spec changes again).
     */
    const update = (name: VmName, runner: Runner) =>
      Effect.gen(function* () {
        const record = options.state().vms.get(name)
        const generation = record?.generation ?? 0
        if (!placedHere(record) || wanted(record) !== "running" || runner.pid === undefined || generation <= runner.generation) return
        yield* Effect.logInfo(`${who(name)}: building spec generation ${generation} while its runner (pid ${runner.pid}, generation ${runner.generation}) keeps running`)
        const built = yield* build(name, record, runner, { phase: "running", since: runner.since })
        if (built._tag === "Left") {
          runner.failedGeneration = generation
          runner.lastError = `update to spec generation ${generation} failed; the VM keeps running generation ${runner.generation}: ${formatError(built.left)}`
          yield* Effect.logWarning(`${who(name)}: ${runner.lastError}`)
          enqueue(name, record, { phase: "running", since: runner.since, restarts: runner.restarts, pid: runner.pid, lastError: runner.lastError })
          return
        }
        // Stopped outside the start lock (a stop may take its whole grace; the fencing watchdog must
        // not wait for it), started under it, as any start.
        yield* Effect.logInfo(`${who(name)}: generation ${generation} built; restarting onto it (stopping pid ${runner.pid})`)
        const stopped = yield* Effect.either(backend.stop(name, stopTimeout))
        if (stopped._tag === "Left") {
          runner.notBefore = (yield* Clock.currentTimeMillis) + backoffMs(++runner.failures, backoff)
          runner.lastError = `update to spec generation ${generation}: stopping the old runner failed: ${formatError(stopped.left)}`
          yield* Effect.logWarning(`${who(name)}: ${runner.lastError}`)
          enqueue(name, record, { phase: "running", since: runner.since, restarts: runner.restarts, pid: runner.pid, lastError: runner.lastError })
          return
        }
        runner.pid = undefined
        const result = yield* Effect.either(launch(name))
        if (result._tag === "Left") return yield* startFailed(name, record, runner, result.left)
        if (typeof result.right === "string") {
          return yield* Effect.logInfo(`${who(name)}: stopped for its update, not started after all (${result.right}); the next round decides`)
        }
        yield* started(name, record, runner, result.right)
      })

    const stopHere = (name: VmName, runner: Runner) =>
      Effect.gen(function* () {
        yield* Effect.logInfo(`${who(name)}: desired stopped; stopping its runner (pid ${runner.pid})`)
        yield* backend.stop(name, stopTimeout).pipe(
          Effect.tap(() =>
            Effect.sync(() => {
              runner.pid = undefined
              Metrics.agentStops.unsafeUpdate(1, Metrics.noTags)
            })
          ),
          Effect.catchAll((e) => Effect.logWarning(`${who(name)}: stop failed (${e.message}); retrying in ${options.intervalMs} ms`))
        )
      })

    /** FENCING of one runner: stopped, and reported stopped by fencing. */
    const fenceOne = (name: VmName, pid: number, contactAgoMs: number) =>
      Effect.gen(function* () {
        yield* Effect.logWarning(
          `${who(name)}: FENCING — no quorum contact for ${contactAgoMs} ms (limit ${options.fencingMs} ms); stopping its runner (pid ${pid}); nothing starts again until quorum contact is back`
        )
        const stopped = yield* backend.stop(name, fenceStopTimeout).pipe(
          Effect.as(true),
          Effect.catchAll((e) =>
            Effect.as(Effect.logError(`${who(name)}: FENCING — stop failed (${e.message}); retrying in ${options.intervalMs} ms`), false)
          )
        )
        if (!stopped) return
        Metrics.agentFencingStops.unsafeUpdate(1, Metrics.noTags)
        const runner = runners.get(name)
        const lastError = `stopped by fencing: node ${self} lost contact with the quorum`
        if (runner !== undefined) {
          runner.pid = undefined
          runner.lastError = lastError
        }
        const record = options.state().vms.get(name)
        if (placedHere(record)) {
          enqueue(name, record, {
            phase: "stopped",
            since: yield* Clock.currentTimeMillis,
            restarts: runner?.restarts ?? record.status.restarts,
            lastError
          })
        }
      })

    /**
     * FENCING: stops every running runner on this node (placed here or not). Runs in its own fiber
     * (the watchdog), so a long build or stop in the reconcile round never delays it, under the lock
     * `start` takes, so no start slips in between its check and the runner's launch. Every stop at
     * once: a stop may hang after its signal (its clean-up writes to the VMs' state directory, on a
     * disk that may be the stalled one) and must not hold up another VM's.
     */
    const fenceAll = (contactAgoMs: number) =>
      startLock.withPermits(1)(
        Effect.gen(function* () {
          const listed = yield* Effect.either(backend.list)
          if (listed._tag === "Left") {
            yield* Effect.logError(`node ${self}: FENCING — listing the runners failed (${listed.left.message}); retrying in ${options.intervalMs} ms`)
            return
          }
          yield* Effect.forEach(
            listed.right,
            ({ name, state }) => (state._tag === "Running" ? fenceOne(name, state.pid, contactAgoMs) : Effect.void),
            { concurrency: "unbounded", discard: true }
          )
        })
      )

    // ---- one round ----------------------------------------------------------------------------

    const reconcile = Effect.gen(function* () {
      const { now, mayStart } = yield* assess
      if (fenced) return // the watchdog stops; nothing else happens until contact is back

      const listed = yield* Effect.either(backend.list)
      if (listed._tag === "Left") {
        yield* Effect.logWarning(`node ${self}: listing the runners failed (${listed.left.message}); retrying in ${options.intervalMs} ms`)
        return
      }
      const observed = new Map(listed.right.map((o) => [o.name, o.state] as const))
      const state = options.state()
      const names = new Set<VmName>(observed.keys())
      for (const [name, vm] of state.vms) if (vm.node === self) names.add(name as VmName)

      const toStart: Array<VmName> = []
      const toUpdate: Array<VmName> = []
      const orphans: Array<RunnerObservation> = []
      for (const name of [...names].sort()) {
        const record = state.vms.get(name)
        const seen: RunnerState = observed.get(name) ?? { _tag: "Absent" }
        // Fenced meanwhile (the watchdog): what was listed may already be stale.
        if (fenced) return
        if (!placedHere(record)) {
          orphans.push({ name, state: seen })
          continue
        }
        let runner = runners.get(name)
        if (runner === undefined) {
          runner = fresh(record)
          runners.set(name, runner)
        }
        if (seen._tag === "Running") {
          if (runner.pid !== seen.pid) {
            const adopted = runner.pid === undefined
            runner.pid = seen.pid
            runner.since = seen.since
            if (adopted) yield* Effect.logInfo(`${who(name)}: adopting its running runner (pid ${seen.pid}); it is not started again`)
          }
        } else if (runner.pid !== undefined) {
          // It went away without `stop`: an event told us, or the backend shows it gone.
          const exit = exits.get(name) ?? (seen._tag === "Exited" ? seen : { exitCode: undefined, signal: undefined })
          if (wanted(record) === "running") yield* handleExit(name, record, runner, exit, now)
          else runner.pid = undefined
        }
        exits.delete(name)

        if (wanted(record) === "stopped") {
          if (runner.pid !== undefined) yield* stopHere(name, runner)
          if (runner.pid === undefined) {
            runner.gaveUp = false
            runner.failures = 0
            runner.notBefore = 0
            runner.exitCode = undefined
            runner.lastError = undefined
            // Stopped for a move: the report says so, which lets the VM be placed on its next node.
            enqueue(name, record, { phase: "stopped", since: now, restarts: runner.restarts, released: record.moving })
          }
          continue
        }
        if (runner.pid !== undefined) {
          if (runner.failures > 0 && now - runner.since >= backoff.maxMs) runner.failures = 0
          const generation = record.generation ?? 0
          if (generation > runner.generation && runner.failedGeneration !== generation && mayStart && now >= runner.notBefore) {
            toUpdate.push(name)
          }
          enqueue(name, record, { phase: "running", since: runner.since, restarts: runner.restarts, pid: runner.pid, lastError: runner.lastError })
          continue
        }
        // Once the `failed` status has left the outbox (reported, or dropped because the VM was
        // moved away), the record decides, not this daemon's memory: the VM stays down while it
        // says `failed` (across daemon restarts too; `start` checks again after `confirmFresh`), and
        // starts again once a start or a new placement (its node marked down, then up) cleared it.
        if (runner.gaveUp && !outbox.waiting(name).some((s) => s.phase === "failed")) runner.gaveUp = false
        if (runner.gaveUp || record.status.phase === "failed" || !mayStart || now < runner.notBefore) continue
        toStart.push(name)
      }

      // Removing state and starting runners act on the state's word: make sure it is current (a
      // restarted daemon may not have re-applied its log yet, and would take its VMs for orphans).
      if (toStart.length === 0 && toUpdate.length === 0 && orphans.length === 0) return
      if (options.confirmFresh !== undefined) {
        const ok = yield* options.confirmFresh.pipe(
          Effect.as(true),
          Effect.catchAll((e) =>
            Effect.as(Effect.logWarning(`node ${self}: cannot confirm the state is current (${e.message}); starting nothing, retrying in ${options.intervalMs} ms`), false)
          )
        )
        if (!ok) return
      }
      for (const orphan of orphans) {
        if (!fenced && !placedHere(options.state().vms.get(orphan.name))) yield* removeOrphan(orphan.name, orphan.state)
      }
      for (const name of toStart) {
        const runner = runners.get(name)
        if (runner !== undefined) yield* start(name, runner)
      }
      for (const name of toUpdate) {
        const runner = runners.get(name)
        if (runner !== undefined && !fenced) yield* update(name, runner)
      }
    })

    // ---- fibers -------------------------------------------------------------------------------

    // Subscribe before the first `list` so no exit falls in between.
    const events = yield* backend.subscribe
    yield* Effect.forkScoped(
      Stream.runForEach(events, (exit) =>
        Effect.sync(() => {
          if (exit.process !== "vm") return
          exits.set(exit.name, exit)
          wakeups.signal()
        }).pipe(Effect.zipRight(Effect.logInfo(`${who(exit.name)}: runner ${describeExit(exit)} (process ${exit.process})`)))
      )
    )

    /** The watchdog's sleep: the interval, but it wakes exactly at the fencing deadline. */
    const nextDelay = Effect.gen(function* () {
      if (fenced) return options.intervalMs
      const now = yield* Clock.currentTimeMillis
      const contact = yield* options.quorumContact
      const deadline = (contact ?? startedAt) + options.fencingMs + 1
      return Math.max(1, Math.min(options.intervalMs, deadline - now, renewEveryMs))
    })

    const loop = Effect.gen(function* () {
      for (;;) {
        yield* reconcile.pipe(
          Effect.catchAllCause((cause) => Effect.logError(`node ${self}: a reconcile round failed; retrying in ${options.intervalMs} ms`, cause))
        )
        yield* wakeups.wait(options.intervalMs)
      }
    })

    const watchdog = Effect.gen(function* () {
      for (;;) {
        yield* assess.pipe(
          Effect.flatMap(({ contactAgo }) => (fenced ? fenceAll(contactAgo) : Effect.void)),
          Effect.catchAllCause((cause) => Effect.logError(`node ${self}: the fencing watchdog failed a round; retrying`, cause))
        )
        yield* Effect.sleep(`${yield* nextDelay} millis`)
      }
    })

    const reporter = Effect.gen(function* () {
      for (;;) {
        yield* sendReports.pipe(Effect.catchAllCause((cause) => Effect.logError(`node ${self}: sending status reports failed`, cause)))
        yield* reportWakeups.wait(options.intervalMs)
      }
    })

    if (hostFence !== undefined) yield* Effect.forkScoped(renewer(hostFence))
    yield* Effect.forkScoped(loop)
    yield* Effect.forkScoped(watchdog)
    yield* Effect.forkScoped(reporter)

    return {
      wake: Effect.sync(() => wakeups.signal()),
      fenced: Effect.sync(() => fenced)
    }
  })
