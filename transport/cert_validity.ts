/**
 * Whether certificates are inside their validity window now: for the WARN a binary logs at start
 * and at every reload when one of its own certificates is expired or not yet valid, and for
 * explaining a handshake that failed because of one.
 *
 * @module
 */

import { X509Certificate } from "node:crypto";

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

function certificates(pem: Uint8Array | string): X509Certificate[] {
  const text = typeof pem === "string" ? pem : new TextDecoder().decode(pem);
  const found: X509Certificate[] = [];
  for (const block of text.match(PEM_CERT) ?? []) {
    try {
      found.push(new X509Certificate(block));
    } catch { /* reported by whoever validates the file */ }
  }
  return found;
}

/** "expired", "not yet valid" or `undefined` for a window [notBefore, notAfter] at `now`. */
export function validityProblem(
  notBefore: Date,
  notAfter: Date,
  now: number = Date.now(),
): "expired" | "not yet valid" | undefined {
  if (notAfter.getTime() < now) return "expired";
  if (notBefore.getTime() > now) return "not yet valid";
  return undefined;
}

/**
 * The certificates of a PEM file that are not valid at `now`, each described for a log record:
 * `reason` ("expired" or "not yet valid"), `file`, `subject`, `notBefore`, `notAfter` (ISO 8601).
 */
export function certificatesOutOfDate(
  file: string,
  pem: Uint8Array,
  now: number = Date.now(),
): Record<string, string>[] {
  const found: Record<string, string>[] = [];
  for (const cert of certificates(pem)) {
    const notBefore = new Date(cert.validFrom);
    const notAfter = new Date(cert.validTo);
    const reason = validityProblem(notBefore, notAfter, now);
    if (reason === undefined) continue;
    found.push({
      reason,
      file,
      subject: cert.subject.split("\n").filter((s) => s !== "").join(", "),
      notBefore: notBefore.toISOString(),
      notAfter: notAfter.toISOString(),
    });
  }
  return found;
}

/**
 * What is wrong with the first (leaf) certificate of `pem` at `now`: `"expired at <ISO time>"` or
 * `"not valid before <ISO time>"`; `undefined` when it is valid, absent or unparsable.
 */
export function leafValidityProblem(
  pem: Uint8Array | string | undefined,
  now: number = Date.now(),
): string | undefined {
  if (pem === undefined) return undefined;
  const leaf = certificates(pem)[0];
  if (leaf === undefined) return undefined;
  const notBefore = new Date(leaf.validFrom);
  const notAfter = new Date(leaf.validTo);
  switch (validityProblem(notBefore, notAfter, now)) {
    case "expired":
      return `expired at ${notAfter.toISOString()}`;
    case "not yet valid":
      return `not valid before ${notBefore.toISOString()}`;
    default:
      return undefined;
  }
}

/**
 * Log fields for a TLS handshake a server rejected or lost: the error, its code, and what it
 * means. An expired or not-yet-valid peer certificate is named as such when the TLS stack says
 * so; Deno's TLS server reports a rejected client certificate only as a reset ("socket hang up"),
 * so that case gets a hint naming the usual causes.
 */
export function tlsClientErrorFields(err: Error & { code?: string }): Record<string, string> {
  const fields: Record<string, string> = { error: err.message };
  if (err.code !== undefined) fields.code = err.code;
  const text = `${err.code ?? ""} ${err.message}`;
  if (/EXPIRED/i.test(text)) {
    fields.reason = "the peer's certificate has expired";
  } else if (/NOT_YET_VALID|not yet valid/i.test(text)) {
    fields.reason = "the peer's certificate is not valid yet";
  } else if (err.code === "ECONNRESET") {
    fields.hint = "a rejected client certificate ends like this: check that the agent's " +
      "certificate is within its validity window and issued by --cluster-ca-cert";
  }
  return fields;
}
