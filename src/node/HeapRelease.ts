/**
 * Gives the V8 heap a daemon grew under load back to the system once the daemon is quiet.
 *
 * Why: V8 sizes its heap for the allocation rate it sees. Under writes the young generation grows to
 * its largest (16 MiB semi-spaces on Node.js 20, where `bin/blixard.js` cannot lower the limit) and
 * the old generation fills with garbage that only a full collection finds; a quiet node then
 * allocates too little for V8 to collect again, and keeps it all resident. Measured after
 * `compare`'s write phases (bench/RESULTS.md): a daemon's heap 105 MB committed of which 32 MB young
 * and 60 MB old, 31 MB of it live; one memory-reducing full collection brought the process from 189
 * to 123 MB. `node --expose-gc`'s `gc()` does not shrink the young generation; the inspector's
 * `HeapProfiler.collectGarbage` (V8's "collect all available garbage", what V8 does itself on a
 * memory-pressure signal) does, and needs no flag: an in-process session, connected for the call.
 *
 * When: every `checkMs` (an unreferenced timer, one wake-up per interval), the daemon looks at its
 * CPU time over the interval and at V8's committed heap. A collection runs when the interval was
 * quiet (CPU under `quietCpuShare` of it: an idle node uses 3–4 %, one taking writes most of a core)
 * and the heap is at least `growthBytes` above what the last collection left (at start, above
 * nothing): after a burst of work, once, 1–2 s after it ended. A node whose live data grew keeps
 * it; the next collection waits until the heap grows by `growthBytes` again, so a quiet node
 * collects at most once per that much allocation kept resident, never in a loop. A collection costs
 * 0.1–0.15 s of CPU at 30–40 MB live (load ≈ 10): an idle node's CPU over the seconds after a burst
 * includes it once.
 */
import { Effect } from "effect"
import type * as Inspector from "node:inspector"
import { createRequire } from "node:module"
import * as v8 from "node:v8"

export interface HeapReleaseOptions {
  readonly checkMs: number
  readonly quietCpuShare: number
  readonly growthBytes: number
}

export const defaultHeapRelease: HeapReleaseOptions = { checkMs: 1_000, quietCpuShare: 0.1, growthBytes: 24 * 2 ** 20 }

/** One look: the CPU used over the interval (µs), the interval (ms), V8's committed heap (bytes). */
export interface HeapSample {
  readonly cpuMicros: number
  readonly elapsedMs: number
  readonly heapBytes: number
}

/** Whether to collect now, given what the last collection left (`floorBytes`, 0 before the first). */
export const shouldRelease = (options: HeapReleaseOptions, floorBytes: number, sample: HeapSample): boolean =>
  sample.elapsedMs > 0 &&
  sample.cpuMicros / 1000 < options.quietCpuShare * sample.elapsedMs &&
  sample.heapBytes >= floorBytes + options.growthBytes

/** V8's committed heap: what its spaces hold resident. */
export const heapBytes = (): number => v8.getHeapStatistics().total_physical_size

/** A memory-reducing full collection (young generation shrunk too); calls `done` when it has run. */
export const collect = (done: () => void): void => {
  let session: Inspector.Session
  try {
    // Loaded here: a Node.js built without the inspector throws at loading `node:inspector`, and
    // the daemon must run there too, only without this.
    const inspector = createRequire(import.meta.url)("node:inspector") as typeof Inspector
    session = new inspector.Session()
    session.connect()
  } catch {
    done()
    return
  }
  // Disconnected after the call has returned: from inside its callback, `disconnect` waits on a lock
  // the call still holds, and the process hangs (Node.js 20).
  session.post("HeapProfiler.collectGarbage", () =>
    setImmediate(() => {
      session.disconnect()
      done()
    })
  )
}

/** Starts the checks; answers the function that stops them. */
export const start = (options: HeapReleaseOptions = defaultHeapRelease): (() => void) => {
  let floor = 0
  let cpu = process.cpuUsage()
  let at = performance.now()
  let collecting = false
  const timer = setInterval(() => {
    if (collecting) return
    const now = performance.now()
    const used = process.cpuUsage(cpu)
    const sample = { cpuMicros: used.user + used.system, elapsedMs: now - at, heapBytes: heapBytes() }
    cpu = process.cpuUsage()
    at = now
    if (!shouldRelease(options, floor, sample)) return
    collecting = true
    collect(() => {
      floor = heapBytes()
      collecting = false
      // The collection's own CPU is not the next interval's load.
      cpu = process.cpuUsage()
      at = performance.now()
    })
  }, options.checkMs)
  timer.unref()
  return () => clearInterval(timer)
}

/** The checks for as long as the enclosing scope lasts (a member's or a host's daemon). */
export const scoped = Effect.acquireRelease(Effect.sync(() => start()), (stop) => Effect.sync(stop))
