/**
 * The server's Lease controller (`--enable-lease-controller`), as upstream's: it keeps the Lease
 * `konnectivity-proxy-server-<serverID>` in `--lease-namespace` with the `--lease-label` labels,
 * `holderIdentity` = server ID and `leaseDurationSeconds` 30, renewed every 15 s (+ up to 4 %
 * jitter, counted from the end of the previous renewal); and every 15 s it deletes expired Leases
 * that carry the labels (with a resourceVersion precondition, so a Lease renewed meanwhile is
 * kept). `stop()` deletes the server's own Lease, as upstream's `Stop()` does at shutdown.
 *
 * Degrades instead of failing: a renewal that fails is logged and retried (100 ms doubling to
 * 7 s, as upstream's lease helper), and never stops the server. Beyond upstream, garbage
 * collection waits until this server has reached the API without a failure for one Lease
 * duration: after an API outage every live server has had time to renew before anyone culls,
 * so a live server's Lease is not deleted because the outage kept it from being renewed.
 *
 * @module
 */

import { errorMessage } from "@knp/core/errors";
import { type Logger, nullLogger } from "@knp/core/log";
import { realTimers, type Timers } from "@knp/core/timers";
import { apiStatusOf, describeApiError } from "@knp/cli/kube_client";
import {
  formatLabels,
  isLeaseValid,
  type LeaseRecord,
  leaseRecord,
  microTime,
} from "@knp/cli/kube_leases";

/** A Lease to write (`resourceVersion` set: an update of that version). */
export interface LeaseWrite {
  name: string;
  labels: Record<string, string>;
  holderIdentity: string;
  durationSeconds: number;
  /** ms since the epoch. */
  renewTime: number;
  /** ms since the epoch; kept from the Lease read. */
  acquireTime?: number | undefined;
  resourceVersion?: string | undefined;
}

/** The Lease calls of the controller, in one namespace. Errors carry the HTTP status as `code`. */
export interface LeaseApi {
  /** The API server's URL, for logs. */
  readonly server: string;
  /** The Lease, or undefined when there is none (404). */
  get(name: string, signal: AbortSignal): Promise<LeaseRecord | undefined>;
  create(lease: LeaseWrite, signal: AbortSignal): Promise<LeaseRecord>;
  /** An update; 409 when `resourceVersion` is stale, 404 when the Lease is gone. */
  replace(lease: LeaseWrite, signal: AbortSignal): Promise<LeaseRecord>;
  list(labelSelector: string, signal: AbortSignal): Promise<LeaseRecord[]>;
  /** Deletes (only at `resourceVersion` when given); false when there was none (404). */
  delete(name: string, resourceVersion: string | undefined, signal: AbortSignal): Promise<boolean>;
}

/** Options of {@linkcode LeaseController}. */
export interface LeaseControllerOptions {
  api: LeaseApi;
  /** `--server-id`: the holder identity. */
  serverId: string;
  /** The Lease name (`konnectivity-proxy-server-<serverID>`). */
  leaseName: string;
  /** `--lease-label`: put on the Lease and selecting the Leases garbage collection looks at. */
  labels: Record<string, string>;
  /** `leaseDurationSeconds`. @default 30 */
  durationSeconds?: number;
  /** Renewal interval. @default 15000 */
  renewIntervalMs?: number;
  /** Garbage-collection interval. @default 15000 */
  gcIntervalMs?: number;
  /** Bound on one API call. @default 10000 */
  requestTimeoutMs?: number;
  /** Bound on deleting the own Lease at `stop()`. @default 3000 */
  stopTimeoutMs?: number;
  /** Monotonic clock and timers. @default realTimers */
  timers?: Timers;
  /** Wall clock (Lease times), ms since the epoch. @default Date.now */
  wallClock?: () => number;
  /** Random source of the renewal jitter. @default Math.random */
  random?: () => number;
  logger?: Logger;
}

/** Upstream's renewal jitter factor (`JitterUntil(..., 0.04, sliding)`). */
export const RENEW_JITTER = 0.04;
/** First retry delay after a failed renewal; doubles up to {@linkcode RETRY_CAP_MS}. */
export const RETRY_FIRST_MS = 100;
/** Largest retry delay after failed renewals. */
export const RETRY_CAP_MS = 7_000;

/** The delay before the next renewal: jittered interval after a success, backoff after failures. */
export function nextRenewalDelay(
  failures: number,
  renewIntervalMs: number,
  random: () => number,
): number {
  if (failures === 0) return renewIntervalMs + renewIntervalMs * RENEW_JITTER * random();
  return Math.min(RETRY_CAP_MS, RETRY_FIRST_MS * 2 ** (failures - 1));
}

