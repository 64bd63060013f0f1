/**
 * The agent's drain on its first SIGTERM/SIGINT, and its flag `--knp-drain-timeout`.
 *
 * As upstream's agent does, the first signal sends DRAIN on every server stream (servers then
 * prefer other agents for new dials), opens no new server connection, and keeps serving: open
 * connections and any dial a server still sends (a server falls back to a draining agent only
 * when every candidate drains). Beyond upstream, which never exits by itself after DRAIN, the
 * agent exits once it has held no connection and no dial for {@linkcode DRAIN_SETTLE_MS} (a dial
 * a server chose before it read the DRAIN arrives within that window), or when
 * `--knp-drain-timeout` runs out; `--knp-drain-timeout=0` keeps upstream's behaviour (drain and
 * stay up). A second signal exits at once (`run_agent.ts`).
 *
 * @module
 */

import type { FlagSpec } from "@knp/cli/flags";
import { invalidFlag } from "@knp/cli/flags";
import { showDuration } from "@knp/cli/flag_checks";
import { type Logger, nullLogger } from "@knp/core/log";
import { realTimers, type Timers } from "@knp/core/timers";

/** The drain fields of the agent's options, in ms. */
export interface AgentDrainOptions {
  /**
   * `--knp-drain-timeout`: longest drain before the agent exits anyway; 0 = never exit by itself
   * (upstream's behaviour). @default 25000
   */
  knpDrainTimeout: number;
}

/**
 * Default of `--knp-drain-timeout`: below Kubernetes' default 30 s termination grace period, so
 * the agent ends its streams itself (logging what was still open) before the kubelet's SIGKILL.
 */
export const DEFAULT_DRAIN_TIMEOUT_MS = 25_000;

/**
 * How long a draining agent must hold no connection and no dial before it exits: a DIAL_REQ a
 * server sent before it read the DRAIN is in flight for one round trip.
 */
export const DRAIN_SETTLE_MS = 2_000;

/** How often the drain looks at the open connections. */
const DRAIN_CHECK_MS = 100;

/** The drain flag, spread into `AGENT_FLAGS`. */
export const AGENT_DRAIN_FLAGS: readonly FlagSpec[] = [{
  name: "knp-drain-timeout",
  type: "duration",
  default: DEFAULT_DRAIN_TIMEOUT_MS,
  help: "knp only: on the first SIGTERM the agent sends DRAIN and keeps serving; it exits once " +
    "its connections have finished, or after this long with connections still open. 0 = drain " +
    "and stay up until a second signal, as upstream's agent. A second signal exits at once.",
  implemented: true,
}];

/**
 * Checks the drain flag.
 * @throws {KnpError} `INVALID_FLAG` naming the flag
 */
export function validateAgentDrainOptions(o: AgentDrainOptions): void {
  if (!(o.knpDrainTimeout >= 0)) {
    throw invalidFlag(`--knp-drain-timeout: must be >= 0, got ${showDuration(o.knpDrainTimeout)}`);
  }
}

/** What a drain watches: the agent's server connections (a `ClientSet`). */
export interface DrainTarget {
  /** Open endpoint connections. */
  readonly connections: number;
  /** Endpoint dials in progress. */
  readonly pendingDials: number;
  /** Server streams held. */
  readonly size: number;
  /** Sends DRAIN on every server stream and stops opening new ones. */
  drain(): void;
}

/** Options of {@linkcode drainAgent}. */
export interface DrainOptions {
  /** Longest drain, in ms; 0 = the drain never ends by itself (upstream's behaviour). */
  timeoutMs: number;
  /** Idle time before the drain ends, in ms. @default DRAIN_SETTLE_MS */
  settleMs?: number;
  /** Clock and timers (fake ones in tests). */
  timers?: Timers;
  /** Where each step is logged. */
  logger?: Logger;
}

/** How a drain ended: every connection finished, or the timeout ran out with `open` left. */
export interface DrainOutcome {
  /** `drained` (idle for the settle time) or `timeout`. */
  reason: "drained" | "timeout";
  /** Connections (and dials) still open at the end. */
  open: number;
}

/**
 * Drains `target`: sends DRAIN, then resolves once it has been idle (no connection, no dial) for
 * the settle time, or at the timeout; with a timeout of 0 it never resolves (the agent stays up).
 * Logs each step; never closes anything itself.
 */
export async function drainAgent(target: DrainTarget, o: DrainOptions): Promise<DrainOutcome> {
  const timers = o.timers ?? realTimers;
  const log = o.logger ?? nullLogger;
  const settleMs = o.settleMs ?? DRAIN_SETTLE_MS;
  const open = () => target.connections + target.pendingDials;
  target.drain();
  const started = timers.now();
  log.info("draining: sent DRAIN to every proxy server; serving open connections", {
    servers: target.size,
    connections: open(),
    drainTimeoutMs: o.timeoutMs,
  });
  if (o.timeoutMs === 0) {
    log.info("draining: --knp-drain-timeout=0, staying up until a second signal");
    return await new Promise<never>(() => {});
  }
  let idleSince: number | undefined;
  for (;;) {
    const now = timers.now();
    const n = open();
    if (n > 0 && idleSince !== undefined) {
      log.info("draining: a server opened a connection on this draining agent", { open: n });
    }
    if (n === 0 && idleSince === undefined) {
      log.info("draining: no open connections; exiting unless one opens", { settleMs });
    }
    idleSince = n > 0 ? undefined : idleSince ?? now;
    if (idleSince !== undefined && now - idleSince >= settleMs) {
      log.info("drained: every connection finished; exiting", {
        drainMs: Math.round(now - started),
      });
      return { reason: "drained", open: 0 };
    }
    if (now - started >= o.timeoutMs) {
      log.warn("drain timeout: exiting with connections still open", {
        open: n,
        drainTimeoutMs: o.timeoutMs,
      });
      return { reason: "timeout", open: n };
    }
    await new Promise<void>((resolve) => timers.setTimeout(resolve, DRAIN_CHECK_MS));
  }
}
