/**
 * Backend selection: storages keyed by agent ID, by advertised host or by advertised CIDR, and the
 * ordered proxy strategies that pick a backend for a dial: upstream's `default`, `destHost` and
 * `defaultRoute` (same candidates and order as upstream), and knp's `destCIDR` (the agent whose
 * `cidr` identifier holds the destination IP, longest prefix first). How a strategy chooses among
 * its candidates (accept predicate, draining, zone, load) is `./routing.ts`.
 *
 * @module
 */

import { removePortFromHost } from "@knp/proto";
import type { Backend } from "./backend.ts";
import { type IpPrefix, parseCidr, PrefixTable, targetAddresses } from "./prefix_table.ts";
import { bestOf, pickByChoice, type PickContext, type ZoneMap } from "./routing.ts";

/**
 * A proxy strategy name, as on the `--proxy-strategies` flag: upstream's three, and knp's
 * `destCIDR`.
 */
export type ProxyStrategy = "default" | "destHost" | "defaultRoute" | "destCIDR";

const STRATEGIES: ReadonlySet<string> = new Set<ProxyStrategy>([
  "default",
  "destHost",
  "defaultRoute",
  "destCIDR",
]);

/**
 * Parses `--proxy-strategies` the way upstream's `ParseProxyStrategies` does: a comma list in
 * order; empty items are skipped, other items are taken as they are (no trimming). knp also knows
 * `destCIDR`.
 *
 * @param text The flag value, e.g. `"destHost,default"`.
 * @returns The strategies in order.
 * @throws {Error} `unknown proxy strategy: X` or `proxy strategies cannot be empty`, upstream's
 * messages (the options validation prefixes the flag name).
 */
export function parseProxyStrategies(text: string): ProxyStrategy[] {
  const out: ProxyStrategy[] = [];
  for (const s of text.split(",")) {
    if (s === "") continue;
    if (!STRATEGIES.has(s)) throw new Error(`unknown proxy strategy: ${s}`);
    out.push(s as ProxyStrategy);
  }
  if (out.length === 0) throw new Error("proxy strategies cannot be empty");
  return out;
}

/** How the manager's strategies choose: randomness, load, destination zones. */
export interface RoutingOptions {
  /** Random numbers in [0, 1). @default Math.random */
  random?: () => number;
  /**
   * Open connections of an agent; with it, equal candidates are compared by load (power of two
   * choices). Without it the pick is upstream's random one.
   */
  load?: (backend: Backend) => number;
  /** Zones of destination addresses (`--knp-zone-cidrs`); none: no zone preference. */
  zones?: ZoneMap;
}

const ACCEPT_ALL = () => true;

/** The full context of one pick, from what the caller gave. */
function contextOf(ctx: Partial<PickContext>, random: () => number): PickContext {
  return {
    accept: ctx.accept ?? ACCEPT_ALL,
    zone: ctx.zone,
    load: ctx.load,
    random: ctx.random ?? random,
  };
}

/** What every strategy's storage does. */
export interface Storage {
  /** The proxy strategy whose keys this storage uses. */
  readonly strategy: ProxyStrategy;
  /** Number of distinct keys (agents, hosts or prefixes). */
  readonly size: number;
  /** Stores `backend` under its keys. */
  add(backend: Backend): void;
  /** Removes `backend` from its keys. */
  remove(backend: Backend): void;
  /** Picks a backend for a dial to `address`, or undefined when this strategy has none. */
  pick(address: string, ctx?: Partial<PickContext>): Backend | undefined;
}

/**
 * Backends under keys (`default`, `destHost`, `defaultRoute`). Several streams may share a key (an
 * agent reconnecting, or one host advertised by several agents); the best-ranked one is used.
 */
export class BackendStorage implements Storage {
  /** The proxy strategy whose keys this storage uses. */
  readonly strategy: Exclude<ProxyStrategy, "destCIDR">;
  #byKey = new Map<string, Backend[]>();
  #keys: string[] = [];
  #random: () => number;

