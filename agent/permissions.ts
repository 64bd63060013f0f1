/**
 * The Deno permissions `proxy-agent` needs, computed from its command line:
 *
 * - net: all of it (plain `--allow-net`). The agent dials whatever backend address a server asks
 *   for, so no list of hosts can be known in advance; this also covers the connection to
 *   `--proxy-server-host`, an egress proxy and the health and admin listeners.
 * - read: `--ca-cert`, `--agent-cert`, `--agent-key`, `--service-account-token-path` and
 *   `--kubeconfig` when given;
 * - write: none;
 * - env: the 14 variables grpc-js reads when it loads, `PROXY_AGENT_ID` unless `--agent-id` is
 *   given, and unless `--knp-egress-proxy` is set, the proxy variables (`HTTPS_PROXY`,
 *   `https_proxy`, `HTTP_PROXY`, `http_proxy`, `NO_PROXY`, `no_proxy`).
 * - `--count-server-leases`: the Kubernetes client's needs (`@knp/cli/kube_client`): all of env
 *   (its dependencies list the environment when they load), read on `--kubeconfig` and the files
 *   it references (or the in-cluster service-account directory); net is already all of it.
 *
 * `deno run jsr:@knp/agent --knp-print-permissions <flags>` (or `agent/main.ts`) prints them.
 *
 * @module
 */

import {
  fileNeeds,
  grpcJsNeeds,
  permissionFlags,
  type PermissionNeed,
  type PermissionPlan,
  permissionPlan,
} from "@knp/cli/permissions";
import type { AgentOptions } from "./options.ts";
import { AGENT_FLAGS } from "./agent_flags.ts";
import { kubeClientNeeds } from "@knp/cli/kube_client";
import { egressProxyNeeds } from "./egress_proxy.ts";

/** The needs of parsed (not necessarily validated) agent options. */
export function agentOptionNeeds(o: AgentOptions): PermissionNeed[] {
  return [
    ...grpcJsNeeds(),
    { kind: "net", reason: "dialing backends (any address a server asks for)" },
    ...(o.countServerLeases ? kubeClientNeeds(o.kubeconfig, "--count-server-leases") : []),
    ...fileNeeds({
      "ca-cert": o.caCert,
      "agent-cert": o.agentCert,
      "agent-key": o.agentKey,
      "service-account-token-path": o.serviceAccountTokenPath,
      "kubeconfig": o.kubeconfig,
    }),
    ...egressProxyNeeds(o),
  ];
}

/** The permission plan of a `proxy-agent` command line (see {@linkcode permissionPlan}). */
export function agentPermissionPlan(args: readonly string[]): PermissionPlan {
  return permissionPlan<AgentOptions>(AGENT_FLAGS, args, agentOptionNeeds);
}

/**
 * The `deno run` permission flags `proxy-agent` needs for `args`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * const flags = agentPermissionFlags(["--ca-cert=/etc/a/ca.crt", "--agent-id=a"]);
 * assert.deepEqual(flags.slice(1), ["--allow-net", "--allow-read=/etc/a/ca.crt"]);
 * ```
 *
 * @param args The agent's arguments (without the program name).
 * @returns The flags, or `[]` if `args` do not parse.
 */
export function agentPermissionFlags(args: readonly string[]): string[] {
  const plan = agentPermissionPlan(args);
  return plan.needs === undefined ? [] : permissionFlags(plan.needs);
}

// `deno task agent <flags>`: run `main.ts` with exactly the permissions the flags need.
if (import.meta.main) {
  const { launchWithPermissions } = await import("@knp/cli/binary");
  const entry = new URL("./main.ts", import.meta.url).pathname;
  await launchWithPermissions(entry, agentPermissionFlags(Deno.args), Deno.args);
}
