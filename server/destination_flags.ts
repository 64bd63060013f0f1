/**
 * The server's destination policy flags (knp only): which `host:port` frontends may reach
 * through the tunnel. `--knp-destination-allow` / `--knp-destination-deny` take rules (see
 * `@knp/core/destination_policy`); by default the server's own ports (agent, frontend, health,
 * admin, WebSocket link) are denied as well where a dial reaches them — a listener on every
 * address on loopback, `localhost`, the bind and interface addresses; one on 127.0.0.1 there,
 * on `0.0.0.0` and `localhost` — and every one on `--knp-destination-self-addresses`
 * (`--knp-destination-deny-self=false` turns that off).
 *
 * @module
 */

import type { FlagSpec } from "@knp/cli/flags";
import {
  type DestinationPolicy,
  parseDestinationRule,
  parseDestinationRules,
  ruleHost,
} from "@knp/core/destination_policy";
import type { SelfDestinationConfig } from "./destination_guard.ts";

/** The destination policy fields of the server's options. */
export interface DestinationServerOptions {
  /** `--knp-destination-allow`: allow-list rules; empty allows all not denied. @default [] */
  knpDestinationAllow: string[];
  /** `--knp-destination-deny`: deny rules, checked first. @default [] */
  knpDestinationDeny: string[];
  /** `--knp-destination-deny-self`: deny the server's own ports. @default true */
  knpDestinationDenySelf: boolean;
  /** `--knp-destination-self-addresses`: more addresses of this server (pod IP, VIP). @default [] */
  knpDestinationSelfAddresses: string[];
}

const RULE_SYNTAX = "HOST[:PORTS]; HOST = *, name, *.suffix, IP, CIDR ([v6] bracketed " +
  "with ports); PORTS = *, port, a-b, or several joined by |";

/** The destination policy flags, spread into `SERVER_FLAGS`. */
export const DESTINATION_FLAGS: readonly FlagSpec[] = [
  {
    name: "knp-destination-allow",
    type: "stringSlice",
    default: [],
    help: "knp only: destinations frontends may dial, comma-separated, repeatable (" +
      RULE_SYNTAX + "). Empty: every destination no deny rule matches. A denied dial fails " +
      'with kind policy-denied (HTTP 403) and an audit log line "dial denied by destination policy".',
    implemented: true,
  },
  {
    name: "knp-destination-deny",
    type: "stringSlice",
    default: [],
    help: "knp only: destinations frontends may not dial (same syntax as " +
      "--knp-destination-allow); checked before the allow list. Names are matched as " +
      "written, not resolved.",
    implemented: true,
  },
  {
    name: "knp-destination-deny-self",
    type: "bool",
    default: true,
    help: "knp only: deny dials to this server's own ports (agent, frontend, health, admin, " +
      "WebSocket link) where they are reached: on its bind address (a wildcard: loopback, " +
      "localhost and its addresses), and on --knp-destination-self-addresses.",
    implemented: true,
  },
  {
    name: "knp-destination-self-addresses",
    type: "stringSlice",
    default: [],
    help: "knp only: more addresses (IPs or names) of this server for " +
      "--knp-destination-deny-self, e.g. its pod IP and node IP.",
    implemented: true,
  },
];

/**
 * Checks the destination flags: every rule and self address parses.
 *
 * @throws {KnpError} `INVALID_FLAG` naming the flag and the bad rule.
 */
export function validateDestinationOptions(o: DestinationServerOptions): void {
  serverDestinationPolicy(o);
  for (const address of o.knpDestinationSelfAddresses) {
    parseDestinationRule(ruleHost(address), "--knp-destination-self-addresses");
  }
}

/** The policy of the allow and deny flags (without the self rules, added once ports are bound). */
export function serverDestinationPolicy(o: DestinationServerOptions): DestinationPolicy {
  return {
    allow: parseDestinationRules(o.knpDestinationAllow, "--knp-destination-allow"),
    deny: parseDestinationRules(o.knpDestinationDeny, "--knp-destination-deny"),
  };
}

/** The addresses of the server's listeners that name one host (not a wildcard). */
function bindAddresses(o: {
  serverBindAddress: string;
  agentBindAddress: string;
  healthBindAddress: string;
  adminBindAddress: string;
}): string[] {
  return [o.serverBindAddress, o.agentBindAddress, o.healthBindAddress, o.adminBindAddress]
    .filter((a) => a !== "" && a !== "0.0.0.0" && a !== "::");
}

/** The host's interface addresses, when the process may read them (`--allow-sys`); else none. */
function interfaceAddresses(): string[] {
  try {
    const state = Deno.permissions.querySync({ name: "sys", kind: "networkInterfaces" }).state;
    if (state !== "granted") return [];
    return Deno.networkInterfaces().map((i) => i.address.replace(/%.*$/, ""));
  } catch {
    return [];
  }
}

/** The options that name the server's listeners (their addresses are its own). */
type BindOptions = Parameters<typeof bindAddresses>[0];

/**
 * The destination policy part of the server's configuration: the flags' policy, and (unless
 * `--knp-destination-deny-self=false`) the server's own addresses for the self rules —
 * non-wildcard bind addresses and the interface addresses when `--allow-sys` permits reading them
 * (where a listener on every address is reached), and `--knp-destination-self-addresses` (every
 * listener is reached there, as the operator says).
 *
 * @throws {KnpError} `INVALID_FLAG` on a bad rule (validated options have none).
 */
export function destinationConfig(
  o: DestinationServerOptions & BindOptions,
): { destinationPolicy: DestinationPolicy } & SelfDestinationConfig {
  const destinationPolicy = serverDestinationPolicy(o);
  if (!o.knpDestinationDenySelf) return { destinationPolicy };
  const addresses = [...new Set([...bindAddresses(o), ...interfaceAddresses()])];
  const always = o.knpDestinationSelfAddresses;
  return { destinationPolicy, denySelfDestinations: { addresses, always } };
}
