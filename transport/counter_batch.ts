/**
 * {@linkcode CounterBatch}: counts by a pair of label values, kept as plain numbers on the hot path
 * and handed to a metric when it is collected.
 *
 * Every packet of every connection is counted (upstream's `stream_packets_total`, knp's proxied
 * bytes). prom-client's `inc(labels)` builds a key string from the labels on each call; on a
 * 32-byte echo that was a fifth of the server's allocation (V8's sampling heap profiler, 5,000
 * echoes), and the young-generation collections it drives show up in the round trip's tail. Here a
 * count costs two `Map` lookups of interned strings and a store into a `Float64Array`; the metric
 * sees the same totals whenever it is scraped.
 *
 * @module
 */

/** Counts by (first, second) label values, drained into a metric on collection. */
export class CounterBatch {
  readonly #slots = new Map<string, Map<string, number>>();
  readonly #keys: [string, string][] = [];
  #counts = new Float64Array(16);

  /** Adds `n` to the count of (`first`, `second`). */
  add(first: string, second: string, n = 1): void {
    let row = this.#slots.get(first);
    if (row === undefined) this.#slots.set(first, row = new Map());
    let slot = row.get(second);
    if (slot === undefined) slot = this.#newSlot(row, first, second);
    this.#counts[slot]! += n;
  }

  /** Hands every count added since the last drain to `each` (non-zero ones only) and zeroes it. */
  drain(each: (first: string, second: string, n: number) => void): void {
    const counts = this.#counts;
    for (let slot = 0; slot < this.#keys.length; slot++) {
      const n = counts[slot]!;
      if (n === 0) continue;
      counts[slot] = 0;
      const [first, second] = this.#keys[slot]!;
      each(first, second, n);
    }
  }

  #newSlot(row: Map<string, number>, first: string, second: string): number {
    const slot = this.#keys.length;
    this.#keys.push([first, second]);
    row.set(second, slot);
    if (slot >= this.#counts.length) {
      const grown = new Float64Array(this.#counts.length * 2);
      grown.set(this.#counts);
      this.#counts = grown;
    }
    return slot;
  }
}
