/**
 * Overload protection of the server core, on by default:
 *
 * - {@linkcode DialLimits}: at most `maxPendingDialsPerFrontend` dials of one frontend connection
 *   wait for agents at once, and an agent carries at most `maxConnectionsPerAgent` connections
 *   (established plus pending). A dial over a limit is refused as `server-overloaded`; a dial for
 *   a full agent goes to another agent when the proxy strategy offers one.
 * - {@linkcode ConnectRateLimiter}: a token bucket on agent handshakes, answering with a retry
 *   hint when an agent must wait.
 * - {@linkcode WarnThrottle}: at most one WARN line per interval for a storm of refusals, with the
 *   number of refusals it stands for.
 *
 * Nothing here does I/O; time comes from the caller.
 *
 * @module
 */

import type { Logger } from "@knp/core/log";
import type { DialErrorKind } from "@knp/core/dial_errors";

/** Default of `--knp-max-pending-dials-per-frontend`. */
export const DEFAULT_MAX_PENDING_DIALS_PER_FRONTEND = 1_000;
/** Default of `--knp-max-connections-per-agent`. */
export const DEFAULT_MAX_CONNECTIONS_PER_AGENT = 10_000;
/** Default of `--knp-agent-connect-rate` (handshakes per second). */
export const DEFAULT_AGENT_CONNECT_RATE = 100;
/** Default of `--knp-agent-connect-burst`. */
export const DEFAULT_AGENT_CONNECT_BURST = 200;
/** Default of `--knp-max-message-size` (upstream's gRPC limit plus framing headroom). */
export const DEFAULT_MAX_MESSAGE_SIZE = 4 * 1024 * 1024 + 1024;
/**
 * Trailing metadata key of a refused agent handshake on gRPC (status `RESOURCE_EXHAUSTED`): the
 * milliseconds to wait before the next attempt, gRPC's standard server pushback key.
 */
export const RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms";

/** Answer of {@linkcode ConnectRateLimiter.admit}. */
export type Admission = { ok: true } | { ok: false; retryAfterMs: number };

/**
 * A token bucket: `ratePerSecond` tokens a second, at most `burst` saved up. Each admitted
 * handshake takes one token; without one, the answer says when the next token is due.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * const bucket = new ConnectRateLimiter({ ratePerSecond: 10, burst: 1 }, 0);
 * assert.deepEqual(bucket.admit(0), { ok: true });
 * assert.deepEqual(bucket.admit(0), { ok: false, retryAfterMs: 100 });
 * assert.deepEqual(bucket.admit(100), { ok: true });
 * ```
 */
export class ConnectRateLimiter {
  readonly #rate: number;
  readonly #burst: number;
  #tokens: number;
  #last: number;

  /** A full bucket at time `now` (ms). A rate of 0 admits everything. */
  constructor(limits: { ratePerSecond: number; burst: number }, now: number) {
    this.#rate = limits.ratePerSecond;
    this.#burst = Math.max(1, limits.burst);
    this.#tokens = this.#burst;
    this.#last = now;
  }

