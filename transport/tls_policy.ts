/**
 * TLS settings beyond the certificates: {@linkcode TlsPolicy} (minimum version, cipher list),
 * built from upstream's `--tls-min-version` and `--cipher-suites` by {@linkcode tlsPolicyFromFlags},
 * and {@linkcode secureContextOptions}, which turns material plus a policy into node:tls
 * `SecureContextOptions` (see `tls_files.ts` for the reloading material itself).
 *
 * @module
 */

import { Buffer } from "node:buffer";
import type { SecureContextOptions, SecureVersion } from "node:tls";
import { KnpError } from "@knp/core/errors";
import type { TlsMaterial } from "./tls_files.ts";

/** TLS settings beyond the certificates: upstream's `--tls-min-version` and `--cipher-suites`. */
export interface TlsPolicy {
  /** Lowest protocol version accepted. @default "TLSv1.2" */
  minVersion?: SecureVersion;
  /**
   * OpenSSL cipher list for TLS 1.2 and below (`:`-separated), as node:tls takes it. TLS 1.3
   * suites are not affected (as in Go). Note: Deno 2.9's node:tls validates this list but does
   * not apply it (its TLS stack is rustls), so under Deno it has no effect.
   */
  ciphers?: string;
}

const GO_TLS_VERSIONS: Record<string, SecureVersion> = {
  "": "TLSv1.2",
  VersionTLS10: "TLSv1",
  VersionTLS11: "TLSv1.1",
  VersionTLS12: "TLSv1.2",
  VersionTLS13: "TLSv1.3",
};

/** Go cipher-suite names (`tls.CipherSuiteName`) to OpenSSL names; `null` = a TLS 1.3 suite. */
const GO_CIPHER_SUITES: Record<string, string | null> = {
  TLS_AES_128_GCM_SHA256: null,
  TLS_AES_256_GCM_SHA384: null,
  TLS_CHACHA20_POLY1305_SHA256: null,
  TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA: "ECDHE-ECDSA-AES128-SHA",
  TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA: "ECDHE-ECDSA-AES256-SHA",
  TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA: "ECDHE-RSA-AES128-SHA",
  TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA: "ECDHE-RSA-AES256-SHA",
  TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256: "ECDHE-ECDSA-AES128-GCM-SHA256",
  TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384: "ECDHE-ECDSA-AES256-GCM-SHA384",
  TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256: "ECDHE-RSA-AES128-GCM-SHA256",
  TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384: "ECDHE-RSA-AES256-GCM-SHA384",
  TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256: "ECDHE-RSA-CHACHA20-POLY1305",
  TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256: "ECDHE-ECDSA-CHACHA20-POLY1305",
};

/**
 * The OpenSSL cipher list for Go cipher-suite names, or undefined when the list has no TLS 1.2
 * suite (empty list: the defaults).
 *
 * @throws {KnpError} `INVALID_FLAG` for a name that is unknown or insecure
 */
export function openSslCiphers(goNames: readonly string[]): string | undefined {
  const out: string[] = [];
  for (const name of goNames) {
    const mapped = GO_CIPHER_SUITES[name];
    if (mapped === undefined) {
      throw new KnpError("INVALID_FLAG", `--cipher-suites: "${name}" is unknown or insecure`);
    }
    if (mapped !== null) out.push(mapped);
  }
  return out.length > 0 ? out.join(":") : undefined;
}

/**
 * The {@linkcode TlsPolicy} for upstream's `--tls-min-version` (`""` = TLS 1.2, `VersionTLS10` ..
 * `VersionTLS13`) and `--cipher-suites` (Go names).
 *
 * @throws {KnpError} `INVALID_FLAG` for an unknown version or cipher-suite name
 */
export function tlsPolicyFromFlags(
  tlsMinVersion: string,
  cipherSuites: readonly string[],
): TlsPolicy {
  const minVersion = GO_TLS_VERSIONS[tlsMinVersion];
  if (!minVersion) {
    throw new KnpError("INVALID_FLAG", `--tls-min-version: unsupported "${tlsMinVersion}"`);
  }
  const ciphers = openSslCiphers(cipherSuites);
  return ciphers ? { minVersion, ciphers } : { minVersion };
}

/**
 * node:tls `SecureContextOptions` for `material` and `policy`.
 *
 * Contract:
 * - The result holds `cert`, `key` and (when the material has one) `ca` as Buffers, `minVersion`
 *   (default TLSv1.2) and, when the policy has one, `ciphers`. Nothing else: in particular never
 *   the system roots, because Deno's node:tls sends every `ca` certificate in the server's chain
 *   (a big bundle overflows the handshake).
 * - It is complete: pass it whole to `tls.createServer({...options, requestCert,
 *   rejectUnauthorized})` and again whole to `server.setSecureContext()` after every
 *   {@linkcode TlsSource.onChange}. Deno's `setSecureContext` does not keep the `minVersion` the
 *   server was created with, so leaving the policy out there would drop it.
 * - `requestCert`/`rejectUnauthorized` are server options, not context options: a server created
 *   with a CA (mTLS) keeps requiring client certificates after `setSecureContext`; the new `ca`
 *   decides which ones are accepted by the next handshakes.
 * - Established connections keep the context they were made with.
 *
 * @throws {KnpError} `CONFIG` when the material has no certificate or no key
 */
export function secureContextOptions(
  material: TlsMaterial,
  policy: TlsPolicy = {},
): SecureContextOptions {
  if (!material.cert || !material.key) {
    throw new KnpError("CONFIG", "TLS needs both a certificate and a key");
  }
  const options: SecureContextOptions = {
    cert: Buffer.from(material.cert),
    key: Buffer.from(material.key),
    minVersion: policy.minVersion ?? "TLSv1.2",
  };
  if (material.ca) options.ca = Buffer.from(material.ca);
  if (policy.ciphers) options.ciphers = policy.ciphers;
  return options;
}
