/**
 * Identity binding: which agent ID and `--agent-identifiers` an authenticated agent may claim
 * (`--knp-agent-binding`).
 *
 * - `owner` (default): while an agent is registered, its agent ID and each of its host, IPv4,
 *   IPv6 and CIDR identifiers belong to its principal (the identity's name plus the node its
 *   credential is bound to, when it says). Another principal claiming any of them is refused; the
 *   same principal (a reconnect, a second link) is not. `default-route` is shared by design.
 * - `node`: `owner`, and the credential must name a node (a bound service-account token's node,
 *   or a certificate with CN `system:node:<name>`); the agent ID must be that node's name and
 *   every `host` identifier too. IP and CIDR identifiers keep the `owner` rule.
 * - `none`: upstream's behaviour, any agent may claim anything.
 *
 * With no agent authentication every agent is the same `anonymous` principal, so `owner` binds
 * nothing; the server warns about that at start.
 *
 * @module
 */

import type { AgentIdentifiers } from "@knp/proto";
import { KnpError } from "@knp/core/errors";
import type { AgentIdentity } from "./agent_auth.ts";

/** How claims are bound to identities. */
export type AgentBindingMode = "owner" | "node" | "none";

/** The values `--knp-agent-binding` accepts. */
export const AGENT_BINDING_MODES: readonly AgentBindingMode[] = ["owner", "node", "none"];

/** The principal a claim belongs to: the identity's name and, when known, its node. */
export function principalOf(identity: AgentIdentity): string {
  return identity.node ? `${identity.name}@${identity.node}` : identity.name;
}

/** Every owned claim of an agent, as registry keys ("agent ID a1", "host node-1", …). */
function claimsOf(agentId: string, ids: AgentIdentifiers): string[] {
  return [
    `agent ID ${JSON.stringify(agentId)}`,
    ...ids.host.map((h) => `host=${h}`),
    ...ids.ipv4.map((a) => `ipv4=${a}`),
    ...ids.ipv6.map((a) => `ipv6=${a}`),
    ...ids.cidr.map((c) => `cidr=${c}`),
  ];
}

function denied(message: string): KnpError {
  return new KnpError("PERMISSION_DENIED", message);
}

/** The registry of who holds which claim, and the rules of one mode. */
export class AgentBinding {
  /** The mode in force. */
  readonly mode: AgentBindingMode;
  readonly #holders = new Map<string, { principal: string; count: number }>();

  /** Binds claims by `mode`. */
  constructor(mode: AgentBindingMode = "owner") {
    this.mode = mode;
  }

  /**
   * Whether `identity` may claim `agentId` and `ids` now.
   *
   * @throws {KnpError} `PERMISSION_DENIED`, naming the claim and who holds it
   */
  check(identity: AgentIdentity, agentId: string, ids: AgentIdentifiers): void {
    if (this.mode === "none") return;
    if (this.mode === "node") checkNode(identity, agentId, ids);
    const principal = principalOf(identity);
    for (const claim of claimsOf(agentId, ids)) {
      const holder = this.#holders.get(claim);
      if (holder && holder.principal !== principal) {
        throw denied(
          `${claim} is held by another registered agent (${holder.principal}); ` +
            `this agent is ${principal}`,
        );
      }
    }
  }

  /**
   * Checks and records the claims; the returned function gives them back (once).
   *
   * @throws {KnpError} `PERMISSION_DENIED` as {@linkcode check}
   */
  claim(identity: AgentIdentity, agentId: string, ids: AgentIdentifiers): () => void {
    this.check(identity, agentId, ids);
    if (this.mode === "none") return () => {};
    const principal = principalOf(identity);
    const claims = claimsOf(agentId, ids);
    for (const claim of claims) {
      const holder = this.#holders.get(claim) ?? { principal, count: 0 };
      holder.count++;
      this.#holders.set(claim, holder);
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      for (const claim of claims) {
        const holder = this.#holders.get(claim);
        if (holder && --holder.count <= 0) this.#holders.delete(claim);
      }
    };
  }

  /** Number of claims held (for tests and the status page). */
  get size(): number {
    return this.#holders.size;
  }
}

/** The `node` mode's rule: the credential names a node, and the claims name that node. */
function checkNode(identity: AgentIdentity, agentId: string, ids: AgentIdentifiers): void {
  const node = identity.node;
  if (!node) {
    throw denied(
      `--knp-agent-binding=node: the agent's credential (${identity.name}) names no node`,
    );
  }
  if (agentId !== node) {
    throw denied(`agent ID ${JSON.stringify(agentId)} is not the credential's node "${node}"`);
  }
  for (const host of ids.host) {
    if (host !== node) {
      throw denied(`host=${host} is not the credential's node "${node}"`);
    }
  }
}
