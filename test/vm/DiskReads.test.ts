/**
 * `diskReads`: reads shared while one is under way, the low lane's limit, real files, and answers
 * waited for until a deadline only. A read "on a stalled disk" is a promise the test resolves when
 * it likes.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Option, TestClock } from "effect"
import * as childProcess from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { answerBy, busy, CleanupLaneOps, laned, LowLaneReads, outstanding, readText, shared } from "../../src/vm/internal/diskReads.js"
import { claimLinkBy, removeFile } from "../../src/vm/internal/stateDir.js"

/** A read that answers when `answer` is called (a disk that stalled until then). */
const stalledRead = () => {
  let answer: (text: string) => void = () => undefined
  let started = 0
  const read = () => {
    started++
    return new Promise<string>((resolve) => (answer = resolve))
  }
  return { read, answer: (text: string) => answer(text), started: () => started }
}

const tick = () => new Promise((resolve) => setImmediate(resolve))

/** A write that ends once `end` is called (a disk that stalled until then); started after, it ends at once. */
const stalledWrite = () => {
  let ended = false
  let resolve: () => void = () => undefined
  let started = false
  const write = () => {
    started = true
    return ended ? Promise.resolve() : new Promise<void>((r) => (resolve = r))
  }
  const end = () => {
    ended = true
    resolve()
  }
  return { write, end, started: () => started }
}