/** The expired Leases among `leases` (garbage collection's victims), never `ownName`'s. */
export function expiredLeases(leases: LeaseRecord[], now: number, ownName: string): LeaseRecord[] {
  return leases.filter((l) => l.name !== ownName && !isLeaseValid(l, now));
}

/** Publishes this server's Lease and culls expired ones; see the module doc. */
export class LeaseController {
  readonly #o: LeaseControllerOptions;
  readonly #timers: Timers;
  readonly #wall: () => number;
  readonly #log: Logger;
  readonly #durationS: number;
  readonly #inflight = new Set<AbortController>();
  #latest: LeaseRecord | undefined;
  #failures = 0;
  /** Monotonic time since which every API call succeeded; undefined after a failure. */
  #healthySince: number | undefined;
  #renewTimer: number | undefined;
  #gcTimer: number | undefined;
  #stopped = false;
  #stopping: Promise<void> | undefined;
  #renewals = 0;

  /** A controller that acts on `start()`. */
  constructor(options: LeaseControllerOptions) {
    this.#o = options;
    this.#timers = options.timers ?? realTimers;
    this.#wall = options.wallClock ?? Date.now;
    this.#log = options.logger ?? nullLogger;
    this.#durationS = options.durationSeconds ?? 30;
  }

  /** Successful renewals (creations included). */
  get renewals(): number {
    return this.#renewals;
  }

  /** Renewals that failed in a row (0 when the last one succeeded). */
  get failures(): number {
    return this.#failures;
  }

