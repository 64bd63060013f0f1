/**
 * `proxy-agent`: the knp proxy agent binary. Accepts upstream's flags (see `--help`).
 *
 * It first checks that the process has the permissions its flags need (see `permissions.ts`;
 * `--knp-print-permissions` prints them) and ends with one line naming the missing flag if not.
 * Only then does it import the agent, since grpc-js reads environment variables when it loads.
 *
 * @module
 */

import { checkPermissionsOrExit, parseOrExit } from "@knp/cli/binary";
import { readFlagEnv } from "@knp/cli/permissions";
import {
  AGENT_FLAGS,
  agentHelp,
  type AgentOptions,
  parseAgentOptions,
  validateAgentOptions,
} from "./options.ts";
import { agentPermissionPlan } from "./permissions.ts";

/** Runs the agent: the first signal drains (then exits), the second exits at once. */
export async function main(args: string[]): Promise<void> {
  const needs = checkPermissionsOrExit("proxy-agent", agentPermissionPlan(args));
  const { options, log } = parseOrExit<AgentOptions>(
    "proxy-agent",
    () => parseAgentOptions(args, readFlagEnv(AGENT_FLAGS)),
    validateAgentOptions,
    agentHelp,
  );
  const { runAgent } = await import("./run_agent.ts");
  runAgent(options, log, needs);
}

if (import.meta.main) await main(Deno.args);
