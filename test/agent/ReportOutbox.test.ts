/** The agent's outbox of status reports (`src/agent/internal/reportOutbox.ts`): batches, their bounds, and what a failure keeps. */
import { describe, expect, it } from "@effect/vitest"
import { MaxBatchBytes, ReportOutbox } from "../../src/agent/internal/reportOutbox.js"
import { VmName } from "../../src/domain/VmName.js"
import { VmStatus } from "../../src/domain/VmStatus.js"

const name = (s: string) => VmName.make(s)
const status = (phase: "starting" | "running" | "stopped", pid?: number, lastError?: string) =>
  new VmStatus({ phase, since: 1, restarts: 0, ...(pid !== undefined ? { pid } : {}), ...(lastError !== undefined ? { lastError } : {}) })
const pending = status("stopped")

describe("ReportOutbox", () => {
  it("a batch holds the oldest status of each VM, by name; later ones go in later batches, so each VM's are applied in order", () => {
    const box = new ReportOutbox()
    expect(box.add(name("b"), status("starting"), pending)).toBe(true)
    expect(box.add(name("b"), status("running", 7), pending)).toBe(true)
    expect(box.add(name("a"), status("starting"), pending)).toBe(true)
    expect(box.add(name("a"), status("starting"), pending)).toBe(false) // the same as the one queued before it
    const first = box.next(10)
    expect(first.map((r) => [r.name, r.status.phase])).toEqual([["a", "starting"], ["b", "starting"]])
    box.settle(first, first.length)
    const second = box.next(10)
    expect(second.map((r) => [r.name, r.status.phase])).toEqual([["b", "running"]])
    box.settle(second, 1)
    expect(box.next(10)).toEqual([])
    expect(box.add(name("b"), status("running", 7), pending)).toBe(false) // the same as the one delivered last
  })

  it("a batch is bounded in count and in bytes", () => {
    const box = new ReportOutbox()
    for (let i = 0; i < 300; i++) box.add(name(`vm-${String(i).padStart(3, "0")}`), status("running", i + 1), pending)
    expect(box.next(256).length).toBe(256)
    const long = new ReportOutbox()
    // Each status carries a 4,000-character error: 128 KiB holds about 32 of them.
    for (let i = 0; i < 100; i++) long.add(name(`vm-${i}`), status("starting", undefined, "é".repeat(4000)), pending)
    const batch = long.next(256)
    const bytes = Buffer.byteLength(JSON.stringify({ reports: batch }))
    expect(batch.length).toBeGreaterThan(1)
    expect(batch.length).toBeLessThan(32)
    expect(bytes).toBeLessThanOrEqual(MaxBatchBytes)
    expect(bytes + Buffer.byteLength(JSON.stringify({ reports: long.next(256).slice(0, 1) }))).toBeGreaterThan(MaxBatchBytes)
  })

  it("settling: the delivered ones leave; of the rest, each VM keeps only its newest status; a VM forgotten meanwhile stays forgotten", () => {
    const box = new ReportOutbox()
    for (const vm of ["a", "b", "c"]) {
      box.add(name(vm), status("starting"), pending)
      box.add(name(vm), status("running", 1), pending)
      box.add(name(vm), status("running", 2), pending)
    }
    const batch = box.next(10)
    box.forget(name("c"))
    box.settle(batch, 1)
    expect(box.waiting(name("a")).map((s) => s.pid)).toEqual([1, 2])
    expect(box.waiting(name("b")).map((s) => s.pid)).toEqual([2])
    expect(box.waiting(name("c"))).toEqual([])
    expect(box.names().sort()).toEqual(["a", "b"])
  })
})