  /** Renews at once, then on its interval; garbage-collects on its interval. */
  start(): void {
    this.#log.info("lease controller started", {
      lease: this.#o.leaseName,
      labels: formatLabels(this.#o.labels),
      durationSeconds: this.#durationS,
      renewIntervalMs: this.#renewInterval(),
      gcIntervalMs: this.#gcInterval(),
      server: this.#o.api.server,
    });
    this.#scheduleRenewal(0);
    this.#scheduleGc();
  }

  /** Stops renewing and collecting, then deletes the own Lease (bounded; errors are logged). */
  stop(): Promise<void> {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  async #stop(): Promise<void> {
    this.#stopped = true;
    if (this.#renewTimer !== undefined) this.#timers.clearTimeout(this.#renewTimer);
    if (this.#gcTimer !== undefined) this.#timers.clearTimeout(this.#gcTimer);
    for (const ac of this.#inflight) ac.abort(new Error("lease controller stopped"));
    try {
      const deleted = await this.#call(
        (signal) => this.#o.api.delete(this.#o.leaseName, undefined, signal),
        this.#o.stopTimeoutMs ?? 3_000,
      );
      this.#log.info("deleted the server's lease", { lease: this.#o.leaseName, existed: deleted });
    } catch (err) {
      this.#log.warn("could not delete the server's lease; it expires on its own", {
        lease: this.#o.leaseName,
        error: describeApiError(err),
      });
    }
  }

  #renewInterval(): number {
    return this.#o.renewIntervalMs ?? 15_000;
  }

  #gcInterval(): number {
    return this.#o.gcIntervalMs ?? 15_000;
  }

  /** One API call bounded by the request timeout, aborted by `stop()`. */
  async #call<T>(run: (signal: AbortSignal) => Promise<T>, bound?: number): Promise<T> {
    const ac = new AbortController();
    const ms = bound ?? this.#o.requestTimeoutMs ?? 10_000;
    const timer = this.#timers.setTimeout(() => ac.abort(new Error(`no answer in ${ms} ms`)), ms);
    this.#inflight.add(ac);
    try {
      return await run(ac.signal);
    } catch (err) {
      throw ac.signal.aborted ? new Error(errorMessage(ac.signal.reason), { cause: err }) : err;
    } finally {
      this.#inflight.delete(ac);
      this.#timers.clearTimeout(timer);
    }
  }

  #scheduleRenewal(ms: number): void {
    if (this.#stopped) return;
    this.#renewTimer = this.#timers.setTimeout(() => {
      this.#renewTimer = undefined;
      this.#renewTick();
    }, ms);
  }

  async #renewTick(): Promise<void> {
    try {
      const lease = await this.#renew();
      if (this.#stopped) return;
      this.#renewals++;
      if (this.#failures > 0 || this.#renewals === 1) {
        this.#log.info(this.#renewals === 1 ? "lease acquired" : "lease renewed again", {
          lease: lease.name,
          resourceVersion: lease.resourceVersion,
          ...(this.#failures > 0 ? { failedAttempts: this.#failures } : {}),
        });
      } else {
        this.#log.debug("lease renewed", { lease: lease.name, version: lease.resourceVersion });
      }
      this.#failures = 0;
      this.#healthySince ??= this.#timers.now();
    } catch (err) {
      if (this.#stopped) return;
      this.#failures++;
      this.#healthySince = undefined;
      this.#log.warn("lease renewal failed; retrying", {
        lease: this.#o.leaseName,
        error: describeApiError(err),
        failedAttempts: this.#failures,
        retryInMs: nextRenewalDelay(this.#failures, this.#renewInterval(), Math.random),
      });
    }
    this.#scheduleRenewal(
      nextRenewalDelay(this.#failures, this.#renewInterval(), this.#o.random ?? Math.random),
    );
  }

  /** The Lease to write from `current` (the one read, if any) at wall time `now`. */
  #write(current: LeaseRecord | undefined, now: number): LeaseWrite {
    return {
      name: this.#o.leaseName,
      labels: { ...this.#o.labels },
      holderIdentity: this.#o.serverId,
      durationSeconds: this.#durationS,
      renewTime: now,
      acquireTime: current === undefined || current.holderIdentity !== this.#o.serverId
        ? now
        : current.acquireTime,
      resourceVersion: current?.resourceVersion,
    };
  }

  /** Updates the last Lease written; else reads it and updates it, or creates it. */
  async #renew(): Promise<LeaseRecord> {
    const api = this.#o.api;
    if (this.#latest !== undefined) {
      const latest = this.#latest;
      try {
        this.#latest = await this.#call((s) => api.replace(this.#write(latest, this.#wall()), s));
        return this.#latest;
      } catch (err) {
        const status = apiStatusOf(err);
        if (status !== 409 && status !== 404) throw err;
        this.#latest = undefined; // someone else changed or deleted it: read it again
      }
    }
    const current = await this.#call((s) => api.get(this.#o.leaseName, s));
    const write = this.#write(current, this.#wall());
    this.#latest = await this.#call((s) =>
      current === undefined ? api.create(write, s) : api.replace(write, s)
    );
    return this.#latest;
  }

  #scheduleGc(): void {
    if (this.#stopped) return;
    this.#gcTimer = this.#timers.setTimeout(() => {
      this.#gcTimer = undefined;
      if (!this.#settled()) return this.#scheduleGc();
      void this.#gc().finally(() => this.#scheduleGc());
    }, this.#gcInterval());
  }

  /** Whether this server has reached the API without a failure for a whole Lease duration. */
  #settled(): boolean {
    return this.#healthySince !== undefined &&
      this.#timers.now() - this.#healthySince >= this.#durationS * 1000;
  }

  async #gc(): Promise<void> {
    if (this.#stopped) return;
    const selector = formatLabels(this.#o.labels);
    let leases: LeaseRecord[];
    try {
      leases = await this.#call((s) => this.#o.api.list(selector, s));
    } catch (err) {
      if (!this.#stopped) {
        this.#log.warn("could not list leases to garbage-collect", {
          error: describeApiError(err),
        });
      }
      return;
    }
    for (const lease of expiredLeases(leases, this.#wall(), this.#o.leaseName)) {
      if (this.#stopped) return;
      try {
        const deleted = await this.#call((s) =>
          this.#o.api.delete(lease.name, lease.resourceVersion, s)
        );
        if (deleted) this.#log.info("garbage-collected an expired lease", { lease: lease.name });
      } catch (err) {
        // 409: renewed since the list (precondition failed), so it is kept.
        this.#log.info("expired lease not deleted", {
          lease: lease.name,
          error: describeApiError(err),
        });
      }
    }
  }
}

/** Reads a Lease from client-node's answer, which must have a name. */
export function requireLease(object: unknown): LeaseRecord {
  const lease = leaseRecord(object);
  if (lease === undefined) throw new Error("the API answered a Lease without a name");
  return lease;
}

/** The body of a write (renewTime/acquireTime as `MicroTime` text). */
export function leaseBody(namespace: string, w: LeaseWrite): Record<string, unknown> {
  return {
    apiVersion: "coordination.k8s.io/v1",
    kind: "Lease",
    metadata: {
      name: w.name,
      namespace,
      labels: w.labels,
      ...(w.resourceVersion !== undefined ? { resourceVersion: w.resourceVersion } : {}),
    },
    spec: {
      holderIdentity: w.holderIdentity,
      leaseDurationSeconds: w.durationSeconds,
      renewTime: microTime(w.renewTime),
      ...(w.acquireTime !== undefined ? { acquireTime: microTime(w.acquireTime) } : {}),
    },
  };
}
