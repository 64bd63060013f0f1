/**
 * TLS material from files, reloaded while the process runs.
 *
 * {@linkcode TlsFiles} watches a certificate, a key and a CA bundle file by polling their contents
 * (a SHA-256 of the bytes, so a rewrite with the same mtime is seen and a touch without a change is
 * not). A new set of files is validated before it is adopted; a broken or half-written set keeps
 * the old material serving, is retried on every poll, and is reported once.
 *
 * {@linkcode secureContextOptions} turns material plus a {@linkcode TlsPolicy} (minimum version,
 * cipher list) into node:tls `SecureContextOptions`; {@linkcode tlsPolicyFromFlags} builds the
 * policy from upstream's `--tls-min-version` and `--cipher-suites` values.
 *
 * ```ts
 * const files = new TlsFiles({ cert: "server.crt", key: "server.key", ca: "ca.crt", logger });
 * const server = tls.createServer({
 *   ...secureContextOptions(files.current(), policy),
 *   requestCert: true,
 *   rejectUnauthorized: true,
 * });
 * files.onChange((material) => server.setSecureContext(secureContextOptions(material, policy)));
 * ```
 *
 * This module does not import grpc-js; `internal/grpc_stream.ts` adapts a {@linkcode TlsSource} to
 * grpc-js's certificate providers.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { createHash, createPrivateKey, X509Certificate } from "node:crypto";
import type { SecureContextOptions, SecureVersion } from "node:tls";
import { errorMessage, KnpError } from "@knp/core/errors";
import { type Logger, nullLogger } from "@knp/core/log";

/** PEM material for TLS, as read from files. */
export interface TlsMaterial {
  cert?: Uint8Array;
  key?: Uint8Array;
  /** CA bundle: verifies the peer (server side: enables mTLS). */
  ca?: Uint8Array;
}

/**
 * TLS material that may change while the process runs ({@linkcode TlsFiles} is one).
 *
 * Listeners get the complete new material, which has already been validated.
 */
export interface TlsSource {
  /** The material to use for the next handshake. */
  current(): TlsMaterial;
  /** Calls `listener` after each change; returns a function that removes it. */
  onChange(listener: (material: TlsMaterial) => void): () => void;
  /** Re-reads the underlying files now (optional; {@linkcode TlsFiles} has it). */
  refresh?(): Promise<boolean>;
}

/** True if `tls` is a {@linkcode TlsSource} rather than fixed material. */
export function isTlsSource(tls: TlsMaterial | TlsSource): tls is TlsSource {
  return typeof (tls as TlsSource).current === "function" &&
    typeof (tls as TlsSource).onChange === "function";
}

/** The material of `tls` right now (fixed material is returned as is). */
export function currentTlsMaterial(tls: TlsMaterial | TlsSource): TlsMaterial {
  return isTlsSource(tls) ? tls.current() : tls;
}

/** One certificate found in a watched file, for expiry metrics. */
export interface CertificateExpiry {
  /** Path of the file the certificate is in. */
  file: string;
  /** Subject distinguished name, e.g. `O=knp, CN=knp-test-ca`. */
  subject: string;
  notAfter: Date;
}

/** Options of {@linkcode TlsFiles}. Empty or missing paths mean "no such file". */
export interface TlsFilesOptions {
  /** PEM certificate (chain): the leaf first. */
  cert?: string;
  /** PEM private key matching the first certificate of `cert`. */
  key?: string;
  /** PEM CA bundle (one or more certificates). */
  ca?: string;
  /** How often to look at the files; 0 disables polling (use `refresh()`). @default 1000 */
  pollIntervalMs?: number;
  /** Where reloads (info) and rejected files (error) are reported. */
  logger?: Logger;
}

