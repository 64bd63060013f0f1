/**
 * Who may be an agent, from the command line: `--knp-agent-binding`, the agent connect rate
 * (`--knp-agent-connect-rate`/`-burst`), the authenticator the flags
 * select (service-account tokens with `--agent-namespace` and friends, client certificates with
 * `--cluster-ca-cert`, else none) and the start-up WARN when the agent port authenticates nobody.
 *
 * Never silently open: token authentication that is configured but cannot work (no kubeconfig,
 * no in-cluster configuration, API unreachable) fails the start with one line naming the flag.
 *
 * @module
 */

import type { FlagSpec } from "@knp/cli/flags";
import { invalidFlag } from "@knp/cli/flags";
import type { Logger } from "@knp/core/log";
import { certificateAuthenticator } from "./agent_auth.ts";
import { AGENT_BINDING_MODES, AgentBinding, type AgentBindingMode } from "./agent_binding.ts";
import type { AgentGate } from "./agent_handshake.ts";
import { tokenAuthenticatorFromOptions, type TokenAuthFlags } from "./token_review.ts";
import { ConnectRateLimiter } from "./overload.ts";
import type { OverloadOptions } from "./overload_flags.ts";

/** The flags of this module, merged into the server's flag table. */
export const AGENT_GATE_FLAGS: readonly FlagSpec[] = [
  {
    name: "knp-agent-binding",
    type: "string",
    default: "owner",
    help: "knp only: which agent ID and --agent-identifiers an authenticated agent may claim. " +
      "owner: while registered, they belong to the first credential that claimed them; " +
      "node: owner, and the credential must name a node (bound token, CN system:node:<name>) " +
      "whose name is the agent ID and every host identifier; none: anything (upstream).",
    implemented: true,
  },
];

/** Option fields of {@linkcode AGENT_GATE_FLAGS}. */
export interface AgentGateOptions {
  /** `--knp-agent-binding`: owner, node or none. @default "owner" */
  knpAgentBinding: string;
}

/**
 * Checks `--knp-agent-binding`.
 *
 * @throws {KnpError} `INVALID_FLAG` naming the flag
 */
export function validateAgentGateOptions(o: AgentGateOptions): void {
  if (!(AGENT_BINDING_MODES as readonly string[]).includes(o.knpAgentBinding)) {
    throw invalidFlag(
      `--knp-agent-binding: must be one of ${
        AGENT_BINDING_MODES.join(", ")
      }, got "${o.knpAgentBinding}"`,
    );
  }
}

/** The one WARN line for an agent port that authenticates nobody; undefined when it does. */
export function openAgentPortWarning(
  o: TokenAuthFlags & { clusterCaCert: string },
): string | undefined {
  if (o.agentNamespace !== "" || o.clusterCaCert !== "") return undefined;
  return "the agent port authenticates no agent: any TLS client can register as an agent and " +
    "receive the control plane's traffic; set --cluster-ca-cert (client certificates) or " +
    "--agent-namespace, --agent-service-account and --authentication-audience (service-account " +
    "tokens)";
}

/**
 * The gate the flags configure. With token authentication it loads the Kubernetes client and
 * checks that the API answers.
 *
 * @throws {KnpError} `CONFIG` naming the flag when token authentication cannot work
 */
export async function agentGateFromOptions(
  o: AgentGateOptions & TokenAuthFlags & OverloadOptions & { clusterCaCert: string },
  log: Logger,
): Promise<AgentGate> {
  const binding = new AgentBinding(o.knpAgentBinding as AgentBindingMode);
  const limiter = new ConnectRateLimiter(
    { ratePerSecond: o.knpAgentConnectRate, burst: o.knpAgentConnectBurst },
    performance.now(),
  );
  const admit = () => limiter.admit(performance.now());
  const tokens = await tokenAuthenticatorFromOptions(o, log.with({ component: "token-review" }));
  if (tokens) {
    await tokens.checkKubeApiReachable();
    log.info("agents authenticate with service-account tokens", {
      namespace: o.agentNamespace,
      serviceAccount: o.agentServiceAccount,
      audience: o.authenticationAudience,
      binding: binding.mode,
    });
    return { authenticator: tokens, binding, admit };
  }
  const warning = openAgentPortWarning(o);
  if (warning !== undefined) {
    log.warn(warning);
    return { binding, admit };
  }
  log.info("agents authenticate with client certificates", { binding: binding.mode });
  return { authenticator: certificateAuthenticator, binding, admit };
}
