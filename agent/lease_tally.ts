/**
 * `LeaseTally`: the agent's view of the server Leases it watches — which are valid at a given
 * wall-clock instant, and when the next one expires (the instant the count must be taken again;
 * a deadline, not a poll). Pure: fed with Leases and told the time.
 *
 * After an API outage the servers could not renew their Leases either, so a Lease that was still
 * valid when contact was lost is given one more full duration from the moment contact came back
 * (its holder renews within that, or it really is gone). Without that, every Lease would look
 * expired in the first list after an outage longer than a Lease duration, and the count would
 * drop to 1 just when the servers come back.
 *
 * @module
 */

import { leaseExpiresAt, type LeaseRecord } from "@knp/cli/kube_leases";

interface Entry {
  /** ms since the epoch; undefined: invalid (no time or duration). */
  expiresAt: number | undefined;
  durationMs: number;
}

/** Valid-Lease arithmetic over the watched Leases; see the module doc. */
export class LeaseTally {
  readonly #leases = new Map<string, Entry>();
  #grace: { lostAt: number; backAt: number } | undefined;

  /** Leases held (valid or not). */
  get size(): number {
    return this.#leases.size;
  }

  /** Replaces every Lease (a fresh list). */
  reset(leases: readonly LeaseRecord[]): void {
    this.#leases.clear();
    for (const lease of leases) this.upsert(lease);
  }

  /** Adds or updates one Lease (ADDED/MODIFIED). */
  upsert(lease: LeaseRecord): void {
    this.#leases.set(lease.name, {
      expiresAt: leaseExpiresAt(lease),
      durationMs: (lease.durationSeconds ?? 0) * 1000,
    });
  }

  /** Forgets one Lease (DELETED). */
  remove(name: string): void {
    this.#leases.delete(name);
  }

  /**
   * Contact with the API was lost at `lostAt` and is back at `backAt` (wall clock, ms): Leases
   * valid at `lostAt` stay valid until at least `backAt` plus their duration.
   */
  outage(lostAt: number, backAt: number): void {
    this.#grace = { lostAt, backAt };
  }

  /** When `entry` stops counting, with the outage grace. */
  #expiry(entry: Entry): number | undefined {
    const e = entry.expiresAt;
    if (e === undefined) return undefined;
    const g = this.#grace;
    if (g !== undefined && e > g.lostAt) return Math.max(e, g.backAt + entry.durationMs);
    return e;
  }

  /** The Leases valid at `now`. */
  valid(now: number): number {
    let n = 0;
    for (const entry of this.#leases.values()) {
      const e = this.#expiry(entry);
      if (e !== undefined && e > now) n++;
    }
    return n;
  }

  /** Names of the Leases valid at `now` (for logs). */
  validNames(now: number): string[] {
    const names: string[] = [];
    for (const [name, entry] of this.#leases) {
      const e = this.#expiry(entry);
      if (e !== undefined && e > now) names.push(name);
    }
    return names.sort();
  }

  /** The earliest instant after `now` at which a valid Lease expires; undefined if none. */
  nextExpiry(now: number): number | undefined {
    let next: number | undefined;
    for (const entry of this.#leases.values()) {
      const e = this.#expiry(entry);
      if (e !== undefined && e > now && (next === undefined || e < next)) next = e;
    }
    return next;
  }
}
