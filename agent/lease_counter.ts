/**
 * `LeaseCounter` (`--count-server-leases`): counts the valid server Leases matching
 * `--lease-label-selector` in `--lease-namespace` through a list and then a watch (never a poll),
 * as a {@linkcode ServerCountSource}. 0 valid Leases count as 1, as upstream.
 *
 * Time: a Lease expires by the clock, so the counter sets one timer to the earliest expiry; when
 * it fires, the list and watch start over (a fresh list confirms the expiry, and proves the API
 * still answers — a watch cut off silently would otherwise let every Lease "expire").
 *
 * Degrades, never to zero: while the API does not answer, the count stays at the last known
 * one (or, if none was ever known, `serverCount()` is undefined and the agent uses the servers'
 * `servercount`); a WARN line says so, and so does {@linkcode LeaseCounter.healthLine}. The list
 * is retried (1 s doubling to 30 s) and the watch resumes when the API is back.
 *
 * @module
 */

import { errorMessage } from "@knp/core/errors";
import { type Logger, nullLogger } from "@knp/core/log";
import { realTimers, type Timers } from "@knp/core/timers";
import type { LeaseRecord } from "@knp/cli/kube_leases";
import { apiStatusOf, describeApiError } from "@knp/cli/kube_client";
import { LeaseTally } from "./lease_tally.ts";
import type { ServerCountSource } from "./server_count.ts";

/** One watch event: ADDED, MODIFIED, DELETED, BOOKMARK (or ERROR, thrown by the API adapter). */
export interface LeaseEvent {
  type: string;
  lease: LeaseRecord | undefined;
  /** The resourceVersion to resume from after this event. */
  resourceVersion: string | undefined;
}

/** The Lease calls of the counter (one namespace). Errors carry an HTTP status as `code`. */
export interface LeaseWatchApi {
  /** The API server's URL, for logs. */
  readonly server: string;
  list(selector: string, signal: AbortSignal): Promise<{
    leases: LeaseRecord[];
    resourceVersion: string;
  }>;
  /**
   * Watches from `resourceVersion`, calling `onEvent` per event; resolves when the API ends the
   * watch, rejects when it fails (`code` 410 when the version is too old).
   */
  watch(
    selector: string,
    resourceVersion: string,
    onEvent: (event: LeaseEvent) => void,
    signal: AbortSignal,
  ): Promise<void>;
}

/** Options of {@linkcode LeaseCounter}. */
export interface LeaseCounterOptions {
  /** The API (loaded lazily: a configuration error rejects `start()`). */
  api: () => Promise<LeaseWatchApi>;
  /** `--lease-label-selector`. */
  selector: string;
  /** `--lease-namespace`, for logs. */
  namespace: string;
  /** Bound on a list. @default 10000 */
  requestTimeoutMs?: number;
  /** First retry delay after a failed list; doubles. @default 1000 */
  retryMs?: number;
  /** Largest retry delay. @default 30000 */
  retryCapMs?: number;
  timers?: Timers;
  /** Wall clock (Lease times). @default Date.now */
  wallClock?: () => number;
  logger?: Logger;
}

/** Counts valid server Leases; see the module doc. */
export class LeaseCounter implements ServerCountSource {
  readonly #o: LeaseCounterOptions;
  readonly #timers: Timers;
  readonly #wall: () => number;
  readonly #log: Logger;
  readonly #tally = new LeaseTally();
  readonly #listeners = new Set<() => void>();
  #api: LeaseWatchApi | undefined;
  #count: number | undefined;
  /** Valid Leases at the last count. */
  #valid: number | undefined;
  /** Wall time of the last answer (list) or event (watch). */
  #lastContact: number | undefined;
  /** Wall time of the last contact before the API was lost; undefined while connected. */
  #lostAt: number | undefined;
  #lastError: string | undefined;
  #connected = false;
  #expiryTimer: number | undefined;
  #session: AbortController | undefined;
  #stopped = false;
  #wake: (() => void) | undefined;

  /** A counter that starts on `start()`. */
  constructor(options: LeaseCounterOptions) {
    this.#o = options;
    this.#timers = options.timers ?? realTimers;
    this.#wall = options.wallClock ?? Date.now;
    this.#log = options.logger ?? nullLogger;
  }

  /** The count (at least 1); undefined until the API first answered. */
  serverCount(): number | undefined {
    return this.#count;
  }

  /** Whether the list/watch is up (false: degraded, the count is the last known). */
  get connected(): boolean {
    return this.#connected;
  }