  /** Takes a token at time `now` (ms, monotonic), or says how long until one is due. */
  admit(now: number): Admission {
    if (this.#rate <= 0) return { ok: true };
    const elapsed = Math.max(0, now - this.#last);
    this.#last = Math.max(this.#last, now);
    this.#tokens = Math.min(this.#burst, this.#tokens + elapsed * this.#rate / 1000);
    if (this.#tokens >= 1) {
      this.#tokens -= 1;
      return { ok: true };
    }
    return { ok: false, retryAfterMs: Math.ceil((1 - this.#tokens) * 1000 / this.#rate) };
  }
}

/**
 * At most one WARN line per `intervalMs` for one kind of refusal; the line carries `refused`, the
 * number of refusals since the previous line.
 */
export class WarnThrottle {
  readonly #intervalMs: number;
  readonly #now: () => number;
  readonly #last = new Map<string, { at: number; refused: number }>();

  /** A throttle reading time from `now` (ms). */
  constructor(now: () => number, intervalMs = 10_000) {
    this.#now = now;
    this.#intervalMs = intervalMs;
  }

  /** Logs `message` at WARN unless one line of `kind` went out within the interval. */
  warn(log: Logger, kind: string, message: string, fields: Record<string, unknown>): void {
    const now = this.#now();
    const entry = this.#last.get(kind);
    if (entry && now - entry.at < this.#intervalMs) {
      entry.refused++;
      return;
    }
    const refused = (entry?.refused ?? 0) + 1;
    this.#last.set(kind, { at: now, refused: 0 });
    log.warn(message, { ...fields, refused, intervalMs: this.#intervalMs });
  }
}

/**
 * Live items counted under keys, where an item may stop counting on its own (a dial that left the
 * pending state). Counts are exact when asked with {@linkcode LazyCounter.count}: stale items are
 * pruned only when a key's set reaches `threshold`, so ordinary dials cost O(1).
 */
export class LazyCounter<K, V> {
  readonly #sets = new Map<K, Set<V>>();
  readonly #counts: (item: V) => boolean;

  /** `counts(item)` tells whether an item still counts. */
  constructor(counts: (item: V) => boolean) {
    this.#counts = counts;
  }

  /** Items of `key` that still count, exact once the set reaches `threshold`. */
  count(key: K, threshold: number): number {
    const set = this.#sets.get(key);
    if (!set) return 0;
    if (set.size < threshold) return set.size;
    for (const item of set) if (!this.#counts(item)) set.delete(item);
    if (set.size === 0) this.#sets.delete(key);
    return set.size;
  }

  /** Counts `item` under `key`. */
  add(key: K, item: V): void {
    const set = this.#sets.get(key);
    if (set) set.add(item);
    else this.#sets.set(key, new Set([item]));
  }

  /** Forgets `item` under `key` (it ended). */
  delete(key: K, item: V): void {
    const set = this.#sets.get(key);
    if (!set?.delete(item)) return;
    if (set.size === 0) this.#sets.delete(key);
  }

  /** Number of keys held (for tests: proves dead keys are let go). */
  get keys(): number {
    return this.#sets.size;
  }
}

/**
 * The core's overload options (`ProxyServerOptions` extends them): the limits of
 * {@linkcode DialLimits} and the tunnel idle timeout.
 */
export interface DialLimitOptions {
  /**
   * Most dials of one frontend connection (a gRPC HTTP/2 connection) that may wait for agents at
   * once; more are refused as overloaded. @default 1000
   */
  maxPendingDialsPerFrontend?: number;
  /**
   * Most connections (established plus pending) one agent carries; a dial for a full agent goes
   * to another agent of the strategy, else it is refused as overloaded. @default 10000
   */
  maxConnectionsPerAgent?: number;
  /**
   * Closes an established tunnel that carried no DATA either way for this long (ms), both ways;
   * 0 turns it off. @default 0
   */
  tunnelIdleTimeoutMs?: number;
}

/** What {@linkcode DialLimits} reads of a frontend connection. */
export interface LimitedDial<B> {
  /** Where the dial is in its life; only `pending` counts as pending. */
  readonly state: string;
  /** The agent carrying it. */
  readonly backend: B | undefined;
}

/** What {@linkcode DialLimits} needs from the core. */
export interface DialLimitsContext<B> {
  /** Established connections of an agent. */
  established(backend: B): number;
  /** The agent's id, for the refusal text. */
  agentId(backend: B): string;
  /** Error text with the knp tag. */
  dialError(text: string, kind: DialErrorKind, agentId?: string): string;
  /** Clock for the log throttle (ms). */
  now(): number;
}

/** The outcome of {@linkcode DialLimits.check}: the agent to use, or the refusal text. */
export interface LimitVerdict<B> {
  /** The agent to carry the dial (the refused one when `refusal` is set). */
  backend: B;
  /** Why the dial is refused; undefined when it may go on. */
  refusal?: string;
}

/** Per-frontend and per-agent dial limits of the core. */
export class DialLimits<B extends object, C extends LimitedDial<B>> {
  readonly maxPerFrontend: number;
  readonly maxPerAgent: number;
  readonly throttle: WarnThrottle;
  readonly #ctx: DialLimitsContext<B>;
  readonly #keys = new WeakMap<C, unknown>();
  readonly #byFrontend = new LazyCounter<unknown, C>((c) => c.state === "pending");
  readonly #byAgent = new LazyCounter<B, C>((c) => c.state === "pending");

  /** Limits from `options` (defaults when absent); `ctx` is the core's view. */
  constructor(options: DialLimitOptions, ctx: DialLimitsContext<B>) {
    this.maxPerFrontend = options.maxPendingDialsPerFrontend ??
      DEFAULT_MAX_PENDING_DIALS_PER_FRONTEND;
    this.maxPerAgent = options.maxConnectionsPerAgent ?? DEFAULT_MAX_CONNECTIONS_PER_AGENT;
    this.#ctx = ctx;
    this.throttle = new WarnThrottle(ctx.now);
  }

  /** Remembers which frontend connection (`key`: e.g. its HTTP/2 session) a stream came on. */
  bind(conn: C, key: unknown): void {
    if (key !== undefined) this.#keys.set(conn, key);
  }

  /** Number of frontend connections and agents with counted dials (for tests). */
  get trackedKeys(): number {
    return this.#byFrontend.keys + this.#byAgent.keys;
  }

  /**
   * Checks a dial against the limits: its frontend's pending dials, then the open connections of
   * `picked` (the caller picks agents with room first: see {@linkcode DialLimits.isFull}).
   */
  check(conn: C, picked: B): LimitVerdict<B> {
    const key = this.#keys.get(conn);
    if (key !== undefined) {
      const n = this.#byFrontend.count(key, this.maxPerFrontend);
      if (n >= this.maxPerFrontend) {
        return {
          backend: picked,
          refusal: this.#ctx.dialError(
            `server overloaded: this frontend connection has ${n} dials waiting for agents ` +
              `(limit ${this.maxPerFrontend} per frontend connection)`,
            "server-overloaded",
          ),
        };
      }
    }
    return this.#checkAgent(picked);
  }

  #checkAgent(picked: B): LimitVerdict<B> {
    if (!this.isFull(picked)) return { backend: picked };
    const agentId = this.#ctx.agentId(picked);
    const open = this.#open(picked);
    return {
      backend: picked,
      refusal: this.#ctx.dialError(
        `server overloaded: agent ${agentId} has ${open} open connections ` +
          `(limit ${this.maxPerAgent} per agent)`,
        "server-overloaded",
        agentId,
      ),
    };
  }

  #open(backend: B): number {
    const established = this.#ctx.established(backend);
    return established + this.#byAgent.count(backend, this.maxPerAgent - established);
  }

  /** Whether `backend` carries `maxPerAgent` connections: the proxy strategies skip it. */
  isFull(backend: B): boolean {
    return this.#open(backend) >= this.maxPerAgent;
  }

  /**
   * Logs a refused (overloaded) dial at WARN: at most one line per interval, carrying how many
   * dials it stands for, so a storm does not flood the log.
   */
  warnRefused(log: Logger, refusal: string): void {
    this.throttle.warn(log, "dial refused", "dial refused", { error: refusal });
  }

  /** Counts a dial that went to its agent (now pending). */
  admitted(conn: C): void {
    const key = this.#keys.get(conn);
    if (key !== undefined) this.#byFrontend.add(key, conn);
    if (conn.backend) this.#byAgent.add(conn.backend, conn);
  }

  /** Forgets a frontend stream that ended. */
  forget(conn: C): void {
    const key = this.#keys.get(conn);
    if (key !== undefined) this.#byFrontend.delete(key, conn);
    if (conn.backend) this.#byAgent.delete(conn.backend, conn);
  }
}
