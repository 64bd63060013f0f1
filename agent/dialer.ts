/**
 * Dials endpoints for the agent with a deadline, and words failures as Go's net package does,
 * because callers (kube-apiserver, upstream tests, HTTP status mapping) match on those substrings:
 * "connection refused", "i/o timeout", "no such host".
 *
 * Each failure is also classified once, here, from the Deno error's type into the shared
 * {@linkcode DialErrorKind} ({@linkcode EndpointDialError.kind}); knp servers receive that kind
 * in the DIAL_RSP's knp tag instead of guessing it from the text.
 *
 * @module
 */

import { KnpError, type KnpErrorCode } from "@knp/core/errors";
import type { DialErrorKind } from "@knp/core/dial_errors";

/** What the agent needs of a dialed endpoint connection. */
export interface EndpointSocket {
  /** Reads into `buffer`; `null` at end of stream. */
  read(buffer: Uint8Array): Promise<number | null>;
  /** Writes some of `data`; resolves with the count written. */
  write(data: Uint8Array): Promise<number>;
  /** Closes the socket. */
  close(): void;
}

/** Dials `address` ("host:port") over `protocol`, failing after `timeoutMs`. */
export type Dialer = (
  protocol: string,
  address: string,
  options: DialOptions,
) => Promise<EndpointSocket>;

/** How to dial, and who asked (for the destination policy's audit line). */
export interface DialOptions {
  /** Deadline of the dial. */
  timeoutMs: number;
  /** Cancels the dial. */
  signal?: AbortSignal;
  /** The server whose DIAL_REQ this is. */
  serverId?: string;
  /** The DIAL_REQ's `random`. */
  dialId?: bigint;
}

/** Upstream's hard-coded agent dial timeout. */
export const DEFAULT_DIAL_TIMEOUT_MS = 5_000;

/** Splits "host:port" and "[v6]:port". @throws {KnpError} when malformed */
export function splitHostPort(address: string): { hostname: string; port: number } {
  let host: string;
  let portText: string;
  if (address.startsWith("[")) {
    const end = address.indexOf("]");
    if (end < 0 || address[end + 1] !== ":") throw badAddress(address, "missing port in address");
    host = address.slice(1, end);
    portText = address.slice(end + 2);
  } else {
    const i = address.lastIndexOf(":");
    if (i < 0) throw badAddress(address, "missing port in address");
    host = address.slice(0, i);
    portText = address.slice(i + 1);
    if (host.includes(":")) throw badAddress(address, "too many colons in address");
  }
  const port = Number(portText);
  if (!/^\d+$/.test(portText) || port > 65535) throw badAddress(address, "invalid port");
  return { hostname: host === "" ? "0.0.0.0" : host, port };
}

/** A failed endpoint dial: Go-style text, and what went wrong as a type. */
export class EndpointDialError extends KnpError {
  /** The failure's kind in the shared dial error taxonomy. */
  readonly kind: DialErrorKind;
  /** An error with a stable `code`, Go-style `message` and dial error `kind`. */
  constructor(
    code: KnpErrorCode,
    message: string,
    kind: DialErrorKind,
    options?: ErrorOptions,
  ) {
    super(code, message, options);
    this.name = "EndpointDialError";
    this.kind = kind;
  }
}

function badAddress(address: string, why: string): KnpError {
  return new EndpointDialError("DIAL_FAILED", `dial tcp: address ${address}: ${why}`, "unknown");
}

const DNS_FAILURE = /lookup address|Name or service not known|No address associated/i;

/** Classifies the error of a failed `Deno.connect` (or any dialer's error) by its type. */
export function classifyConnectError(err: unknown): DialErrorKind {
  if (err instanceof EndpointDialError) return err.kind;
  if (err instanceof Deno.errors.ConnectionRefused) return "dial-refused";
  if (err instanceof Deno.errors.ConnectionReset) return "dial-refused";
  if (err instanceof Deno.errors.TimedOut) return "dial-timeout";
  if (err instanceof KnpError && err.code === "TIMEOUT") return "dial-timeout";
  const message = err instanceof Error ? err.message : String(err);
  // Deno reports a failed name lookup as a plain error (or NotFound) whose text names it.
  if (DNS_FAILURE.test(message)) return "dns-failure";
  if (/unreachable/i.test(message)) return "dial-refused";
  return "unknown";
}

/** Go-style text for a failed dial. */
export function describeDialError(address: string, err: unknown): string {
  if (err instanceof KnpError) return err.message;
  const { hostname } = (() => {
    try {
      return splitHostPort(address);
    } catch {
      return { hostname: address };
    }
  })();
  if (err instanceof Deno.errors.ConnectionRefused) {
    return `dial tcp ${address}: connect: connection refused`;
  }
  if (err instanceof Deno.errors.TimedOut) return `dial tcp ${address}: i/o timeout`;
  if (err instanceof Deno.errors.ConnectionReset) {
    return `dial tcp ${address}: connect: connection reset by peer`;
  }
  const message = err instanceof Error ? err.message : String(err);
  if (DNS_FAILURE.test(message)) {
    return `dial tcp: lookup ${hostname}: no such host`;
  }
  if (/unreachable/i.test(message)) return `dial tcp ${address}: connect: network is unreachable`;
  return `dial tcp ${address}: ${message}`;
}

/** The production dialer: `Deno.connect` raced against the deadline and the signal. */
export const denoDialer: Dialer = (protocol, address, { timeoutMs, signal }) => {
  if (protocol !== "tcp") {
    return Promise.reject(
      new EndpointDialError(
        "DIAL_FAILED",
        `dial ${protocol}: unknown network ${protocol}`,
        "unknown",
      ),
    );
  }
  let target;
  try {
    target = splitHostPort(address);
  } catch (err) {
    return Promise.reject(err);
  }
  const { promise, resolve, reject } = Promise.withResolvers<EndpointSocket>();
  let settled = false;
  const finish = () => {
    settled = true;
    clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
  };
  const timer = setTimeout(() => {
    if (settled) return;
    finish();
    reject(new EndpointDialError("TIMEOUT", `dial tcp ${address}: i/o timeout`, "dial-timeout"));
  }, timeoutMs);
  const onAbort = () => {
    if (settled) return;
    finish();
    reject(
      new EndpointDialError(
        "DIAL_FAILED",
        `dial tcp ${address}: operation was canceled`,
        "unknown",
      ),
    );
  };
  signal?.addEventListener("abort", onAbort, { once: true });
  Deno.connect({ hostname: target.hostname, port: target.port, transport: "tcp" }).then(
    (conn) => {
      if (settled) return conn.close(); // too late: the dial already failed or was cancelled
      finish();
      try {
        conn.setNoDelay(true);
      } catch { /* not fatal */ }
      resolve(conn);
    },
    (err) => {
      if (settled) return;
      finish();
      const text = describeDialError(address, err);
      reject(
        new EndpointDialError("DIAL_FAILED", text, classifyConnectError(err), { cause: err }),
      );
    },
  );
  return promise;
};
