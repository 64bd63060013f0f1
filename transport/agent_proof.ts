/**
 * Agent identity on the knp WebSocket link. The link runs on Deno's native TLS, which cannot ask
 * for client certificates, so the agent proves its certificate in the application protocol
 * instead — as strong as mTLS for our purposes:
 *
 * 1. The agent sends its certificate chain (PEM, base64) in the `knp-agent-cert` header; the
 *    server checks it against `--cluster-ca-cert` (issuer signature, validity dates).
 * 2. The server sends a random challenge; the agent signs
 *    `knp-agent-link-v1\n<serverID>\n<agentID>\n<challenge>` with its private key.
 * 3. The server verifies the signature with the certificate's public key.
 *
 * The agent verified the server's certificate during the TLS handshake, so a relay would need a
 * certificate the agent trusts.
 *
 * @module
 */

import { createPrivateKey, randomBytes, sign, verify, X509Certificate } from "node:crypto";
import { Buffer } from "node:buffer";
import { KnpError } from "@knp/core/errors";
import { validityProblem } from "./cert_validity.ts";

/** Request header carrying the agent's certificate chain (base64 of PEM). */
export const AGENT_CERT_HEADER = "knp-agent-cert";

const PEM_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

function certificates(pem: string | Uint8Array): X509Certificate[] {
  const text = typeof pem === "string" ? pem : new TextDecoder().decode(pem);
  return (text.match(PEM_BLOCK) ?? []).map((block) => new X509Certificate(block));
}

/** A fresh random challenge (base64). */
export function newChallenge(): string {
  return randomBytes(32).toString("base64");
}

/** The exact bytes an agent signs. */
export function proofPayload(serverId: string, agentId: string, challenge: string): Buffer {
  return Buffer.from(`knp-agent-link-v1\n${serverId}\n${agentId}\n${challenge}`);
}

/** Signs a proof with a PEM private key (EC, RSA or Ed25519); returns base64. */
export function signProof(keyPem: string | Uint8Array, payload: Buffer): string {
  const key = createPrivateKey(typeof keyPem === "string" ? keyPem : Buffer.from(keyPem));
  const algorithm = key.asymmetricKeyType === "ed25519" ? null : "sha256";
  return sign(algorithm, payload, key).toString("base64");
}

/**
 * Checks a certificate chain against a CA bundle: the leaf (or an intermediate from the chain
 * that issued it) must be signed by a CA of the bundle, and every certificate used must be
 * within its validity dates.
 *
 * @returns the leaf certificate
 * @throws {KnpError} `HANDSHAKE`, saying why
 */
export function verifyAgentChain(
  chainPem: string,
  caPem: string | Uint8Array,
  now: Date = new Date(),
): X509Certificate {
  const chain = certificates(chainPem);
  const cas = certificates(caPem);
  const leaf = chain[0];
  if (!leaf) throw new KnpError("UNAUTHENTICATED", "the agent sent no certificate");
  const current = (c: X509Certificate) =>
    new Date(c.validFrom) <= now && now <= new Date(c.validTo);
  const signedBy = (c: X509Certificate, issuer: X509Certificate) =>
    c.checkIssued(issuer) && c.verify(issuer.publicKey);
  const subject = `agent certificate "${oneLine(leaf.subject)}"`;
  const problem = validityProblem(new Date(leaf.validFrom), new Date(leaf.validTo), now.getTime());
  if (problem === "expired") {
    throw new KnpError(
      "UNAUTHENTICATED",
      `${subject} expired at ${new Date(leaf.validTo).toISOString()}`,
    );
  }
  if (problem === "not yet valid") {
    throw new KnpError(
      "UNAUTHENTICATED",
      `${subject} is not valid before ${new Date(leaf.validFrom).toISOString()}`,
    );
  }
  for (const ca of cas) if (current(ca) && signedBy(leaf, ca)) return leaf;
  for (const intermediate of chain.slice(1)) {
    if (!current(intermediate) || !signedBy(leaf, intermediate)) continue;
    for (const ca of cas) if (current(ca) && signedBy(intermediate, ca)) return leaf;
  }
  throw new KnpError(
    "UNAUTHENTICATED",
    `${subject} (issuer "${oneLine(leaf.issuer)}") is not signed by --cluster-ca-cert`,
  );
}

/** A multi-line X.509 name on one line. */
function oneLine(name: string): string {
  return name.split("\n").filter((s) => s !== "").join(", ");
}

/** Verifies a proof signature with the leaf's public key. */
export function verifyProof(leaf: X509Certificate, payload: Buffer, signature: string): boolean {
  try {
    const key = leaf.publicKey;
    const algorithm = key.asymmetricKeyType === "ed25519" ? null : "sha256";
    return verify(algorithm, payload, key, Buffer.from(signature, "base64"));
  } catch {
    return false;
  }
}
