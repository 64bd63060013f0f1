/**
 * TLS material from files, reloaded while the process runs.
 *
 * {@linkcode TlsFiles} watches a certificate, a key and a CA bundle file by polling their contents
 * (a SHA-256 of the bytes, so a rewrite with the same mtime is seen and a touch without a change is
 * not). A new set of files is validated before it is adopted; a broken or half-written set keeps
 * the old material serving, is retried on every poll, and is reported once.
 *
 * `secureContextOptions` (in `tls_policy.ts`) turns material plus a `TlsPolicy` (minimum version,
 * cipher list) into node:tls `SecureContextOptions`; `tlsPolicyFromFlags` (there too) builds the
 * policy from upstream's `--tls-min-version` and `--cipher-suites` values.
 *
 * ```ts
 * import tls from "node:tls";
 * import type { Logger } from "@knp/core/log";
 * import { secureContextOptions, type TlsPolicy } from "./tls_policy.ts";
 *
 * function serve(logger: Logger, policy: TlsPolicy): tls.Server {
 *   const files = new TlsFiles({ cert: "server.crt", key: "server.key", ca: "ca.crt", logger });
 *   const server = tls.createServer({
 *     ...secureContextOptions(files.current(), policy),
 *     requestCert: true,
 *     rejectUnauthorized: true,
 *   });
 *   files.onChange((material) => server.setSecureContext(secureContextOptions(material, policy)));
 *   return server;
 * }
 * ```
 *
 * This module does not import grpc-js; `grpc_credentials.ts` adapts a {@linkcode TlsSource} to
 * grpc-js's certificate providers.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { createHash, createPrivateKey, X509Certificate } from "node:crypto";
import { errorMessage, KnpError } from "@knp/core/errors";
import { type Logger, nullLogger } from "@knp/core/log";
import { certificatesOutOfDate } from "./cert_validity.ts";

/** PEM material for TLS, as read from files. */
export interface TlsMaterial {
  /** PEM certificate chain. */
  cert?: Uint8Array | undefined;
  /** PEM private key. */
  key?: Uint8Array | undefined;
  /** CA bundle: verifies the peer (server side: enables mTLS). */
  ca?: Uint8Array | undefined;
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
  /** When the certificate expires. */
  notAfter: Date;
}

/** Options of {@linkcode TlsFiles}. Empty or missing paths mean "no such file". */
export interface TlsFilesOptions {
  /** PEM certificate (chain): the leaf first. */
  cert?: string | undefined;
  /** PEM private key matching the first certificate of `cert`. */
  key?: string | undefined;
  /** PEM CA bundle (one or more certificates). */
  ca?: string | undefined;
  /** How often to look at the files; 0 disables polling (use `refresh()`). @default 1000 */
  pollIntervalMs?: number;
  /** Where reloads (info) and rejected files (error) are reported. */
  logger?: Logger;
}

interface Parsed {
  material: TlsMaterial;
  expiry: CertificateExpiry[];
  /** Certificates outside their validity window now: the reason, the file and the window. */
  outOfDate: Record<string, string>[];
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
  return { material: raw, expiry, summary, outOfDate: outOfDate(paths, raw) };
}

function outOfDate(paths: TlsFilesOptions, raw: TlsMaterial): Record<string, string>[] {
  return [
    ...(paths.cert && raw.cert ? certificatesOutOfDate(paths.cert, raw.cert) : []),
    ...(paths.ca && raw.ca ? certificatesOutOfDate(paths.ca, raw.ca) : []),
  ];
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
    this.#warnOutOfDate();
    this.#schedule();
  }

  /** The paths being watched (absent ones are undefined). */
  get paths(): Readonly<
    { cert?: string | undefined; key?: string | undefined; ca?: string | undefined }
  > {
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

  /** Same as `close()`. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** Logs an adopted reload, and warns about any certificate outside its validity window. */
  #announce(parsed: Parsed): void {
    this.#log.info("TLS files reloaded; new handshakes use them", {
      ...this.paths,
      ...parsed.summary,
    });
    this.#warnOutOfDate();
  }

  /** One WARN per certificate that is expired or not yet valid (peers will reject it). */
  #warnOutOfDate(): void {
    for (const problem of this.#parsed.outOfDate) {
      this.#log.warn(`TLS certificate ${problem.reason}: peers will reject it`, problem);
    }
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
    if (candidate === this.#reportedBad) {
      // Debug, once per poll: tests await "N more polls saw it" instead of sleeping.
      this.#log.debug("TLS files still rejected; unchanged since reported", this.paths);
      return false;
    }
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
    this.#announce(parsed);
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
