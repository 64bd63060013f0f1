/**
 * The agent's server-set flags: knp's `--knp-server-ping-interval` and
 * `--knp-server-ping-timeout`, and the checks of upstream's `--probe-interval` and of
 * `--proxy-server-host` (which knp also takes as a list). The ping flags and `--probe-interval`
 * make the agent notice a server that vanished without closing its connections within seconds,
 * rather than after the 1 h `--keepalive-time` (see `server_liveness.ts`).
 *
 * @module
 */

import type { FlagSpec } from "@knp/cli/flags";
import { invalidFlag } from "@knp/cli/flags";
import { showDuration } from "@knp/cli/flag_checks";
import type { LivenessOptions } from "./server_liveness.ts";
import { serverHostEntries } from "./server_addresses.ts";

/** The server-set fields of the agent's options (durations in ms). */
export interface AgentServerSetOptions {
  /** `--proxy-server-host` (upstream's; knp: also a comma list, see `server_addresses.ts`). */
  proxyServerHost: string;
  /** `--probe-interval` (upstream's): how often each server connection is checked. @default 1000 */
  probeInterval: number;
  /** `--knp-server-ping-interval`: probe a server silent this long; 0 = never. @default 10000 */
  knpServerPingInterval: number;
  /** `--knp-server-ping-timeout`: drop a server that answers no probe this long. @default 5000 */
  knpServerPingTimeout: number;
}

/** The server-liveness flags, spread into `AGENT_FLAGS`. */
export const AGENT_SERVER_SET_FLAGS: readonly FlagSpec[] = [
  {
    name: "knp-server-ping-interval",
    type: "duration",
    default: 10_000,
    help: "knp only: probe a server connection that received nothing for this long (an empty " +
      "DATA both knp and upstream servers answer); 0 disables. Checked every --probe-interval.",
    implemented: true,
  },
  {
    name: "knp-server-ping-timeout",
    type: "duration",
    default: 5_000,
    help: "knp only: drop a server connection whose probe got no answer for this long (a " +
      "server that vanished without closing it); a new connection to the same server ID " +
      "replaces a held one that fails such a probe.",
    implemented: true,
  },
];

/**
 * Checks the liveness flags.
 * @throws {KnpError} `INVALID_FLAG` naming the flag
 */
export function validateAgentServerSetOptions(o: AgentServerSetOptions): void {
  if (serverHostEntries(o.proxyServerHost).length === 0) {
    throw invalidFlag(`--proxy-server-host: names no host: "${o.proxyServerHost}"`);
  }
  if (!(o.probeInterval > 0)) {
    throw invalidFlag(`--probe-interval: must be > 0, got ${showDuration(o.probeInterval)}`);
  }
  if (!(o.knpServerPingInterval >= 0)) {
    throw invalidFlag(
      `--knp-server-ping-interval: must be >= 0, got ${showDuration(o.knpServerPingInterval)}`,
    );
  }
  if (!(o.knpServerPingTimeout > 0)) {
    throw invalidFlag(
      `--knp-server-ping-timeout: must be > 0, got ${showDuration(o.knpServerPingTimeout)}`,
    );
  }
}

/** The `ClientSet`'s liveness option for validated options. */
export function livenessOf(o: AgentServerSetOptions): LivenessOptions | "off" {
  if (o.knpServerPingInterval === 0) return "off";
  return {
    idleMs: o.knpServerPingInterval,
    timeoutMs: o.knpServerPingTimeout,
    checkMs: o.probeInterval,
  };
}
