/**
 * A small seeded pseudo-random generator (sfc32) for the fuzzer. Every case draws from its own
 * generator, derived from the run's seed and the case's index, so one case can be replayed alone.
 *
 * @module
 */

/** Mixes a 32-bit value (murmur3 finaliser). */
function mix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** A deterministic generator of 32-bit values with helpers for the generators. */
export class Rng {
  #a: number;
  #b: number;
  #c: number;
  #d = 1;

  /** A generator for case `index` of the run with `seed` (both below 2^32 once masked). */
  constructor(seed: number, index = 0) {
    this.#a = mix32(seed ^ 0x9e3779b9);
    this.#b = mix32((index ^ 0x7f4a7c15) + Math.imul(seed, 0x27d4eb2f));
    this.#c = mix32(index + 0x165667b1);
    for (let i = 0; i < 12; i++) this.u32();
  }

  /** The next value in [0, 2^32). */
  u32(): number {
    const t = (((this.#a + this.#b) | 0) + this.#d) | 0;
    this.#d = (this.#d + 1) | 0;
    this.#a = this.#b ^ (this.#b >>> 9);
    this.#b = (this.#c + (this.#c << 3)) | 0;
    this.#c = (this.#c << 21) | (this.#c >>> 11);
    this.#c = (this.#c + t) | 0;
    return t >>> 0;
  }

  /** An integer in [0, n) (n ≤ 2^32). */
  int(n: number): number {
    return Math.floor((this.u32() / 0x1_0000_0000) * n);
  }

  /** An integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  /** True with probability `p`. */
  chance(p: number): boolean {
    return this.u32() < p * 0x1_0000_0000;
  }

  /** One element of a non-empty list. */
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }

  /** A size that is usually small and sometimes large (up to `max`). */
  size(max: number): number {
    const r = this.int(10);
    if (r < 6) return this.int(Math.min(max, 16) + 1);
    if (r < 9) return this.int(Math.min(max, 256) + 1);
    return this.int(max + 1);
  }

  /** `n` random bytes. */
  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.u32() & 0xff;
    return out;
  }

  /** A random 64-bit unsigned value with an interesting bit length. */
  u64(): bigint {
    const bits = this.pick([0, 1, 7, 8, 14, 21, 28, 31, 32, 35, 53, 54, 56, 63, 64]);
    const v = (BigInt(this.u32()) << 32n) | BigInt(this.u32());
    return bits === 0 ? 0n : BigInt.asUintN(bits, v) | (1n << BigInt(bits - 1));
  }
}

/** Parses a seed given on the command line (decimal or 0x hex) into [0, 2^32). */
export function parseSeed(text: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`bad seed ${JSON.stringify(text)}`);
  return n % 0x1_0000_0000;
}

/** A fresh random seed. */
export function randomSeed(): number {
  return crypto.getRandomValues(new Uint32Array(1))[0]!;
}
