/**
 * Dials endpoints for the agent with a deadline, and words failures as Go's net package does,
 * because callers (kube-apiserver, upstream tests, HTTP status mapping) match on those substrings:
 * "connection refused", "i/o timeout", "no such host".
 *
 * @module
 */

import { KnpError } from "@knp/core/errors";

/** What the agent needs of a dialed endpoint connection. */
export interface EndpointSocket {
  read(buffer: Uint8Array): Promise<number | null>;
  write(data: Uint8Array): Promise<number>;
  close(): void;
}

/** Dials `address` ("host:port") over `protocol`, failing after `timeoutMs`. */
export type Dialer = (
  protocol: string,
  address: string,
  options: { timeoutMs: number; signal?: AbortSignal },
) => Promise<EndpointSocket>;

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

function badAddress(address: string, why: string): KnpError {
  return new KnpError("DIAL_FAILED", `dial tcp: address ${address}: ${why}`);
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
  if (/lookup address|Name or service not known|No address associated/i.test(message)) {
    return `dial tcp: lookup ${hostname}: no such host`;
  }
  if (/unreachable/i.test(message)) return `dial tcp ${address}: connect: network is unreachable`;
  return `dial tcp ${address}: ${message}`;
}

/** The production dialer: `Deno.connect` raced against the deadline and the signal. */
export const denoDialer: Dialer = (protocol, address, { timeoutMs, signal }) => {
  if (protocol !== "tcp") {
    return Promise.reject(
      new KnpError("DIAL_FAILED", `dial ${protocol}: unknown network ${protocol}`),
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
    reject(new KnpError("TIMEOUT", `dial tcp ${address}: i/o timeout`));
  }, timeoutMs);
  const onAbort = () => {
    if (settled) return;
    finish();
    reject(new KnpError("DIAL_FAILED", `dial tcp ${address}: operation was canceled`));
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
      reject(new KnpError("DIAL_FAILED", describeDialError(address, err), { cause: err }));
    },
  );
  return promise;
};