  /** Calls `listener` when the count changes. */
  onChange(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** One line for the agent's `/readyz?verbose` (informational: it never fails readiness). */
  healthLine(): string {
    if (this.#connected) {
      return `[+]server-leases ok: ${this.#count} server(s) from leases in ${this.#o.namespace}`;
    }
    const kept = this.#count === undefined
      ? "using the servers' count (no lease count known yet)"
      : `keeping the last known count ${this.#count}`;
    return `[+]server-leases degraded: Kubernetes API unreachable (${
      this.#lastError ?? "connecting"
    }); ${kept}`;
  }

  /**
   * Loads the API and starts listing and watching in the background; resolves once the API is
   * loaded (not when it answered).
   *
   * @throws {KnpError} `CONFIG` when the Kubernetes configuration cannot be loaded
   */
  async start(): Promise<void> {
    this.#api = await this.#o.api();
    this.#log.info("counting server leases", {
      namespace: this.#o.namespace,
      selector: this.#o.selector,
      server: this.#api.server,
    });
    void this.#run(this.#api);
  }

  /** Stops watching. */
  stop(): void {
    this.#stopped = true;
    this.#clearExpiry();
    this.#session?.abort(new Error("stopped"));
    this.#wake?.();
  }

  async #run(api: LeaseWatchApi): Promise<void> {
    let failures = 0;
    while (!this.#stopped) {
      const session = new AbortController();
      this.#session = session;
      try {
        let rv = await this.#list(api, session.signal);
        failures = 0;
        while (!this.#stopped && !session.signal.aborted) {
          const began = this.#timers.now();
          rv = await this.#watch(api, rv, session.signal);
          // A watch the API ends at once, again and again, must not spin.
          if (this.#timers.now() - began < 1_000) await this.#sleep(1_000);
        }
      } catch (err) {
        if (this.#stopped) return;
        if (session.signal.aborted || apiStatusOf(err) === 410) continue; // start over at once
        failures++;
        const retryMs = Math.min(
          this.#o.retryCapMs ?? 30_000,
          (this.#o.retryMs ?? 1_000) * 2 ** (failures - 1),
        );
        this.#degrade(err, retryMs);
        await this.#sleep(retryMs);
      }
    }
  }

  /** Lists the Leases (bounded); on success the count is live again. Resolves the version. */
  async #list(api: LeaseWatchApi, session: AbortSignal): Promise<string> {
    const ms = this.#o.requestTimeoutMs ?? 10_000;
    const signal = AbortSignal.any([session, AbortSignal.timeout(ms)]);
    const { leases, resourceVersion } = await api.list(this.#o.selector, signal).catch((err) => {
      throw signal.aborted && !session.aborted
        ? new Error(`no answer in ${ms} ms`, { cause: err })
        : err;
    });
    const now = this.#wall();
    if (this.#lostAt !== undefined) {
      this.#tally.outage(this.#lostAt, now);
      this.#log.info("Kubernetes API reachable again: watching server leases", {
        unreachableMs: now - this.#lostAt,
      });
    }
    this.#lostAt = undefined;
    this.#lastContact = now;
    this.#lastError = undefined;
    this.#connected = true;
    this.#tally.reset(leases);
    this.#recount();
    return resourceVersion;
  }

  /** One watch until the API ends it; resolves the version to resume from. */
  async #watch(api: LeaseWatchApi, from: string, signal: AbortSignal): Promise<string> {
    let rv = from;
    await api.watch(this.#o.selector, from, (event) => {
      this.#lastContact = this.#wall();
      if (event.resourceVersion) rv = event.resourceVersion;
      if (event.lease === undefined) return;
      if (event.type === "DELETED") this.#tally.remove(event.lease.name);
      else if (event.type === "ADDED" || event.type === "MODIFIED") this.#tally.upsert(event.lease);
      else return;
      this.#recount();
    }, signal);
    return rv;
  }

  /** Contact lost: keep the count, stop the expiry timer, say so. */
  #degrade(err: unknown, retryMs: number): void {
    const error = describeApiError(err);
    const first = this.#connected || this.#lastError === undefined;
    this.#connected = false;
    this.#lastError = error;
    // From the last contact: the loss may be noticed late (a watch cut off without a word).
    this.#lostAt ??= this.#lastContact ?? this.#wall();
    this.#clearExpiry();
    const fields = { error, retryInMs: retryMs, serverCount: this.#count ?? "servers' count" };
    if (first) {
      this.#log.warn("Kubernetes API unreachable: keeping the last known server count", fields);
    } else {
      this.#log.debug("Kubernetes API still unreachable", fields);
    }
  }

  /** Counts the valid Leases now, tells listeners of a change, and arms the expiry timer. */
  #recount(): void {
    const now = this.#wall();
    const valid = this.#tally.valid(now);
    if (valid === 0 && this.#valid !== 0) {
      this.#log.warn("No valid leases found, assuming server count of 1", {
        leases: this.#tally.size,
      });
    }
    this.#valid = valid;
    const count = Math.max(1, valid);
    this.#armExpiry(now);
    if (count === this.#count) return;
    this.#count = count;
    this.#log.info("server count from leases", {
      serverCount: count,
      leases: this.#tally.validNames(now),
    });
    for (const listener of this.#listeners) {
      try {
        listener();
      } catch (err) {
        this.#log.warn("server count listener failed", { error: errorMessage(err) });
      }
    }
  }

  #armExpiry(now: number): void {
    this.#clearExpiry();
    const next = this.#tally.nextExpiry(now);
    if (next === undefined || this.#stopped) return;
    // At the deadline: start over with a fresh list, which confirms the expiry.
    this.#expiryTimer = this.#timers.setTimeout(() => {
      this.#expiryTimer = undefined;
      this.#session?.abort(new Error("a lease expired: listing again"));
    }, next - now + 1);
  }

  #clearExpiry(): void {
    if (this.#expiryTimer !== undefined) this.#timers.clearTimeout(this.#expiryTimer);
    this.#expiryTimer = undefined;
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = this.#timers.setTimeout(() => {
        this.#wake = undefined;
        resolve();
      }, ms);
      this.#wake = () => {
        this.#timers.clearTimeout(timer);
        this.#wake = undefined;
        resolve();
      };
    });
  }
}
