/**
 * Backend selection: storages keyed by agent ID or by advertised host, and the ordered proxy
 * strategies (`default`, `destHost`, `defaultRoute`) that pick a backend for a dial.
 *
 * @module
 */

import { removePortFromHost } from "@knp/proto";
import type { Backend } from "./backend.ts";

/** A proxy strategy name, as on the `--proxy-strategies` flag. */
export type ProxyStrategy = "default" | "destHost" | "defaultRoute";

/**
 * Parses `--proxy-strategies` the way upstream's `ParseProxyStrategies` does: a comma list in
 * order; empty items are skipped, other items are taken as they are (no trimming).
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
    if (s !== "default" && s !== "destHost" && s !== "defaultRoute") {
      throw new Error(`unknown proxy strategy: ${s}`);
    }
    out.push(s);
  }
  if (out.length === 0) throw new Error("proxy strategies cannot be empty");
  return out;
}

/**
 * Backends under keys. Several streams may share a key (an agent reconnecting, or one host
 * advertised by several agents); the first non-draining one is used.
 */
export class BackendStorage {
  /** The proxy strategy whose keys this storage uses. */
  readonly strategy: ProxyStrategy;
  #byKey = new Map<string, Backend[]>();
  #keys: string[] = [];
  #random: () => number;

  /** Storage for `strategy`; `random` picks among keys. */
  constructor(strategy: ProxyStrategy, random: () => number = Math.random) {
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

  /** Picks a backend for a dial to `address`, or undefined when this strategy has none. */
  pick(address: string): Backend | undefined {
    if (this.strategy === "destHost") {
      const list = this.#byKey.get(removePortFromHost(address));
      return list ? firstPreferred(list) : undefined;
    }
    const n = this.#keys.length;
    if (n === 0) return undefined;
    const start = Math.floor(this.#random() * n);
    let fallback: Backend | undefined;
    for (let i = 0; i < n; i++) {
      const list = this.#byKey.get(this.#keys[(start + i) % n]!)!;
      const b = firstPreferred(list);
      if (b && !b.draining) return b;
      fallback ??= b;
    }
    return fallback;
  }
}

function firstPreferred(list: Backend[]): Backend | undefined {
  return list.find((b) => !b.draining) ?? list[0];
}

/** The ordered strategies of a server. */
export class BackendManager {
  /** One storage per strategy, in order. */
  readonly storages: BackendStorage[];

  /** A manager for `strategies`, tried in order. */
  constructor(strategies: ProxyStrategy[], random?: () => number) {
    this.storages = strategies.map((s) => new BackendStorage(s, random));
  }

  /** Stores `backend` in every strategy's storage. */
  add(backend: Backend): void {
    for (const s of this.storages) s.add(backend);
  }

  /** Removes `backend` from every storage. */
  remove(backend: Backend): void {
    for (const s of this.storages) s.remove(backend);
  }

  /** First strategy that has a backend for `address` wins. */
  pick(address: string): Backend | undefined {
    for (const s of this.storages) {
      const b = s.pick(address);
      if (b) return b;
    }
    return undefined;
  }

  /** Ready iff the first strategy has at least one backend (upstream's readiness rule). */
  get ready(): boolean {
    return (this.storages[0]?.size ?? 0) > 0;
  }
}
