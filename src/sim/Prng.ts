/**
 * A small, fast, seeded pseudo-random generator for the simulator: xoshiro128** (Blackman & Vigna),
 * its 128-bit state filled by splitmix32 from an integer seed of up to 53 bits.
 *
 * Everything random in a simulated run comes from one of these, so a run is reproduced by its seed.
 * `fork(label)` derives an independent stream from this stream's *seed* and the label (not from how
 * many numbers were drawn so far), so adding a draw to the workload never perturbs the network:
 *
 *   const root = Prng.fromSeed(seed)
 *   const net = root.fork("network"), workload = root.fork("workload"), faults = root.fork("faults")
 *
 * Forking twice with the same label gives the same stream; give each consumer its own label.
 * Never touches `Math.random` or any other process state.
 */

const TWO_32 = 4294967296
const TWO_53 = 9007199254740992

/** One step of splitmix32 over a 32-bit state: returns [output, nextState]. */
const splitmix32 = (state: number): readonly [number, number] => {
  const next = (state + 0x9e3779b9) >>> 0
  let z = next
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b)
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35)
  return [(z ^ (z >>> 16)) >>> 0, next]
}

/** FNV-1a (32-bit) of a label's UTF-16 code units, starting from `basis`. */
const hashLabel = (label: string, basis: number): number => {
  let h = basis >>> 0
  for (let i = 0; i < label.length; i++) {
    h = Math.imul(h ^ label.charCodeAt(i), 0x01000193) >>> 0
  }
  return h
}

const rotl = (x: number, k: number): number => (x << k) | (x >>> (32 - k))

export class Prng {
  private s0: number
  private s1: number
  private s2: number
  private s3: number

  /** Use `Prng.fromSeed`; the two words identify the stream (and are what `fork` derives from). */
  private constructor(
    private readonly k0: number,
    private readonly k1: number
  ) {
    // Two splitmix32 streams, one per key word, xor-ed: distinct (k0, k1) give unrelated states.
    let a = k0 >>> 0
    let b = (k1 ^ 0x6a09e667) >>> 0
    const words: Array<number> = []
    for (let i = 0; i < 4; i++) {
      const [x, na] = splitmix32(a)
      const [y, nb] = splitmix32(b)
      a = na
      b = nb
      words.push((x ^ Math.imul(y, 0x27d4eb2f)) >>> 0)
    }
    this.s0 = words[0]!
    this.s1 = words[1]!
    this.s2 = words[2]!
    this.s3 = words[3]!
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1 // xoshiro's one forbidden state
  }

  /** A generator for a non-negative integer seed below 2^53 (as printed by a failing run). */
  static fromSeed(seed: number): Prng {
    if (!Number.isSafeInteger(seed) || seed < 0) {
      throw new RangeError(`Prng seed must be a safe non-negative integer, got ${seed}`)
    }
    return new Prng(seed % TWO_32, Math.floor(seed / TWO_32))
  }

  /** An independent stream derived from this stream's seed and `label` (not from its position). */
  fork(label: string): Prng {
    return new Prng(hashLabel(label, (this.k0 ^ 0x811c9dc5) >>> 0), hashLabel(label, (this.k1 ^ 0x9747b28c) >>> 0))
  }

  /** The next 32 uniformly random bits, as an unsigned integer. */
  next32(): number {
    const s0 = this.s0, s1 = this.s1, s2 = this.s2, s3 = this.s3
    const result = Math.imul(rotl(Math.imul(s1, 5), 7), 9) >>> 0
    const t = s1 << 9
    const n2 = s2 ^ s0
    const n3 = s3 ^ s1
    this.s1 = s1 ^ n2
    this.s0 = s0 ^ n3
    this.s2 = n2 ^ t
    this.s3 = rotl(n3, 11)
    return result
  }

  /** A uniform integer in [0, n), n an integer in [1, 2^53]. Unbiased (rejection sampling). */
  int(n: number): number {
    if (!(n >= 1 && Number.isInteger(n) && n <= TWO_53)) {
      throw new RangeError(`Prng.int expects an integer bound in [1, 2^53], got ${n}`)
    }
    if (n <= TWO_32) {
      if ((n & (n - 1)) === 0 && n < TWO_32) return this.next32() & (n - 1)
      const limit = TWO_32 - (TWO_32 % n)
      for (;;) {
        const x = this.next32()
        if (x < limit) return x % n
      }
    }
    for (;;) {
      const x = Math.floor(this.float() * TWO_53) // a uniform 53-bit integer
      const limit = TWO_53 - (TWO_53 % n)
      if (x < limit) return x % n
    }
  }

  /** A uniform integer in [lo, hi] (both inclusive). */
  between(lo: number, hi: number): number {
    if (hi < lo) throw new RangeError(`Prng.between: empty range [${lo}, ${hi}]`)
    return lo + this.int(hi - lo + 1)
  }

  /** A uniform float in [0, 1) with 53 random bits. */
  float(): number {
    const a = this.next32() >>> 5
    const b = this.next32() >>> 6
    return (a * 67108864 + b) / TWO_53
  }

  /** True with probability p. Always consumes exactly one `float()`, whatever p is. */
  chance(p: number): boolean {
    return this.float() < p
  }

  /** A uniformly chosen element; throws on an empty array. */
  pick<A>(items: ReadonlyArray<A>): A {
    if (items.length === 0) throw new RangeError("Prng.pick from an empty array")
    return items[this.int(items.length)]!
  }

  /** Shuffles `items` in place (Fisher–Yates) and returns it. */
  shuffle<A>(items: Array<A>): Array<A> {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.int(i + 1)
      const tmp = items[i]!
      items[i] = items[j]!
      items[j] = tmp
    }
    return items
  }
}
