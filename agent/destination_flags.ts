/**
 * The agent's destination policy flags (knp only): which `host:port` the agent dials for
 * servers. `--knp-allow-destinations` (empty = everything, as upstream) and
 * `--knp-deny-destinations` take rules (see `@knp/core/destination_policy`);
 * `--knp-destination-preset=hardened` adds to the allow list the kubelet port on the node's
 * addresses (`--knp-node-addresses`, else the ipv4/ipv6/host values of `--agent-identifiers`)
 * and any port in `--knp-pod-cidr` and `--knp-service-cidr`.
 *
 * {@linkcode policyDialer} applies the policy in front of the agent's dialer: a denied dial
 * opens no socket, writes an audit line and fails with kind `policy-denied`.
 *
 * @module
 */

import type { FlagSpec } from "@knp/cli/flags";
import {
  type DestinationPolicy,
  evaluateDestination,
  hardenedAgentRules,
  parseDestinationRule,
  parseDestinationRules,
  policyDeniedText,
  ruleHost,
} from "@knp/core/destination_policy";
import { KnpError } from "@knp/core/errors";
import type { Logger } from "@knp/core/log";
import { denoDialer, type Dialer, EndpointDialError } from "./dialer.ts";

/** The destination policy fields of the agent's options. */
export interface AgentDestinationOptions {
  /** `--knp-allow-destinations`: allow-list rules; empty allows all not denied. @default [] */
  knpAllowDestinations: string[];
  /** `--knp-deny-destinations`: deny rules, checked first. @default [] */
  knpDenyDestinations: string[];
  /** `--knp-destination-preset`: `""` or `hardened`. @default "" */
  knpDestinationPreset: string;
  /** `--knp-pod-cidr`: pod CIDRs for the hardened preset. @default [] */
  knpPodCidr: string[];
  /** `--knp-service-cidr`: service CIDRs for the hardened preset. @default [] */
  knpServiceCidr: string[];
  /** `--knp-node-addresses`: the node's addresses for the preset. @default from identifiers */
  knpNodeAddresses: string[];
  /** `--knp-kubelet-port`: the kubelet port the preset allows on the node. @default 10250 */
  knpKubeletPort: number;
  /** `--agent-identifiers` (upstream's): the preset's default node addresses. */
  agentIdentifiers: string;
}

const RULE_SYNTAX = "HOST[:PORTS]; HOST = *, name, *.suffix, IP, CIDR ([v6] bracketed " +
  "with ports); PORTS = *, port, a-b, or several joined by |";

function slice(name: string, help: string): FlagSpec {
  return { name, type: "stringSlice", default: [], help, implemented: true };
}

/** The destination policy flags, spread into `AGENT_FLAGS`. */
export const AGENT_DESTINATION_FLAGS: readonly FlagSpec[] = [
  slice(
    "knp-allow-destinations",
    `knp only: destinations the agent dials, comma-separated, repeatable (${RULE_SYNTAX}). ` +
      "Empty: every destination no deny rule matches (upstream's behaviour). A denied dial " +
      'opens no socket, fails with kind policy-denied and logs "dial denied by destination policy".',
  ),
  slice(
    "knp-deny-destinations",
    "knp only: destinations the agent never dials (same syntax); checked before the allow " +
      "list. Names are matched as written, not resolved.",
  ),
  {
    name: "knp-destination-preset",
    type: "string",
    default: "",
    help: "knp only: hardened = also allow the kubelet port (--knp-kubelet-port) on the node's " +
      "addresses and any port in --knp-pod-cidr and --knp-service-cidr; everything else is " +
      "denied unless --knp-allow-destinations allows it.",
    implemented: true,
  },
  slice("knp-pod-cidr", "knp only: pod CIDR(s) the hardened preset allows (any port)."),
  slice("knp-service-cidr", "knp only: service CIDR(s) the hardened preset allows (any port)."),
  slice(
    "knp-node-addresses",
    "knp only: the node's addresses for the hardened preset; default: the ipv4, ipv6 and " +
      "host values of --agent-identifiers.",
  ),
  {
    name: "knp-kubelet-port",
    type: "int",
    default: 10250,
    help: "knp only: the kubelet port the hardened preset allows on the node's addresses.",
    implemented: true,
  },
];

/** The node's addresses: `--knp-node-addresses`, else the identifiers' ipv4/ipv6/host values. */
function nodeAddresses(o: AgentDestinationOptions): string[] {
  if (o.knpNodeAddresses.length > 0) return o.knpNodeAddresses;
  const params = new URLSearchParams(o.agentIdentifiers);
  return ["ipv4", "ipv6", "host"].flatMap((key) => params.getAll(key)).filter((v) => v !== "");
}

