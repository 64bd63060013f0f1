/**
 * Who an agent is: the credentials an agent link saw ({@linkcode AgentCredentials}) become an
 * {@linkcode AgentIdentity} through an {@linkcode AgentAuthenticator}. The handshake
 * (`agent_handshake.ts`) authenticates every agent before it reads the agent's claims, and the
 * identity binding (`agent_binding.ts`) decides which agent ID and identifiers that identity may
 * claim.
 *
 * Authenticators: {@linkcode certificateAuthenticator} (the link verified a client certificate
 * against `--cluster-ca-cert`), the service-account token reviewer (`token_review.ts`,
 * `--agent-namespace` and friends) and {@linkcode anonymousAuthenticator} (no agent
 * authentication configured: every agent is the same anonymous identity, and the server warns).
 *
 * @module
 */

import type { X509Certificate } from "node:crypto";
import { KnpError } from "@knp/core/errors";
import { verifyAgentChain } from "@knp/transport/agent_proof";

/** What a link knows about the credentials of an agent knocking on it. */
export interface AgentCredentials {
  /** Values of one metadata key (gRPC metadata or HTTP headers), e.g. `authorization`. */
  metadata(key: string): string[];
  /** The peer's "host:port", for logs. */
  peer: string;
  /** The link's name: "gRPC" or "WebSocket". */
  link: string;
  /** The client certificate the link verified against the cluster CA, when it did. */
  certificate?: X509Certificate | undefined;
}

/** Who an agent is, as far as its credentials prove. */
export interface AgentIdentity {
  /** How it was proven. */
  kind: "certificate" | "service-account" | "anonymous";
  /**
   * Stable name of the identity: `system:serviceaccount:<ns>:<name>` for a token, the subject's
   * common name for a certificate, `anonymous` otherwise. Two agents with the same name are the
   * same principal.
   */
  name: string;
  /**
   * The node the credential is bound to, when it says: a bound service-account token's
   * `authentication.kubernetes.io/node-name`, or a certificate's `system:node:<name>` CN.
   */
  node?: string | undefined;
  /** Every name the credential vouches for (certificate DNS and IP SANs, the CN). */
  names: string[];
}

/** Turns an agent's credentials into its identity. */
export interface AgentAuthenticator {
  /** What it checks, for the start-up log ("client certificate", "service-account token"). */
  readonly description: string;
  /**
   * The identity the credentials prove.
   *
   * @throws {KnpError} `UNAUTHENTICATED` saying why the credentials prove nothing
   */
  authenticate(credentials: AgentCredentials): Promise<AgentIdentity>;
}

/** Refuses an agent whose credentials prove nothing. */
export function unauthenticated(message: string, cause?: unknown): KnpError {
  return new KnpError("UNAUTHENTICATED", message, cause === undefined ? undefined : { cause });
}

/** The subject's common name, or the whole subject on one line when it has none. */
function commonName(cert: X509Certificate): string {
  const lines = cert.subject.split("\n").filter((s) => s !== "");
  const cn = lines.find((l) => l.startsWith("CN="));
  return cn ? cn.slice(3) : lines.join(", ");
}

/** DNS and IP names of a certificate's subjectAltName. */
function altNames(cert: X509Certificate): string[] {
  const names: string[] = [];
  for (const part of (cert.subjectAltName ?? "").split(", ")) {
    const m = /^(DNS|IP Address):(.+)$/.exec(part.trim());
    if (m) names.push(m[2]!);
  }
  return names;
}

/** The identity a verified client certificate proves. */
export function certificateIdentity(cert: X509Certificate): AgentIdentity {
  const name = commonName(cert);
  const node = name.startsWith("system:node:") ? name.slice("system:node:".length) : undefined;
  return { kind: "certificate", name, node, names: [...new Set([name, ...altNames(cert)])] };
}

/** Agents must present a client certificate the link verified against `--cluster-ca-cert`. */
export const certificateAuthenticator: AgentAuthenticator = {
  description: "client certificate (--cluster-ca-cert)",
  authenticate(credentials) {
    const cert = credentials.certificate;
    if (!cert) {
      return Promise.reject(
        unauthenticated(
          `the agent presented no client certificate on the ${credentials.link} link`,
        ),
      );
    }
    return Promise.resolve(certificateIdentity(cert));
  },
};

/** No agent authentication: every agent is `anonymous` (the server warns at start). */
export const anonymousAuthenticator: AgentAuthenticator = {
  description: "none",
  authenticate: () => Promise.resolve({ kind: "anonymous", name: "anonymous", names: [] }),
};

/** A link's verdict on an agent's client certificate: the verified leaf, or why not. */
export interface CertificateFacts {
  certificate?: X509Certificate | undefined;
  certificateError?: Error | undefined;
}

/**
 * Verifies the client certificate chain an agent presented (PEM, leaf first) against the cluster
 * CA: issuer signature and validity dates, explained ("expired at …", "not signed by
 * --cluster-ca-cert"). `tls` is the TLS stack's own verdict, when the link has one; both must
 * agree. Without a CA there is nothing to verify (empty facts).
 */
export function certificateFacts(
  chain: string | undefined,
  ca: string | Uint8Array | undefined,
  tls?: { authorized: boolean; authorizationError?: string | undefined },
): CertificateFacts {
  if (ca === undefined) return {};
  if (!chain) {
    return { certificateError: unauthenticated("the agent presented no client certificate") };
  }
  try {
    const certificate = verifyAgentChain(chain, ca);
    if (tls && !tls.authorized) {
      const why = tls.authorizationError ?? "unknown reason";
      return {
        certificateError: unauthenticated(`the TLS stack refused the agent's certificate: ${why}`),
      };
    }
    return { certificate };
  } catch (err) {
    return { certificateError: err instanceof Error ? err : unauthenticated(String(err)) };
  }
}
