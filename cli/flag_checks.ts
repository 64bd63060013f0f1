/**
 * Validation helpers shared by both binaries' option checks; each failure is an `INVALID_FLAG`
 * error with a one-line message naming the flag.
 *
 * @module
 */

import { formatGoDuration } from "./duration.ts";
import { invalidFlag } from "./flags.ts";

/**
 * Throws if `path` does not exist, naming the flag. Like upstream, only "does not exist" fails;
 * other stat errors (such as missing read permission) are left to the code that opens the file.
 *
 * @param flag The flag name without dashes, e.g. `"server-cert"`.
 * @param path The file path given.
 * @throws {KnpError} `INVALID_FLAG` if nothing exists at `path`.
 */
export function requireExistingFile(flag: string, path: string): void {
  try {
    Deno.statSync(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw invalidFlag(`--${flag}: file "${path}" does not exist`);
    }
  }
}

/**
 * Checks a certificate/key flag pair the way upstream does: each one given must exist, and each
 * needs the other (the key is checked first).
 *
 * @param certFlag The certificate flag without dashes, e.g. `"agent-cert"`.
 * @param cert Its value.
 * @param keyFlag The key flag without dashes, e.g. `"agent-key"`.
 * @param key Its value.
 * @throws {KnpError} `INVALID_FLAG` naming the missing or nonexistent one.
 */
export function requireCertKeyPair(
  certFlag: string,
  cert: string,
  keyFlag: string,
  key: string,
): void {
  if (key !== "") {
    requireExistingFile(keyFlag, key);
    if (cert === "") {
      throw invalidFlag(`--${certFlag} must be set when --${keyFlag} is set ("${key}")`);
    }
  }
  if (cert !== "") {
    requireExistingFile(certFlag, cert);
    if (key === "") {
      throw invalidFlag(`--${keyFlag} must be set when --${certFlag} is set ("${cert}")`);
    }
  }
}

/**
 * Throws unless `value > 0` (`NaN` fails too).
 *
 * @param flag The flag name without dashes.
 * @param value Its value.
 * @throws {KnpError} `INVALID_FLAG`: `--flag: must be greater than 0, got value`.
 */
export function requirePositive(flag: string, value: number): void {
  if (!(value > 0)) throw invalidFlag(`--${flag}: must be greater than 0, got ${value}`);
}

/**
 * Throws if contention profiling is asked for without profiling, as upstream's binaries do.
 *
 * @param enableProfiling `--enable-profiling`.
 * @param enableContentionProfiling `--enable-contention-profiling`.
 * @throws {KnpError} `INVALID_FLAG` naming both flags.
 */
export function requireProfilingForContention(
  enableProfiling: boolean,
  enableContentionProfiling: boolean,
): void {
  if (enableContentionProfiling && !enableProfiling) {
    throw invalidFlag("--enable-contention-profiling requires --enable-profiling");
  }
}

/** Formats milliseconds as a Go duration for messages; non-finite values as they are. */
export function showDuration(ms: number): string {
  return Number.isFinite(ms) ? formatGoDuration(ms) : String(ms);
}