function requireCidrs(flag: string, values: readonly string[]): void {
  for (const value of values) {
    if (parseDestinationRule(ruleHost(value), flag).host.kind !== "cidr") {
      throw new KnpError(
        "INVALID_FLAG",
        `${flag}: want a CIDR such as 10.244.0.0/16, got "${value}"`,
      );
    }
  }
}

function presetRules(o: AgentDestinationOptions) {
  if (o.knpDestinationPreset === "") return [];
  return hardenedAgentRules({
    nodeAddresses: nodeAddresses(o),
    podCidrs: o.knpPodCidr,
    serviceCidrs: o.knpServiceCidr,
    kubeletPort: o.knpKubeletPort,
  }, {
    node: o.knpNodeAddresses.length > 0 ? "--knp-node-addresses" : "--agent-identifiers",
    pod: "--knp-pod-cidr",
    service: "--knp-service-cidr",
  });
}

/**
 * The agent's policy from its options: the allow flag plus the preset's rules, and the deny flag.
 *
 * @throws {KnpError} `INVALID_FLAG` naming the flag with the bad rule, an unknown preset, a
 *   preset input without the preset, or a preset that would allow nothing.
 */
export function agentDestinationPolicy(o: AgentDestinationOptions): DestinationPolicy {
  const preset = o.knpDestinationPreset;
  if (preset !== "" && preset !== "hardened") {
    throw new KnpError(
      "INVALID_FLAG",
      `--knp-destination-preset: want hardened or "", got "${preset}"`,
    );
  }
  const k = o.knpKubeletPort;
  if (!Number.isInteger(k) || k < 1 || k > 65535) {
    throw new KnpError("INVALID_FLAG", `--knp-kubelet-port: must be a port number, got ${k}`);
  }
  requireCidrs("--knp-pod-cidr", o.knpPodCidr);
  requireCidrs("--knp-service-cidr", o.knpServiceCidr);
  if (preset === "" && [o.knpPodCidr, o.knpServiceCidr, o.knpNodeAddresses].some((l) => l.length)) {
    throw new KnpError(
      "INVALID_FLAG",
      "--knp-pod-cidr, --knp-service-cidr and --knp-node-addresses need --knp-destination-preset=hardened",
    );
  }
  return {
    allow: [
      ...parseDestinationRules(o.knpAllowDestinations, "--knp-allow-destinations"),
      ...presetRules(o),
    ],
    deny: parseDestinationRules(o.knpDenyDestinations, "--knp-deny-destinations"),
  };
}

/** The message of the audit line a denied dial writes. */
export const DENIED_AUDIT_MESSAGE = "dial denied by destination policy";

/**
 * `dialer` behind `policy`: a denied dial opens no socket; it logs the audit line (the server
 * that asked, address, rule, decision) and rejects with an {@linkcode EndpointDialError} of kind
 * `policy-denied` (code `POLICY_DENIED`). An open policy returns `dialer` itself.
 */
export function policyDialer(policy: DestinationPolicy, dialer: Dialer, log: Logger): Dialer {
  if (policy.allow.length === 0 && policy.deny.length === 0) return dialer;
  return (protocol, address, options) => {
    const decision = evaluateDestination(policy, address);
    if (decision.allowed) return dialer(protocol, address, options);
    log.warn(DENIED_AUDIT_MESSAGE, {
      audit: "destination-policy",
      decision: decision.decision,
      address,
      rule: decision.rule,
      ruleSource: decision.source,
      ...(options.serverId !== undefined ? { serverID: options.serverId } : {}),
      ...(options.dialId !== undefined ? { dialID: options.dialId } : {}),
    });
    const text = policyDeniedText(address, decision);
    return Promise.reject(new EndpointDialError("POLICY_DENIED", text, "policy-denied"));
  };
}

/**
 * Checks the destination flags (see {@linkcode agentDestinationPolicy}).
 *
 * @throws {KnpError} `INVALID_FLAG` naming the offending flag.
 */
export function validateAgentDestinationOptions(o: AgentDestinationOptions): void {
  agentDestinationPolicy(o);
}

/** The agent's production dialer (`Deno.connect`) behind the policy of validated options. */
export function agentDialer(o: AgentDestinationOptions, log: Logger): Dialer {
  return policyDialer(agentDestinationPolicy(o), denoDialer, log);
}