interface Parsed {
  material: TlsMaterial;
  expiry: CertificateExpiry[];
  /** Short description for logs: leaf subject and serial. */
  summary: Record<string, string>;
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

function subjectOf(cert: X509Certificate): string {
  return cert.subject.split("\n").filter((s) => s !== "").join(", ");
}

/** Parses every certificate of a PEM file; rejects files with none or with a cut-off block. */
function parseCertificates(what: string, path: string, bytes: Uint8Array): X509Certificate[] {
  const text = new TextDecoder().decode(bytes);
  const blocks = text.match(PEM_CERT) ?? [];
  const begins = text.split("-----BEGIN ").length - 1;
  if (begins !== blocks.length) {
    throw new Error(`${what} ${path}: ${begins - blocks.length} PEM block(s) are incomplete`);
  }
  if (blocks.length === 0) throw new Error(`${what} ${path}: no PEM certificate found`);
  return blocks.map((block, i) => {
    try {
      return new X509Certificate(block);
    } catch (err) {
      throw new Error(`${what} ${path}: certificate ${i + 1} does not parse: ${errorMessage(err)}`);
    }
  });
}

/** Validates a candidate set of file contents; throws an Error saying what is wrong. */
function validate(paths: TlsFilesOptions, raw: TlsMaterial): Parsed {
  const expiry: CertificateExpiry[] = [];
  const summary: Record<string, string> = {};
  let leaf: X509Certificate | undefined;
  if (raw.cert && paths.cert) {
    const certs = parseCertificates("certificate file", paths.cert, raw.cert);
    leaf = certs[0]!;
    summary.subject = subjectOf(leaf);
    summary.serial = leaf.serialNumber;
    for (const c of certs) {
      expiry.push({ file: paths.cert, subject: subjectOf(c), notAfter: new Date(c.validTo) });
    }
  }
  if (raw.key && paths.key) {
    let key;
    try {
      key = createPrivateKey(Buffer.from(raw.key));
    } catch (err) {
      throw new Error(`key file ${paths.key}: does not parse: ${errorMessage(err)}`);
    }
    if (leaf && !leaf.checkPrivateKey(key)) {
      throw new Error(`key file ${paths.key} does not match the certificate in ${paths.cert}`);
    }
  }
  if (raw.ca && paths.ca) {
    const cas = parseCertificates("CA file", paths.ca, raw.ca);
    summary.ca = cas.map(subjectOf).join("; ");
    for (const c of cas) {
      expiry.push({ file: paths.ca, subject: subjectOf(c), notAfter: new Date(c.validTo) });
    }
  }
  return { material: raw, expiry, summary };
}

function digest(parts: (Uint8Array | string | undefined)[]): string {
  const hash = createHash("sha256");
  for (const part of parts) {
    const bytes = typeof part === "string" ? new TextEncoder().encode(part) : part;
    // Length-prefixed, so moving bytes from one file to the next changes the digest.
    hash.update(String(bytes?.length ?? -1) + ":");
    if (bytes) hash.update(bytes);
  }
  return hash.digest("hex");
}

/**
 * A certificate, key and CA bundle read from files and kept up to date by polling.
 *
 * - The constructor reads and validates the files synchronously and throws a `CONFIG`
 *   {@linkcode KnpError} if they are unreadable or invalid (startup should fail then).
 * - Every `pollIntervalMs` (and on {@linkcode TlsFiles.refresh}) the files are read again. If
 *   their contents changed, the new set is validated first: every certificate parses, the key
 *   parses and matches the first certificate of the cert file, the CA bundle holds at least one
 *   certificate and no cut-off PEM block. Only then is it adopted and the listeners called.
 * - A set that fails validation is not adopted; the old material stays in use. It is retried on
 *   every poll, so a half-written file is picked up once its writer is done. If the same bad
 *   contents are still there on the next poll, an error is logged, once per distinct contents.
 */
export class TlsFiles implements TlsSource {
  readonly #paths: TlsFilesOptions;
  readonly #log: Logger;
  readonly #intervalMs: number;
  #parsed: Parsed;
  #digest: string;
  /** Digest of a bad set seen on the last look (reported when seen again unchanged). */
  #pendingBad: string | undefined;
  /** Digest of the last bad set that was reported. */
  #reportedBad: string | undefined;
  #listeners = new Set<(material: TlsMaterial) => void>();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #busy: Promise<boolean> | undefined;
  #closed = false;

