/**
 * The server's routing flag (knp only): `--knp-zone-cidrs` tells the server the zone of
 * destination addresses, so that the proxy strategies prefer agents that advertise the same zone
 * (`--agent-identifiers=zone=...`); with its option field, validation and core configuration.
 *
 * @module
 */

import type { FlagSpec } from "@knp/cli/flags";
import { invalidFlag } from "@knp/cli/flags";
import { ZoneMap } from "./routing.ts";

/** The routing flags, spread into `SERVER_FLAGS`. */
export const ROUTING_FLAGS: readonly FlagSpec[] = [
  {
    name: "knp-zone-cidrs",
    type: "stringSlice",
    default: [],
    help: "knp only: zones of destination addresses as ZONE=CIDR items, comma-separated, " +
      "repeatable (e.g. us-east-1a=10.0.0.0/16,us-east-1b=10.1.0.0/16; longest prefix wins). " +
      "Among the agents a proxy strategy may use for a dial to an IP in a listed CIDR, the " +
      "non-draining ones advertising that zone (--agent-identifiers=zone=us-east-1a) are " +
      "preferred; other agents serve when none of them can. Names are not resolved.",
    implemented: true,
  },
];

/** Option fields of {@linkcode ROUTING_FLAGS}; `ServerOptions` extends it. */
export interface RoutingServerOptions {
  /** `--knp-zone-cidrs` (knp only): `ZONE=CIDR` items. @default [] */
  knpZoneCidrs: string[];
}

/**
 * Checks the routing options: every `--knp-zone-cidrs` item is `ZONE=CIDR` with a valid zone
 * name and CIDR, and no CIDR is given two zones.
 *
 * @throws {KnpError} `INVALID_FLAG` naming the flag and the item.
 */
export function validateRoutingOptions(o: RoutingServerOptions): void {
  routingConfig(o);
}

/**
 * The core's routing configuration from the options.
 *
 * @throws {KnpError} `INVALID_FLAG` on a bad item (validated options have none).
 */
export function routingConfig(o: RoutingServerOptions): { zones?: ZoneMap } {
  if (o.knpZoneCidrs.length === 0) return {};
  try {
    return { zones: ZoneMap.parse(o.knpZoneCidrs) };
  } catch (err) {
    throw invalidFlag(`--knp-zone-cidrs: ${err instanceof Error ? err.message : String(err)}`);
  }
}