  /** Storage for `strategy`; `random` picks among keys. */
  constructor(strategy: Exclude<ProxyStrategy, "destCIDR">, random: () => number = Math.random) {
    this.strategy = strategy;
    this.#random = random;
  }

  /** Keys under which `backend` is stored by this strategy. */
  keysOf(backend: Backend): string[] {
    switch (this.strategy) {
      case "default":
        return [backend.agentId];
      case "defaultRoute":
        return backend.identifiers.defaultRoute ? [backend.agentId] : [];
      case "destHost": {
        const { host, ipv4, ipv6 } = backend.identifiers;
        return [...new Set([...host, ...ipv4, ...ipv6])];
      }
    }
  }

  /** Stores `backend` under its keys. */
  add(backend: Backend): void {
    for (const key of this.keysOf(backend)) {
      const list = this.#byKey.get(key);
      if (!list) {
        this.#byKey.set(key, [backend]);
        this.#keys.push(key);
      } else if (!list.includes(backend)) list.push(backend);
    }
  }

  /** Removes `backend` from its keys. */
  remove(backend: Backend): void {
    for (const key of this.keysOf(backend)) {
      const list = this.#byKey.get(key);
      if (!list) continue;
      const i = list.indexOf(backend);
      if (i >= 0) list.splice(i, 1);
      if (list.length === 0) {
        this.#byKey.delete(key);
        const k = this.#keys.indexOf(key);
        this.#keys[k] = this.#keys[this.#keys.length - 1]!;
        this.#keys.pop();
      }
    }
  }

  /** Number of distinct keys (agents, or hosts for destHost). */
  get size(): number {
    return this.#keys.length;
  }

  /**
   * Picks a backend for a dial to `address`, or undefined when this strategy has none: for
   * `destHost` the best of the agents under the exact host (port stripped), else a choice among
   * all keys (see `pickByChoice`).
   */
  pick(address: string, ctx: Partial<PickContext> = {}): Backend | undefined {
    const full = contextOf(ctx, this.#random);
    if (this.strategy === "destHost") {
      const list = this.#byKey.get(removePortFromHost(address));
      return list ? bestOf(list, full)?.backend : undefined;
    }
    const keys = this.#keys, byKey = this.#byKey;
    return pickByChoice({ length: keys.length, at: (i) => byKey.get(keys[i]!)! }, full);
  }
}

/**
 * knp's `destCIDR` strategy: agents under the prefixes of their `cidr` identifiers (unparsable
 * ones are ignored). A dial to an IP goes to the longest prefix holding it that has a non-draining
 * candidate, else to the longest one with a draining candidate; a name matches nothing.
 */
export class CidrStorage implements Storage {
  /** Always `destCIDR`. */
  readonly strategy = "destCIDR";
  readonly #table = new PrefixTable<Backend>();
  readonly #random: () => number;

  /** Storage whose ties among equal candidates draw from `random`. */
  constructor(random: () => number = Math.random) {
    this.#random = random;
  }

  /** The parsable prefixes `backend` advertises. */
  prefixesOf(backend: Backend): IpPrefix[] {
    return backend.identifiers.cidr.map(parseCidr).filter((p) => p !== undefined);
  }

  /** Stores `backend` under its prefixes. */
  add(backend: Backend): void {
    for (const prefix of this.prefixesOf(backend)) this.#table.add(prefix, backend);
  }

  /** Removes `backend` from its prefixes. */
  remove(backend: Backend): void {
    for (const prefix of this.prefixesOf(backend)) this.#table.remove(prefix, backend);
  }

  /** Number of distinct prefixes. */
  get size(): number {
    return this.#table.size;
  }

