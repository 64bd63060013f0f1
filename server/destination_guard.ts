/**
 * The destination policy in the server's dial path: {@linkcode destinationRefusal} checks a
 * frontend's DIAL_REQ before an agent is picked (so the gRPC and HTTP-CONNECT frontends both get
 * it), writes the audit line and the `dial-failure` event of a denied dial, and words its
 * DIAL_RSP error (kind `policy-denied`, HTTP 403). {@linkcode denySelf} adds the rules that keep
 * frontends off the server's own ports once they are known.
 *
 * @module
 */

import {
  type DestinationPolicy,
  evaluateDestination,
  OPEN_POLICY,
  policyDeniedText,
} from "@knp/core/destination_policy";
import { type OwnListener, selfDenyRules } from "@knp/core/self_deny_rules";
import type { Logger } from "@knp/core/log";
import type { ConnectionTables } from "./connection_tables.ts";
import type { FrontendConnection } from "./frontend_connection.ts";

/** The self rules' part of the server's configuration. */
export interface SelfDestinationConfig {
  /**
   * Deny frontends the server's own ports where a dial would reach them (see `selfDenyRules`):
   * `addresses` are the server's own (a listener on every address is reached there too),
   * `always` are named as its own by the operator (every listener); undefined leaves them reachable.
   */
  denySelfDestinations?: { addresses: readonly string[]; always?: readonly string[] };
}

/** The message of the audit line a denied dial writes. */
export const DENIED_AUDIT_MESSAGE = "dial denied by destination policy";

/**
 * Checks `conn`'s dial (its `address` is set) against `policy`. Allowed: undefined. Denied:
 * logs the audit line (who asked, address, rule, decision), emits `dial-failure` and returns the
 * tagged DIAL_RSP error text.
 */
export function destinationRefusal(
  policy: DestinationPolicy,
  conn: FrontendConnection,
  t: ConnectionTables,
  log: Logger,
): string | undefined {
  const decision = evaluateDestination(policy, conn.address);
  if (decision.allowed) return undefined;
  log.warn(DENIED_AUDIT_MESSAGE, {
    audit: "destination-policy",
    decision: decision.decision,
    rule: decision.rule,
    ruleSource: decision.source,
    peer: conn.stream.peer,
    userAgent: conn.userAgent,
  });
  t.emit({ kind: "dial-failure", reason: "error_response", dialId: conn.dialId });
  t.emit({
    kind: "dial-denied",
    dialId: conn.dialId,
    address: conn.address,
    rule: decision.rule,
    source: decision.source,
  });
  return t.dialError(policyDeniedText(conn.address, decision), "policy-denied");
}

/**
 * Sets the core's policy to `config.destinationPolicy` (the flags') with the self rules for
 * `listeners` (ports 0 and undefined are skipped) appended to its deny list; calling it again
 * (with the bound ports) replaces the self rules. Does nothing without
 * `config.denySelfDestinations`.
 */
export function denySelf(
  core: { destinationPolicy: DestinationPolicy },
  config: SelfDestinationConfig & { destinationPolicy?: DestinationPolicy },
  listeners: readonly OwnListener[],
): void {
  const self = config.denySelfDestinations;
  if (self === undefined) return;
  const policy = config.destinationPolicy ?? OPEN_POLICY;
  core.destinationPolicy = {
    allow: policy.allow,
    deny: [...policy.deny, ...selfDenyRules(self.addresses, listeners, self.always)],
  };
}
