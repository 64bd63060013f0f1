/**
 * The `proxy-server` flags of overload protection (knp only, each on by default): pending dials
 * per frontend connection, open connections per agent, the agent connect rate and burst, the
 * largest message, and the (optional) tunnel idle timeout; with their option fields and validation.
 *
 * @module
 */

import type { FlagSpec } from "@knp/cli/flags";
import { invalidFlag } from "@knp/cli/flags";
import { showDuration } from "@knp/cli/flag_checks";
import {
  DEFAULT_AGENT_CONNECT_BURST,
  DEFAULT_AGENT_CONNECT_RATE,
  DEFAULT_MAX_CONNECTIONS_PER_AGENT,
  DEFAULT_MAX_MESSAGE_SIZE,
  DEFAULT_MAX_PENDING_DIALS_PER_FRONTEND,
} from "./overload.ts";

/** Smallest `--knp-max-message-size`: room for a DIAL_REQ with a long address. */
const MIN_MESSAGE_SIZE = 64 * 1024;
/** Largest `--knp-max-message-size` (grpc-js takes a 32-bit length). */
const MAX_MESSAGE_SIZE = 2 ** 31 - 1;

/** The overload-protection flags, merged into the server's flag table. */
export const OVERLOAD_FLAGS: readonly FlagSpec[] = [
  {
    name: "knp-max-pending-dials-per-frontend",
    type: "int",
    default: DEFAULT_MAX_PENDING_DIALS_PER_FRONTEND,
    help: "knp only: most dials of one frontend connection (one gRPC HTTP/2 connection) that " +
      'may wait for agents at once; more are refused as "server overloaded" (HTTP 503).',
    implemented: true,
  },
  {
    name: "knp-max-connections-per-agent",
    type: "int",
    default: DEFAULT_MAX_CONNECTIONS_PER_AGENT,
    help: "knp only: most connections (established plus pending) one agent carries; a dial for " +
      'a full agent goes to another agent of the strategy, else it is refused as "server overloaded".',
    implemented: true,
  },
  {
    name: "knp-agent-connect-rate",
    type: "float",
    default: DEFAULT_AGENT_CONNECT_RATE,
    help: "knp only: agent handshakes admitted per second (token bucket); an agent over it is " +
      "told to retry later (gRPC RESOURCE_EXHAUSTED / HTTP 503 with a retry hint). 0 = no limit.",
    implemented: true,
  },
  {
    name: "knp-agent-connect-burst",
    type: "int",
    default: DEFAULT_AGENT_CONNECT_BURST,
    help: "knp only: agent handshakes admitted at once before --knp-agent-connect-rate applies.",
    implemented: true,
  },
  {
    name: "knp-tunnel-idle-timeout",
    type: "duration",
    default: 0,
    help: "knp only: closes an established tunnel that carried no data either way for this " +
      "long, both ways (CLOSE_REQ to the agent, CLOSE_RSP to the frontend); 0 = off.",
    implemented: true,
  },
  {
    name: "knp-paused-tunnel-timeout",
    type: "duration",
    default: 300_000,
    help: "knp only: closes an HTTP-CONNECT tunnel whose client has sent bytes the far end has " +
      "not taken for this long (the backend stopped reading, or the client left cleanly behind " +
      "its unsent upload, which TCP cannot show); 0 = off.",
    implemented: true,
  },
  {
    name: "knp-max-message-size",
    type: "int",
    default: DEFAULT_MAX_MESSAGE_SIZE,
    help: "knp only: largest gRPC message (bytes) the frontend and agent servers accept.",
    implemented: true,
  },
];

/** Option fields of {@linkcode OVERLOAD_FLAGS}; `ServerOptions` extends it. */
export interface OverloadOptions {
  /** `--knp-max-pending-dials-per-frontend` (knp only). @default 1000 */
  knpMaxPendingDialsPerFrontend: number;
  /** `--knp-max-connections-per-agent` (knp only). @default 10000 */
  knpMaxConnectionsPerAgent: number;
  /** `--knp-agent-connect-rate` (knp only): handshakes per second; 0 = no limit. @default 100 */
  knpAgentConnectRate: number;
  /** `--knp-agent-connect-burst` (knp only). @default 200 */
  knpAgentConnectBurst: number;
  /** `--knp-max-message-size` (knp only), bytes. @default 4195328 (4 MiB + 1 KiB) */
  knpMaxMessageSize: number;
  /** `--knp-tunnel-idle-timeout` (knp only), ms; 0 = off. @default 0 */
  knpTunnelIdleTimeout: number;
  /** `--knp-paused-tunnel-timeout` (knp only), ms; 0 = off. @default 300000 */
  knpPausedTunnelTimeout: number;
}

function requireCount(flag: string, value: number): void {
  if (!Number.isInteger(value) || value < 1) {
    throw invalidFlag(`--${flag}: must be at least 1, got ${value}`);
  }
}

/**
 * Checks the overload-protection options.
 *
 * @param o The options.
 * @throws {KnpError} `INVALID_FLAG` naming the flag.
 */
export function validateOverloadOptions(o: OverloadOptions): void {
  requireCount("knp-max-pending-dials-per-frontend", o.knpMaxPendingDialsPerFrontend);
  requireCount("knp-max-connections-per-agent", o.knpMaxConnectionsPerAgent);
  requireCount("knp-agent-connect-burst", o.knpAgentConnectBurst);
  if (!(o.knpAgentConnectRate >= 0) || !Number.isFinite(o.knpAgentConnectRate)) {
    throw invalidFlag(
      `--knp-agent-connect-rate: must be >= 0 (0 = no limit), got ${o.knpAgentConnectRate}`,
    );
  }
  if (!(o.knpPausedTunnelTimeout >= 0)) {
    throw invalidFlag(
      `--knp-paused-tunnel-timeout: must be >= 0 (0 = off), got ${
        showDuration(o.knpPausedTunnelTimeout)
      }`,
    );
  }
  if (!(o.knpTunnelIdleTimeout >= 0)) {
    throw invalidFlag(
      `--knp-tunnel-idle-timeout: must be >= 0 (0 = off), got ${
        showDuration(o.knpTunnelIdleTimeout)
      }`,
    );
  }
  const size = o.knpMaxMessageSize;
  if (!Number.isInteger(size) || size < MIN_MESSAGE_SIZE || size > MAX_MESSAGE_SIZE) {
    throw invalidFlag(
      `--knp-max-message-size: must be between ${MIN_MESSAGE_SIZE} and ${MAX_MESSAGE_SIZE} ` +
        `bytes, got ${size}`,
    );
  }
}