  /** Picks the agent for a dial to `address` (see the class doc), or undefined. */
  pick(address: string, ctx: Partial<PickContext> = {}): Backend | undefined {
    const target = targetAddresses(address);
    if (target === undefined) return undefined;
    const full = contextOf(ctx, this.#random);
    let fallback: Backend | undefined;
    for (const match of this.#table.matches(target)) {
      const choice = bestOf(match.values, full);
      if (choice === undefined) continue;
      if (choice.rank < 2) return choice.backend;
      fallback ??= choice.backend;
    }
    return fallback;
  }
}

/** Which strategy picked which backend, and the destination's zone (undefined: none known). */
export interface PickExplanation {
  /** The backend picked. */
  readonly backend: Backend;
  /** The strategy whose storage had it. */
  readonly strategy: ProxyStrategy;
  /** The destination's zone from `--knp-zone-cidrs`. */
  readonly zone: string | undefined;
}

/** The ordered strategies of a server. */
export class BackendManager {
  /** One storage per strategy, in order. */
  readonly storages: Storage[];
  /** Every stored backend (the status page and readiness read it). */
  readonly agents: Set<Backend> = new Set();
  /** How the latest successful pick chose (the dial explainer reads it right after a pick). */
  lastPick: PickExplanation | undefined;
  readonly #options: RoutingOptions;

  /** A manager for `strategies`, tried in order. */
  constructor(strategies: ProxyStrategy[], options: RoutingOptions = {}) {
    this.#options = options;
    const random = options.random ?? Math.random;
    this.storages = strategies.map((s) =>
      s === "destCIDR" ? new CidrStorage(random) : new BackendStorage(s, random)
    );
  }

  /** Stores `backend` in every strategy's storage. */
  add(backend: Backend): void {
    this.agents.add(backend);
    for (const s of this.storages) s.add(backend);
  }

  /** Removes `backend` from every storage. */
  remove(backend: Backend): void {
    this.agents.delete(backend);
    for (const s of this.storages) s.remove(backend);
  }

  /**
   * First strategy that has a backend for `address` wins. Backends `accept` rejects (e.g. agents
   * at their connection limit) are skipped, as if absent: the strategy then picks another of its
   * candidates, or the next strategy is tried.
   */
  pick(address: string, accept?: (backend: Backend) => boolean): Backend | undefined {
    const { zones, load } = this.#options;
    const ctx: Partial<PickContext> = {
      ...(accept ? { accept } : {}),
      ...(zones ? { zone: zones.zoneOf(address) } : {}),
      ...(load ? { load } : {}),
    };
    for (const s of this.storages) {
      const b = s.pick(address, ctx);
      if (b) {
        this.lastPick = { backend: b, strategy: s.strategy, zone: ctx.zone };
        return b;
      }
    }
    return undefined;
  }

  /**
   * {@linkcode BackendManager.pick} skipping the backends `full` says are at their connection
   * limit; when every candidate is full, the pick that ignores the limit (for the caller to refuse
   * as overloaded, naming it).
   */
  pickWithRoom(address: string, full: (backend: Backend) => boolean): Backend | undefined {
    return this.pick(address, (b) => !full(b)) ?? this.pick(address);
  }

  /** Ready iff the first strategy has at least one backend (upstream's readiness rule). */
  get ready(): boolean {
    return (this.storages[0]?.size ?? 0) > 0;
  }
}

/** The core's routing options (`ProxyServerOptions` extends them). */
export interface CoreRoutingOptions {
  /** Proxy strategies, tried in order. @default ["default"] */
  strategies?: ProxyStrategy[];
  /** Random source for picking agents. @default Math.random */
  random?: () => number;
  /** Zones of destination addresses (`--knp-zone-cidrs`): agents in a dial's zone are preferred. */
  zones?: ZoneMap;
}

/**
 * The core's manager: `options.strategies`, equal candidates compared by their open connections
 * (`Backend.openConnections`), agents in a destination's zone preferred.
 */
export function coreBackendManager(options: CoreRoutingOptions): BackendManager {
  return new BackendManager(options.strategies ?? ["default"], {
    ...(options.random ? { random: options.random } : {}),
    ...(options.zones ? { zones: options.zones } : {}),
    load: (b) => b.openConnections,
  });
}
