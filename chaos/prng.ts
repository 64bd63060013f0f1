/**
 * Seeded randomness for the chaos suite: a small deterministic PRNG (mulberry32) and the seeded
 * byte streams that connections carry, so a seed replays the same choices in the same order.
 *
 * @module
 */

/** A deterministic pseudo-random source. */
export class Prng {
  #state: number;

  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  /** A float in [0, 1). */
  next(): number {
    let t = (this.#state = (this.#state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** An integer in [min, max]. */
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }

  /** One element of `items`, chosen by `weights` (same length). */
  pick<T>(items: readonly T[], weights: readonly number[]): T {
    const total = weights.reduce((a, b) => a + b, 0);
    let r = this.next() * total;
    for (let i = 0; i < items.length; i++) {
      r -= weights[i] ?? 0;
      if (r < 0) return items[i] as T;
    }
    return items[items.length - 1] as T;
  }

  /** A size from 0 to `max`, log-uniform-ish so small and large both occur. */
  size(max: number): number {
    const bits = this.int(0, Math.ceil(Math.log2(max)));
    return Math.min(max, this.int(0, 2 ** bits));
  }

  /** A 32-bit seed for a child source. */
  fork(): number {
    return Math.floor(this.next() * 4294967296) >>> 0;
  }
}

/** `length` bytes of the stream of `seed` (xorshift32; byte i depends only on seed and i). */
export function seededBytes(seed: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = (seed | 1) >>> 0;
  for (let i = 0; i < length; i += 4) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 255;
    if (i + 1 < length) out[i + 1] = (x >>> 8) & 255;
    if (i + 2 < length) out[i + 2] = (x >>> 16) & 255;
    if (i + 3 < length) out[i + 3] = (x >>> 24) & 255;
  }
  return out;
}
