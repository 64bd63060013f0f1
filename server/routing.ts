/**
 * How a proxy strategy chooses among the agents it may use for a dial (knp's refinement of
 * upstream's "first non-draining, else the first draining one"):
 *
 * 1. An agent the caller's `accept` predicate rejects (one at `--knp-max-connections-per-agent`)
 *    is not a candidate at all.
 * 2. A non-draining agent beats a draining one (upstream's rule).
 * 3. An agent in the destination's zone (its `zone` identifier equals the zone
 *    `--knp-zone-cidrs` gives the destination address) beats one elsewhere. With no zone known for
 *    the destination, every agent counts as in the zone.
 * 4. Among the rest, the one with fewer open connections (established plus pending dials this
 *    server routed to it) wins: an exhaustive comparison for the short lists of one host or prefix,
 *    the power of two choices for `default` and `defaultRoute` (two agents drawn at random, the
 *    less loaded one goes). Ties keep upstream's order (the first in the list, or the first draw).
 *
 * Without a load function the choice is upstream's exactly: one random draw, no comparison.
 *
 * @module
 */

import { identifierValueProblem } from "@knp/proto";
import type { Backend } from "./backend.ts";
import { parseCidr, prefixKey, PrefixTable, targetAddresses } from "./prefix_table.ts";

/** What a strategy needs to choose among its candidates for one dial. */
export interface PickContext {
  /** Candidates it rejects are skipped (treated as absent). */
  readonly accept: (backend: Backend) => boolean;
  /** The destination's zone; undefined when unknown (no zone preference). */
  readonly zone: string | undefined;
  /** Open connections of an agent; undefined: no load comparison (upstream's random pick). */
  readonly load: ((backend: Backend) => number) | undefined;
  /** Random numbers in [0, 1). */
  readonly random: () => number;
}

/** Ranks 0..3 (lower is better): draining adds 2, being outside the destination's zone adds 1. */
export type Rank = 0 | 1 | 2 | 3;

/** A candidate's rank; undefined when `accept` rejects it. */
export function rankOf(backend: Backend, ctx: PickContext): Rank | undefined {
  if (!ctx.accept(backend)) return undefined;
  const away = ctx.zone !== undefined && backend.identifiers.zone !== ctx.zone ? 1 : 0;
  return ((backend.draining ? 2 : 0) + away) as Rank;
}

/** A chosen candidate and its rank. */
export interface Choice {
  /** The agent stream. */
  readonly backend: Backend;
  /** Its rank. */
  readonly rank: Rank;
}

function lighter(a: Backend, b: Backend, ctx: PickContext): boolean {
  return ctx.load !== undefined && ctx.load(a) < ctx.load(b);
}

/** The best of an ordered list: lowest rank, then fewest open connections, then the first. */
export function bestOf(list: readonly Backend[], ctx: PickContext): Choice | undefined {
  let best: Choice | undefined;
  for (const backend of list) {
    const rank = rankOf(backend, ctx);
    if (rank === undefined) continue;
    if (!best || rank < best.rank || (rank === best.rank && lighter(backend, best.backend, ctx))) {
      best = { backend, rank };
    }
  }
  return best;
}

/** Keys of a storage, read by index (agent IDs in the order the storage keeps them). */
export interface KeyedLists {
  /** Number of keys. */
  readonly length: number;
  /** The backends under the key at index `i`. */
  at(i: number): readonly Backend[];
}

/** Walks from `start` for the first key (not `skip`) whose best candidate has rank ≤ `worst`. */
function walk(
  keys: KeyedLists,
  start: number,
  ctx: PickContext,
  worst: Rank,
  skip = -1,
): { index: number; choice: Choice } | undefined {
  let found: { index: number; choice: Choice } | undefined;
  for (let step = 0; step < keys.length; step++) {
    const index = (start + step) % keys.length;
    if (index === skip) continue;
    const choice = bestOf(keys.at(index), ctx);
    if (!choice || choice.rank > worst) continue;
    if (!found || choice.rank < found.choice.rank) found = { index, choice };
    if (choice.rank === 0 || skip >= 0) break;
  }
  return found;
}

/**
 * Power of two choices over the keys of `default`/`defaultRoute`: the first draw walks from a
 * random key for the best rank present (stopping at a rank-0 agent, as upstream stops at the first
 * non-draining one); the second walks from another random key for another agent of that rank; the
 * less loaded of the two wins, the first on a tie. Without `ctx.load`, the first draw alone.
 */
export function pickByChoice(keys: KeyedLists, ctx: PickContext): Backend | undefined {
  const n = keys.length;
  if (n === 0) return undefined;
  const first = walk(keys, Math.floor(ctx.random() * n) % n, ctx, 3);
  if (!first || ctx.load === undefined || n === 1) return first?.choice.backend;
  const second = walk(keys, Math.floor(ctx.random() * n) % n, ctx, first.choice.rank, first.index);
  if (!second || second.choice.rank !== first.choice.rank) return first.choice.backend;
  const a = first.choice.backend, b = second.choice.backend;
  return lighter(b, a, ctx) ? b : a;
}

/**
 * The zones of destination addresses, from `--knp-zone-cidrs` (`ZONE=CIDR` items): the longest
 * prefix holding a dial address names its zone. Names (not IP literals) have no zone.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ZoneMap } from "./routing.ts";
 * const zones = ZoneMap.parse(["zone-a=10.0.0.0/16", "zone-b=10.0.7.0/24"]);
 * assert.equal(zones.zoneOf("10.0.1.1:443"), "zone-a");
 * assert.equal(zones.zoneOf("10.0.7.9:443"), "zone-b");
 * assert.equal(zones.zoneOf("example.com:443"), undefined);
 * ```
 */
export class ZoneMap {
  readonly #table = new PrefixTable<string>();
  /** The items as given, for logs. */
  readonly items: readonly string[];

  private constructor(items: readonly string[]) {
    this.items = items;
  }

  /**
   * Parses `ZONE=CIDR` items.
   *
   * @throws {Error} naming the item: not `ZONE=CIDR`, a bad zone or CIDR, or one CIDR given two
   * zones.
   */
  static parse(items: readonly string[]): ZoneMap {
    const map = new ZoneMap(items);
    const seen = new Map<string, string>();
    for (const item of items) {
      const eq = item.indexOf("=");
      const zone = item.slice(0, eq), cidr = item.slice(eq + 1);
      const prefix = eq > 0 ? parseCidr(cidr) : undefined;
      if (prefix === undefined || identifierValueProblem("zone", zone) !== undefined) {
        throw new Error(`"${item}" is not ZONE=CIDR (e.g. us-east-1a=10.0.0.0/16)`);
      }
      const normal = prefixKey(prefix);
      const other = seen.get(normal);
      if (other !== undefined && other !== zone) {
        throw new Error(`"${item}": ${cidr} is already in zone ${other}`);
      }
      seen.set(normal, zone);
      map.#table.add(prefix, zone);
    }
    return map;
  }

  /** Number of prefixes. */
  get size(): number {
    return this.#table.size;
  }

  /** The zone of a dial address (`host:port`); undefined when no prefix holds it. */
  zoneOf(address: string): string | undefined {
    const target = targetAddresses(address);
    return target === undefined ? undefined : this.#table.longest(target)?.[0];
  }
}
