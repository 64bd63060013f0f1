/**
 * The self rules: where a dial would reach one of this process's own listeners, given the
 * address each is bound to. The server appends them to its deny list so that frontends cannot
 * reach its agent, health or admin ports through the tunnel.
 *
 * @module
 */

import { type DestinationRule, parseDestinationRule, ruleHost } from "./destination_policy.ts";

/** One of a process's own listeners: its bind address (`""` or a wildcard: every address) and port. */
export interface OwnListener {
  /** The address it is bound to; undefined, `""`, `0.0.0.0` and `::` mean every address. */
  readonly host?: string | undefined;
  /** The port; undefined and 0 (not bound) are skipped. */
  readonly port?: number | undefined;
}

/** The hosts through which a dial reaches anything bound on every address of this machine. */
const EVERY_LOCAL_HOST = ["127.0.0.0/8", "0.0.0.0/8", "::1", "::", "localhost", "*.localhost"];

/**
 * Rules (source `self`) denying each of `listeners`' ports where a dial would reach it: for a
 * listener on every address, loopback, the unspecified addresses, `localhost` and `addresses`
 * (the machine's own IPs or names); for one on a loopback address, that address, the unspecified
 * address of its family and `localhost`; for one on another address, that address. `always`
 * (addresses named as the process's own, such as a Service IP in front of it) are denied for every
 * listener. A listener on 127.0.0.1 thus leaves the same port on 127.0.1.14 (someone else's
 * socket) reachable.
 */
export function selfDenyRules(
  addresses: readonly string[],
  listeners: readonly OwnListener[],
  always: readonly string[] = [],
): DestinationRule[] {
  const portsByHost = new Map<string, Set<number>>();
  for (const { host, port } of listeners) {
    if (port === undefined || !(port > 0 && port <= 65535)) continue;
    for (const h of [...hostsReaching(host ?? "", addresses), ...always.filter(specific)]) {
      const ports = portsByHost.get(h) ?? new Set();
      portsByHost.set(h, ports.add(port));
    }
  }
  return [...portsByHost].map(([h, ports]) => {
    const sorted = [...ports].sort((a, b) => a - b);
    return parseDestinationRule(`${ruleHost(h)}:${sorted.join("|")}`, "self");
  });
}

/** Whether `address` names one address (not every one). */
const specific = (address: string) => !["", "0.0.0.0", "::"].includes(address);

/** The hosts of {@linkcode selfDenyRules} for a listener bound on `bind`. */
function hostsReaching(bind: string, addresses: readonly string[]): string[] {
  if (!specific(bind)) {
    return [...EVERY_LOCAL_HOST, ...addresses.filter(specific)];
  }
  const host = bind.replace(/^\[(.*)\]$/, "$1");
  const names = ["localhost", "*.localhost"];
  if (host.startsWith("127.")) return [host, "0.0.0.0/8", ...names]; // 0.0.0.0 reaches 127.0.0.1
  if (host === "::1") return [host, "::", ...names];
  return host === "localhost" ? ["127.0.0.1", "0.0.0.0/8", "::1", "::", ...names] : [host];
}