describe("diskReads", () => {
  it("a read asked for while one of the same file hangs waits for the next read, started when the first ends and shared by all who asked meanwhile", async () => {
    const disk = stalledRead()
    const first = shared("read\0/data/fencing/lease.json", "high", disk.read)
    const second = shared("read\0/data/fencing/lease.json", "high", disk.read)
    const third = shared("read\0/data/fencing/lease.json", "high", disk.read)
    await tick()
    // Asked for again and again while the first hangs: no second read runs.
    expect(disk.started()).toBe(1)
    disk.answer("lease")
    expect(await first).toBe("lease")
    // The first ended: the next read starts, and answers both who asked while the first ran (what
    // was written before they asked, which the first read may have missed).
    await tick()
    expect(disk.started()).toBe(2)
    disk.answer("renewed")
    expect(await second).toBe("renewed")
    expect(await third).toBe("renewed")
    expect(outstanding()).toBe(0)
    // Nothing under way: the next ask reads at once.
    const fourth = shared("read\0/data/fencing/lease.json", "high", disk.read)
    await tick()
    expect(disk.started()).toBe(3)
    disk.answer("again")
    expect(await fourth).toBe("again")
    expect(outstanding()).toBe(0)
  })

  it("a real read asked for after a write sees it, though a read begun before the write was still under way", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "disk-reads-"))
    try {
      // The record is first a FIFO: a read of it hangs (in libuv's pool) until a writer writes,
      // the stand-in for a read held up by the disk. `keep` is another name for the same FIFO.
      const file = path.join(dir, "watchdog.json")
      const keep = path.join(dir, "fifo")
      childProcess.execFileSync("mkfifo", [keep])
      fs.linkSync(keep, file)
      const before = readText(file, "high")
      // Once that read has the FIFO open (a writer's open without waiting succeeds only then)...
      const deadline = Date.now() + 10_000
      let writer: number | undefined
      while (writer === undefined) {
        try {
          writer = fs.openSync(keep, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK)
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== "ENXIO" || Date.now() > deadline) throw e
          await tick()
        }
      }
      // ...the record is written anew (atomically, as `writeJsonFile` does), then read.
      fs.writeFileSync(path.join(dir, "tmp"), "fencing")
      fs.renameSync(path.join(dir, "tmp"), file)
      const after = readText(file, "high")
      fs.writeSync(writer, "watching")
      fs.closeSync(writer)
      expect(await before).toBe("watching")
      expect(await after).toBe("fencing")
      expect(outstanding()).toBe(0)
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })

  it("hung low-lane reads take at most LowLaneReads of libuv's threads: the next waits its turn, a high-lane read runs at once", async () => {
    const hung = Array.from({ length: LowLaneReads + 1 }, () => stalledRead())
    const answers = hung.map((disk, i) => shared(`read\0/var/lib/microvms/vm-${i}/blixard.pid`, "low", disk.read))
    await tick()
    expect(hung.map((d) => d.started())).toEqual([...Array.from({ length: LowLaneReads }, () => 1), 0])
    const lease = stalledRead()
    const leaseRead = shared("read\0/data/fencing/lease.json", "high", lease.read)
    await tick()
    expect(lease.started()).toBe(1)
    lease.answer("lease")
    expect(await leaseRead).toBe("lease")
    // One hung read answers: the waiting one gets its thread.
    hung[0]!.answer("pid 0")
    await tick()
    expect(hung[LowLaneReads]!.started()).toBe(1)
    hung.forEach((d, i) => d.answer(`pid ${i}`))
    expect(await Promise.all(answers)).toEqual(hung.map((_, i) => `pid ${i}`))
    expect(outstanding()).toBe(0)
  })

  it("reads a real file's text; a missing one is undefined; another error fails", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "disk-reads-"))
    try {
      fs.writeFileSync(path.join(dir, "lease.json"), "{}\n")
      fs.symlinkSync(path.join(dir, "lease.json"), path.join(dir, "link"))
      expect(await readText(path.join(dir, "lease.json"), "high")).toBe("{}\n")
      expect(await readText(path.join(dir, "missing.json"), "low")).toBeUndefined()
      expect(await readText(path.join(dir, "link"), "low")).toBe("{}\n")
      await expect(readText(path.join(dir, "link"), "low", { noFollow: true })).rejects.toThrow(/ELOOP/)
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })

  it.effect("answerBy waits for an answer until the deadline only, then gives none (the read goes on)", () =>
    Effect.gen(function* () {
      const disk = stalledRead()
      const waiting = yield* Effect.fork(answerBy(disk.read, 1000))
      yield* TestClock.adjust(999)
      expect(waiting.unsafePoll()).toBeNull()
      yield* TestClock.adjust(1)
      expect(yield* Fiber.join(waiting)).toEqual(Option.none())
      // Without a deadline, it waits as long as the read takes.
      const patient = yield* Effect.fork(answerBy(disk.read, undefined))
      yield* Effect.promise(tick)
      disk.answer("late")
      expect(yield* Fiber.join(patient)).toEqual(Option.some("late"))
    }))

  it("clean-up writes hung on a stalled disk take at most CleanupLaneOps threads: the next waits its turn, the lease read runs at once", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "disk-reads-"))
    try {
      fs.writeFileSync(path.join(dir, "lease.json"), "{}\n")
      // A fence round stopping ten VMs on a stalled disk: ten removals, as the stop path queues them.
      const hung = Array.from({ length: 10 }, () => stalledWrite())
      const removals = hung.map((disk) => laned("cleanup", disk.write))
      fs.writeFileSync(path.join(dir, "blixard.pid"), "{}\n")
      const waiting = removeFile(path.join(dir, "blixard.pid"))
      await tick()
      expect(hung.filter((d) => d.started()).length).toBe(CleanupLaneOps)
      // The lease is read at once (on Node.js's default four threads, two are still free).
      expect(await readText(path.join(dir, "lease.json"), "high")).toBe("{}\n")
      expect(fs.existsSync(path.join(dir, "blixard.pid"))).toBe(true)
      // The disk answers: every write gets its turn, in order.
      hung.forEach((d) => d.end())
      await Promise.all([...removals, waiting])
      expect(hung.every((d) => d.started())).toBe(true)
      expect(fs.existsSync(path.join(dir, "blixard.pid"))).toBe(false)
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })

  it.live("a claim of booted not answered by its deadline is no claim; when it lands later, the link is put back for the next stop", () =>
    Effect.gen(function* () {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "disk-reads-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))
      const booted = path.join(dir, "booted")
      fs.symlinkSync("/nix/store/runner", booted)
      const hung = Array.from({ length: CleanupLaneOps }, () => stalledWrite())
      const held = hung.map((disk) => laned("cleanup", disk.write))
      const claimed = yield* claimLinkBy(booted, Date.now() + 50)
      expect(claimed).toBeUndefined()
      hung.forEach((d) => d.end())
      yield* Effect.promise(() => Promise.all(held))
      // The rename ran after the deadline, then the link went back: booted is there, no claimed name left.
      yield* Effect.promise(async () => {
        for (let i = 0; i < 500 && busy("cleanup") > 0; i++) await new Promise((r) => setTimeout(r, 10))
      })
      expect(busy("cleanup")).toBe(0)
      expect(fs.readdirSync(dir)).toEqual(["booted"])
      expect(fs.readlinkSync(booted)).toBe("/nix/store/runner")
      // Answered in time, it is a claim.
      expect(yield* claimLinkBy(booted, Date.now() + 5000)).toBe(`${booted}.claimed-${process.pid}`)
    }).pipe(Effect.scoped))
})
