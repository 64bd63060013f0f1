/**
 * `--knp-direct-destinations` (knp only): destinations the server dials itself instead of
 * through an agent (see direct_backend.ts), written in the destination rule syntax of
 * `@knp/core/destination_policy`. Their permission needs: net to each listed host (Deno cannot
 * express CIDRs or name suffixes: such rules need all of net).
 *
 * @module
 */

import type { FlagSpec } from "@knp/cli/flags";
import type { PermissionNeed } from "@knp/cli/permissions";
import {
  type DestinationRule,
  parseDestinationRules,
  ruleHost,
} from "@knp/core/destination_policy";
import type { Logger } from "@knp/core/log";
import { type DirectRoute, directRoute } from "./direct_backend.ts";

/** The direct-dial fields of the server's options. */
export interface DirectDestinationOptions {
  /** `--knp-direct-destinations`: rules of destinations the server dials itself. @default [] */
  knpDirectDestinations: string[];
}

const FLAG = "--knp-direct-destinations";

/** The direct-dial flag, spread into `SERVER_FLAGS`. */
export const DIRECT_FLAGS: readonly FlagSpec[] = [
  {
    name: "knp-direct-destinations",
    type: "stringSlice",
    default: [],
    help: "knp only: destinations the server dials itself instead of through an agent " +
      "(HOST[:PORTS] rules as --knp-destination-allow), comma-separated, repeatable. The " +
      "destination policy still applies first; such a dial never goes to an agent.",
    implemented: true,
  },
];

/** Parses the flag's rules. @throws {KnpError} `INVALID_FLAG` naming the flag and the rule */
export function directRules(o: DirectDestinationOptions): DestinationRule[] {
  return parseDestinationRules(o.knpDirectDestinations, FLAG);
}

/** Checks the flag. @throws {KnpError} `INVALID_FLAG` naming the flag and the rule */
export function validateDirectOptions(o: DirectDestinationOptions): void {
  directRules(o);
}

/** The core's `direct` option of validated options (nothing when the flag is empty). */
export function directConfig(
  o: DirectDestinationOptions,
  log: Logger,
): { direct?: DirectRoute } {
  const rules = directRules(o);
  if (rules.length === 0) return {};
  log.info("direct destinations: the server dials these itself", {
    rules: rules.map((r) => r.text),
  });
  return { direct: directRoute(rules, log) };
}

/** The host part of a rule's text (IPv6 unbracketed). */
function ruleHostText(text: string): string {
  if (text.startsWith("[")) return text.slice(1, text.indexOf("]"));
  return text.split(":").length > 2 ? text : text.split(":")[0]!;
}

/** Net to one rule's destinations: `host[:port]`, or all of net for ranges Deno cannot name. */
function ruleNeeds(rule: DestinationRule): PermissionNeed[] {
  const reason = FLAG;
  let host: string;
  if (rule.host.kind === "name") host = rule.host.name;
  else if (rule.host.kind === "cidr" && rule.host.prefix === (rule.host.family === 4 ? 32 : 128)) {
    host = ruleHostText(rule.text).replace(/\/\d+$/, "");
  } else return [{ kind: "net", reason: `${reason} (${rule.text}: a CIDR or name range)` }];
  const single = rule.ports.length === 1 && rule.ports[0]!.from === rule.ports[0]!.to;
  if (!single) return [{ kind: "net", value: ruleHost(host), reason }];
  return [{ kind: "net", value: `${ruleHost(host)}:${rule.ports[0]!.from}`, reason }];
}

/** The permission needs of the flag (unparsable rules: none; validation reports them). */
export function directNeeds(o: DirectDestinationOptions): PermissionNeed[] {
  try {
    return directRules(o).flatMap(ruleNeeds);
  } catch {
    return [];
  }
}