  /**
   * Reads and validates the files, then starts polling.
   *
   * @throws {KnpError} `CONFIG` when a file cannot be read or the material is invalid
   */
  constructor(options: TlsFilesOptions) {
    this.#paths = {
      cert: options.cert || undefined,
      key: options.key || undefined,
      ca: options.ca || undefined,
    };
    this.#log = options.logger ?? nullLogger;
    this.#intervalMs = options.pollIntervalMs ?? 1000;
    const read = (path: string | undefined) => {
      if (!path) return undefined;
      try {
        return Deno.readFileSync(path);
      } catch (err) {
        throw new KnpError("CONFIG", `cannot read ${path}: ${errorMessage(err)}`, { cause: err });
      }
    };
    const raw: TlsMaterial = {};
    for (const which of ["cert", "key", "ca"] as const) {
      const bytes = read(this.#paths[which]);
      if (bytes) raw[which] = bytes;
    }
    try {
      this.#parsed = validate(this.#paths, raw);
    } catch (err) {
      throw new KnpError("CONFIG", errorMessage(err), { cause: err });
    }
    this.#digest = digest([raw.cert, raw.key, raw.ca, ""]);
    this.#schedule();
  }

  /** The paths being watched (absent ones are undefined). */
  get paths(): Readonly<{ cert?: string; key?: string; ca?: string }> {
    return { cert: this.#paths.cert, key: this.#paths.key, ca: this.#paths.ca };
  }

  /** The last validated material (PEM bytes; do not modify them). */
  current(): TlsMaterial {
    return this.#parsed.material;
  }

  /** Calls `listener` with the new material after each adopted change. Returns an unsubscribe. */
  onChange(listener: (material: TlsMaterial) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Each certificate of the current cert file and CA bundle with its expiry, in file order
   * (cert file first).
   */
  expiry(): CertificateExpiry[] {
    return this.#parsed.expiry.map((e) => ({ ...e, notAfter: new Date(e.notAfter) }));
  }

  /**
   * Looks at the files now (as a poll does). Resolves true if new material was adopted.
   * Concurrent calls share one read.
   */
  refresh(): Promise<boolean> {
    if (this.#closed) return Promise.resolve(false);
    this.#busy ??= this.#check().finally(() => this.#busy = undefined);
    return this.#busy;
  }

  /** Stops polling. `current()` keeps answering with the last material. */
  close(): void {
    this.#closed = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#listeners.clear();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #schedule(): void {
    if (this.#closed || this.#intervalMs <= 0) return;
    this.#timer = setTimeout(async () => {
      this.#timer = undefined;
      try {
        await this.refresh();
      } finally {
        this.#schedule();
      }
    }, this.#intervalMs);
  }

  async #check(): Promise<boolean> {
    const raw: TlsMaterial = {};
    const readErrors: string[] = [];
    for (const which of ["cert", "key", "ca"] as const) {
      const path = this.#paths[which];
      if (!path) continue;
      try {
        raw[which] = await Deno.readFile(path);
      } catch (err) {
        readErrors.push(`cannot read ${path}: ${errorMessage(err)}`);
      }
    }
    if (this.#closed) return false;
    const candidate = digest([raw.cert, raw.key, raw.ca, readErrors.join("\n")]);
    if (candidate === this.#digest) {
      this.#pendingBad = undefined;
      return false;
    }
    if (candidate === this.#reportedBad) return false;
    let parsed: Parsed;
    try {
      if (readErrors.length > 0) throw new Error(readErrors.join("; "));
      parsed = validate(this.#paths, raw);
    } catch (err) {
      // Maybe a writer is half-way through: report only if it is still like this next time.
      if (candidate === this.#pendingBad) {
        this.#reportedBad = candidate;
        this.#pendingBad = undefined;
        this.#log.error("new TLS files rejected; still using the previous certificate", {
          ...this.paths,
          error: errorMessage(err),
        });
      } else {
        this.#pendingBad = candidate;
      }
      return false;
    }
    this.#parsed = parsed;
    this.#digest = candidate;
    this.#pendingBad = undefined;
    this.#reportedBad = undefined;
    this.#log.info("TLS files reloaded; new handshakes use them", {
      ...this.paths,
      ...parsed.summary,
    });
    for (const listener of [...this.#listeners]) {
      try {
        listener(parsed.material);
      } catch (err) {
        this.#log.error("applying reloaded TLS files failed", {
          ...this.paths,
          error: errorMessage(err),
        });
      }
    }
    return true;
  }
}

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
