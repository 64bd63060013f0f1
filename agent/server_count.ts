/**
 * Where the agent's server count comes from. Always: the `servercount` header of the servers'
 * answers (upstream's response-based count). With `--count-server-leases`: the server Leases
 * (`lease_counter.ts`), combined as `--server-count-source` says — `default` (or empty): the
 * Lease count; `max`: the larger of both. Never below 1.
 *
 * How `ClientSet` consumes it: its `serverCount` is `counter.count(lastServercountHeader)`, and
 * `counter.onChange` makes it run a sync round at once (a higher count means a server to find).
 *
 * @module
 */

/** A count of servers other than the `servercount` headers (the Leases). */
export interface ServerCountSource {
  /** The count (at least 1), or undefined while none is known yet (use the servers' count). */
  serverCount(): number | undefined;
  /** Calls `listener` whenever `serverCount()` changes; returns the unsubscribe function. */
  onChange(listener: () => void): () => void;
}

/** What `ClientSet` asks: the count to hold, given the last `servercount` header. */
export interface ServerCounter {
  /** The number of servers to hold (at least 1); `responseCount` is the last header (0: none). */
  count(responseCount: number): number;
  /** Calls `listener` whenever the count may have changed; returns the unsubscribe function. */
  onChange(listener: () => void): () => void;
}

/** `--server-count-source`. */
export type ServerCountMode = "" | "default" | "max";

/**
 * Upstream's `aggregateServerCounter`: the response count alone without Leases; with them the
 * Lease count (`default`) or the larger of both (`max`); 0 becomes 1. A Lease count not known
 * yet (the API never answered) falls back to the response count.
 */
export function aggregateServerCount(
  mode: string,
  leaseCount: number | undefined,
  responseCount: number,
): number {
  const responses = responseCount > 0 ? responseCount : 1;
  if (leaseCount === undefined) return responses;
  const n = mode === "max" ? Math.max(leaseCount, responses) : leaseCount;
  return n > 0 ? n : 1;
}

/** The {@linkcode ServerCounter} of `source` combined as `mode` says. */
export function serverCounter(source: ServerCountSource, mode: string): ServerCounter {
  return {
    count: (responseCount) => aggregateServerCount(mode, source.serverCount(), responseCount),
    onChange: (listener) => source.onChange(listener),
  };
}
