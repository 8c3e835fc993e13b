import { describe, expect, it } from "vitest"
import { TraceHash } from "../../src/sim/Trace.js"

const ascii = (s: string): Array<number> => Array.from(s, (c) => c.charCodeAt(0))
const fnv = (s: string): string => new TraceHash().bytes(ascii(s)).digest()

/** A fixed little run: what a simulator trace looks like. */
const sampleRun = (): TraceHash => {
  const h = new TraceHash()
  for (let t = 0; t < 100; t++) {
    h.record("deliver", t, t % 5, (t * 7) % 5, `AppendEntries{term=${t >> 3}}`, t % 3 === 0)
    h.record("tick", t + 0.5, -t, 2 ** 40 + t)
  }
  return h
}

describe("TraceHash", () => {
  it("is FNV-1a 64 on raw bytes (reference vectors); numbers mix 32-bit words in one step", () => {
    expect(fnv("")).toBe("cbf29ce484222325")
    expect(fnv("a")).toBe("af63dc4c8601ec8c")
    expect(fnv("foobar")).toBe("85944171f73967e8")
    // A word step equals a byte step when the word fits in a byte, and differs from four byte steps.
    expect(new TraceHash().uint32(0x61).digest()).toBe(fnv("a"))
    expect(new TraceHash().uint32(0x01020304).digest()).not.toBe(new TraceHash().bytes([4, 3, 2, 1]).digest())
  })

  it("the same records give the same digest; is pinned so it compares across processes and versions", () => {
    expect(sampleRun().digest()).toBe(sampleRun().digest())
    expect(sampleRun().count).toBe(200)
    expect(sampleRun().digest()).toBe(PINNED_SAMPLE)
  })

  it("any change in content or order changes the digest", () => {
    const d = (f: (h: TraceHash) => void): string => {
      const h = new TraceHash()
      f(h)
      return h.digest()
    }
    const digests = [
      d((h) => h.record("a", 1).record("b", 2)),
      d((h) => h.record("b", 2).record("a", 1)),
      d((h) => h.record("a", 1, "b", 2)),
      d((h) => h.record("ab", "c")),
      d((h) => h.record("a", "bc")),
      d((h) => h.record(1)),
      d((h) => h.record("1")),
      d((h) => h.record(true)),
      d((h) => h.record(false)),
      d((h) => h.record(1.5)),
      d((h) => h.record(2 ** 32 + 1)),
      d((h) => h.record(1)),
      d((h) => h.record())
    ]
    // Only the two identical record(1) runs coincide.
    expect(new Set(digests).size).toBe(digests.length - 1)
    expect(d((h) => h.record(0))).toBe(d((h) => h.record(-0)))
    expect(d((h) => h.record(NaN))).toBe(d((h) => h.record(0 / 0)))
  })

  it("strings are framed by their length and hashed as UTF-8", () => {
    const str = (s: string): string => new TraceHash().string(s).digest()
    // A string is: the tag byte 3, its length in UTF-16 units as one 32-bit word, its UTF-8 bytes.
    expect(str("é")).toBe(new TraceHash().byte(3).uint32(1).bytes([0xc3, 0xa9]).digest())
    expect(str("€")).toBe(new TraceHash().byte(3).uint32(1).bytes([0xe2, 0x82, 0xac]).digest())
    expect(str("😀")).toBe(new TraceHash().byte(3).uint32(2).bytes([0xf0, 0x9f, 0x98, 0x80]).digest())
  })
})

const PINNED_SAMPLE = "bb5bdd30d4d33e45"
