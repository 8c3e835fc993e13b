/**
 * The daemon's side of the host fence (`HostFence.make`) with real watchdog processes: it takes the
 * lease over without extending it, starts the node's watchdog detached, and a daemon restarted
 * while it runs reuses it (one per node); a watchdog of another build is replaced; starts are
 * blocked while no watchdog runs and while it fences.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Schema, Scope } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { fencingPaths, selfIdentity } from "../../src/agent/internal/fencingFiles.js"
import * as Watchdog from "../../src/agent/Watchdog.js"
import { NodeId } from "../../src/domain/NodeId.js"
import type { WatchdogConfig } from "../../src/node/Config.js"
import * as HostFence from "../../src/node/HostFence.js"
import { readStat } from "../../src/vm/internal/procfs.js"
import { killGroup, processAlive, scopedTempDir, waitFor, waitForEffect } from "../vm/fixtures.js"
import { bin, deadWriter, readLease, readRecord, watchdogsOf, writeLease } from "./fencing.js"

const node = NodeId.make(5)

const configIn = (root: string): WatchdogConfig => ({
  id: node,
  dataDir: path.join(root, "data"),
  vmBackend: "process",
  microvmStateDir: path.join(root, "microvms"),
  fencingMs: 2000,
  stopTimeoutMs: 500
})

/** A daemon's host fence, alive while `scope` is; `program` is the `blixard` script it runs. */
const fenceIn = (config: WatchdogConfig, scope: Scope.Scope, program = bin) =>
  HostFence.make({ config, checkMs: 50, command: { executable: process.execPath, program } }).pipe(Scope.extend(scope))

/** Kills every watchdog of the directory when the test ends. */
const reaper = (config: WatchdogConfig) =>
  Effect.addFinalizer(() => Effect.sync(() => watchdogsOf(config.dataDir).forEach(killGroup)))

const liveWatchdog = (config: WatchdogConfig) =>
  waitFor("the node's watchdog to run and write its record", () => {
    const record = readRecord(config)
    return record !== undefined && Watchdog.isLive(record, config.dataDir) ? record : undefined
  })

describe("HostFence (real watchdog processes)", () => {
  it.scopedLive("takes the lease over without extending it, starts the watchdog detached, and a restarted daemon reuses it", () =>
    Effect.gen(function* () {
      const root = yield* scopedTempDir("host-fence")
      const config = configIn(root)
      yield* reaper(config)
      const earned = Date.now() + 30_000
      yield* writeLease(config, earned, deadWriter) // left by a daemon that died

      const first = yield* Scope.make()
      const fence = yield* fenceIn(config, first)
      const lease = yield* readLease(config)
      expect(lease?.validUntil).toBe(earned)
      expect(lease?.writer).toEqual(selfIdentity())
      const record = yield* liveWatchdog(config)
      expect(record.program).toBe(bin)
      // Its own process group (and session): signals to the daemon's group do not reach it.
      expect(readStat(record.process.pid)?.pgrp).toBe(record.process.pid)
      yield* waitForEffect("starts to be allowed", Effect.map(fence.startBlocked, (blocked) => blocked === undefined))

      // Renewals only move the deadline forward, and only by a step (fencingMs / 10) or more: a
      // write per replicated entry is not needed.
      yield* fence.renew(earned - 1)
      expect((yield* readLease(config))?.validUntil).toBe(earned)
      yield* fence.renew(earned + 199)
      expect((yield* readLease(config))?.validUntil).toBe(earned)
      yield* fence.renew(earned + 200)
      expect((yield* readLease(config))?.validUntil).toBe(earned + 200)

      // The daemon stops (or dies): the watchdog runs on; the next daemon finds it.
      yield* Scope.close(first, Exit.void)
      expect(processAlive(record.process.pid)).toBe(true)
      const second = yield* Scope.make()
      const again = yield* fenceIn(config, second)
      expect((yield* readLease(config))?.validUntil).toBe(earned + 200)
      yield* waitForEffect("starts to be allowed", Effect.map(again.startBlocked, (blocked) => blocked === undefined))
      const checkedUntil = Date.now() + 500 // ten checks
      yield* waitFor("ten watchdog checks", () => Date.now() > checkedUntil)
      expect(watchdogsOf(config.dataDir)).toEqual([record.process.pid])
      expect(readRecord(config)?.process.pid).toBe(record.process.pid)
      yield* Scope.close(second, Exit.void)
    }))

  it.scopedLive("starts nothing once the lease written has run out, until a contact renews it", () =>
    Effect.gen(function* () {
      const root = yield* scopedTempDir("host-fence")
      const config = configIn(root)
      yield* reaper(config)
      // A lease that ran out (its daemon lost contact, then died): taken over as it is.
      yield* writeLease(config, Date.now() - 1, deadWriter)
      const fence = yield* fenceIn(config, yield* Effect.scope)
      yield* liveWatchdog(config)
      expect(yield* fence.startBlocked).toContain("node 5's lease ran out")
      // A contact renews it (a step of at least fencingMs / 10 beyond the old deadline).
      yield* fence.renew(Date.now() + config.fencingMs)
      yield* waitForEffect("starts to be allowed", Effect.map(fence.startBlocked, (blocked) => blocked === undefined))
    }))

  it.scopedLive("starts nothing while the watchdog fences, starts another when it is gone, and replaces one of another build", () =>
    Effect.gen(function* () {
      const root = yield* scopedTempDir("host-fence")
      const config = configIn(root)
      yield* reaper(config)
      const before = Date.now()
      const daemon = yield* Scope.make()
      const fence = yield* fenceIn(config, daemon)
      // No lease yet (a new node): fencingMs from the daemon's start, the agent's own start-up grace.
      const grace = (yield* readLease(config))?.validUntil ?? 0
      expect(grace).toBeGreaterThanOrEqual(before + config.fencingMs)
      expect(grace).toBeLessThanOrEqual(Date.now() + config.fencingMs)
      const first = yield* liveWatchdog(config)

      // A fence round in progress (the watchdog publishes it in its record): no start.
      const file = fencingPaths(config.dataDir).watchdog
      const fencing = new Watchdog.WatchdogRecord({ ...first, phase: "fencing", since: Date.now() })
      fs.writeFileSync(file, JSON.stringify(Schema.encodeSync(Watchdog.WatchdogRecord)(fencing)))
      expect(yield* fence.startBlocked).toContain(`node 5's fencing watchdog (pid ${first.process.pid}) is stopping its VMs`)

      // The watchdog dies: starts are blocked until the daemon has started another.
      killGroup(first.process.pid)
      yield* waitFor("the watchdog to be gone", () => !processAlive(first.process.pid))
      const next = yield* liveWatchdog(config)
      expect(next.process.pid).not.toBe(first.process.pid)

      // A daemon of another build (here: the same script under another path) replaces it.
      yield* Scope.close(daemon, Exit.void)
      const other = path.join(root, "other-build", "blixard.js")
      fs.mkdirSync(path.dirname(other))
      fs.symlinkSync(bin, other)
      yield* fenceIn(config, yield* Effect.scope, other)
      const replaced = yield* waitFor("a watchdog of the other build", () => {
        const record = readRecord(config)
        return record !== undefined && record.program === other && Watchdog.isLive(record, config.dataDir) ? record : undefined
      })
      expect(processAlive(next.process.pid)).toBe(false)
      expect(watchdogsOf(config.dataDir)).toEqual([replaced.process.pid])
    }))
})
