/**
 * An incremental trace hash: FNV-1a 64-bit, computed with two 32-bit halves, over the records of a
 * simulated run. Two runs of one seed must produce the same digest, in this process or another; the
 * first differing digest (compare `digest()` at checkpoints) locates a non-determinism bug.
 *
 * Fields are typed and framed (a tag byte, and a length for strings), so ("ab", "c") and ("a", "bc")
 * hash differently. Numbers hash by value: small integers as 4 bytes, every other number as its
 * IEEE-754 bits in little-endian order (-0 is hashed as 0, every NaN as one canonical NaN).
 */

export type TraceField = number | string | boolean

const OFFSET_HI = 0xcbf29ce4
const OFFSET_LO = 0x84222325

const TAG_INT = 1
const TAG_FLOAT = 2
const TAG_STRING = 3
const TAG_FALSE = 4
const TAG_TRUE = 5
const TAG_END = 6

const scratch = new DataView(new ArrayBuffer(8))

export class TraceHash {
  private hi = OFFSET_HI
  private lo = OFFSET_LO
  private records = 0

  /** Number of records hashed so far. */
  get count(): number {
    return this.records
  }

  /** Mixes one byte (the low 8 bits of `b`): h = (h ^ b) * 0x100000001b3 mod 2^64. */
  byte(b: number): this {
    const lo = (this.lo ^ (b & 0xff)) >>> 0
    // prime = 2^40 + 0x1b3: h * prime = h * 0x1b3 + (h << 40); (h << 40) only touches the high word.
    const loP = lo * 0x1b3
    const hiP = this.hi * 0x1b3 + ((lo << 8) >>> 0) + Math.floor(loP / 4294967296)
    this.lo = loP >>> 0
    this.hi = hiP >>> 0
    return this
  }

  /** Mixes raw bytes, with no framing (FNV-1a of exactly these bytes). */
  bytes(data: ArrayLike<number>): this {
    for (let i = 0; i < data.length; i++) this.byte(data[i]!)
    return this
  }

  /**
   * Mixes a 32-bit word in one FNV step (xor the whole word, multiply by the prime) rather than four
   * byte steps: the simulator hashes a record per event, and this is its hottest loop.
   */
  uint32(w: number): this {
    const lo = (this.lo ^ w) >>> 0
    const loP = lo * 0x1b3
    const hiP = this.hi * 0x1b3 + ((lo << 8) >>> 0) + Math.floor(loP / 4294967296)
    this.lo = loP >>> 0
    this.hi = hiP >>> 0
    return this
  }

  /** Mixes a number field. */
  number(x: number): this {
    if ((x | 0) === x) {
      // Includes -0, which hashes as 0.
      this.byte(TAG_INT)
      this.uint32(x)
      return this
    }
    this.byte(TAG_FLOAT)
    scratch.setFloat64(0, Number.isNaN(x) ? NaN : x, true)
    this.uint32(scratch.getUint32(0, true))
    this.uint32(scratch.getUint32(4, true))
    return this
  }

  /** Mixes a string field (its length, then its UTF-8 bytes). */
  string(s: string): this {
    this.byte(TAG_STRING)
    this.uint32(s.length)
    for (let i = 0; i < s.length; i++) {
      let c = s.charCodeAt(i)
      if (c < 0x80) {
        this.byte(c)
        continue
      }
      if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
        const d = s.charCodeAt(i + 1)
        if (d >= 0xdc00 && d <= 0xdfff) {
          c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00)
          i++
        }
      }
      if (c < 0x800) {
        this.byte(0xc0 | (c >> 6))
      } else if (c < 0x10000) {
        this.byte(0xe0 | (c >> 12))
        this.byte(0x80 | ((c >> 6) & 0x3f))
      } else {
        this.byte(0xf0 | (c >> 18))
        this.byte(0x80 | ((c >> 12) & 0x3f))
        this.byte(0x80 | ((c >> 6) & 0x3f))
      }
      this.byte(0x80 | (c & 0x3f))
    }
    return this
  }

  /** Mixes a boolean field. */
  bool(b: boolean): this {
    return this.byte(b ? TAG_TRUE : TAG_FALSE)
  }

  /** Mixes one event record: its fields in order, then an end marker. Counts one record. */
  record(...fields: ReadonlyArray<TraceField>): this {
    for (const f of fields) {
      if (typeof f === "number") this.number(f)
      else if (typeof f === "string") this.string(f)
      else this.bool(f)
    }
    this.byte(TAG_END)
    this.records++
    return this
  }

  /** The current 64-bit digest as 16 lowercase hex digits. */
  digest(): string {
    return this.hi.toString(16).padStart(8, "0") + this.lo.toString(16).padStart(8, "0")
  }
}
