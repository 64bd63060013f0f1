/**
 * HTTP CONNECT proxies for outgoing TCP: the proxy's URL (`HTTPS_PROXY` style), the bypass list
 * (`NO_PROXY` style) and the CONNECT exchange on a socket already connected to the proxy.
 *
 * After {@linkcode openProxyTunnel} resolves, the socket carries the tunnel: what is written
 * reaches `target`, TLS can start on it (`Deno.startTls`) as on a direct connection.
 *
 * The bypass list follows Go's `NO_PROXY` reading (entries separated by commas: `*`; a name,
 * which also covers its subdomains; `.name` or `*.name`, only the subdomains; an IP address; a
 * CIDR; each optionally with `:port`), except that loopback destinations are not bypassed
 * implicitly (as curl): list `localhost,127.0.0.0/8,::1` to bypass them.
 *
 * ```ts ignore
 * const proxy = parseProxyUrl("http://user:pw@proxy.corp:3128", "HTTPS_PROXY");
 * const conn = await Deno.connect({ hostname: proxy.hostname, port: proxy.port });
 * const early = await openProxyTunnel(conn, "10.0.0.7:10250", proxy);
 * ```
 *
 * @module
 */

import { KnpError } from "@knp/core/errors";
import type { DialErrorKind } from "@knp/core/dial_errors";
import {
  type DestinationRule,
  parseDestinationRule,
  parseDialAddress,
  ruleHost,
  ruleMatches,
} from "@knp/core/destination_policy";

/** An HTTP proxy that tunnels TCP with `CONNECT`. */
export interface HttpProxy {
  /** The proxy's host (IPv6 without brackets). */
  readonly hostname: string;
  /** The proxy's port. */
  readonly port: number;
  /** `Basic …` credentials from the URL's userinfo, sent as `Proxy-Authorization`. */
  readonly authorization?: string;
  /** The URL without credentials, for logs and error texts. */
  readonly display: string;
}

function base64Utf8(text: string): string {
  let bin = "";
  for (const b of new TextEncoder().encode(text)) bin += String.fromCharCode(b);
  return btoa(bin);
}

/**
 * Parses a proxy URL: `http://[user:password@]host[:port]` (port 80 when absent), or
 * `host:port` without a scheme (read as `http://`).
 *
 * @param source The flag or variable it came from, named in errors.
 * @throws {KnpError} `INVALID_FLAG` for another scheme (`https://`, `socks5://`) or a bad URL.
 */
export function parseProxyUrl(text: string, source: string): HttpProxy {
  const trimmed = text.trim();
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(trimmed) ? trimmed : `http://${trimmed}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    throw new KnpError("INVALID_FLAG", `${source}: not a proxy URL: "${text}"`);
  }
  if (url.protocol !== "http:") {
    throw new KnpError(
      "INVALID_FLAG",
      `${source}: only http:// proxies (HTTP CONNECT) are supported, got "${url.protocol}//"`,
    );
  }
  if (url.hostname === "") {
    throw new KnpError("INVALID_FLAG", `${source}: no proxy host in "${text}"`);
  }
  const hostname = url.hostname.replace(/^\[(.*)\]$/, "$1");
  const port = url.port === "" ? 80 : Number(url.port);
  const display = `http://${url.host}`;
  if (url.username === "" && url.password === "") return { hostname, port, display };
  const user = decodeURIComponent(url.username);
  const password = decodeURIComponent(url.password);
  return { hostname, port, display, authorization: `Basic ${base64Utf8(`${user}:${password}`)}` };
}

/** The rules of one `NO_PROXY` entry (a bare name also covers its subdomains). */
function entryRules(entry: string, source: string): DestinationRule[] {
  if (entry === "*") return [parseDestinationRule("*:*", source)];
  let host = entry;
  let port = "*";
  const bracket = /^\[([^\]]+)\](?::(\d+))?$/.exec(entry);
  const hostPort = /^([^:]+):(\d+)$/.exec(entry);
  if (bracket) [host, port] = [bracket[1]!, bracket[2] ?? "*"];
  else if (hostPort) [host, port] = [hostPort[1]!, hostPort[2]!];
  host = host.toLowerCase().replace(/\.$/, "");
  if (host.startsWith("*.")) host = host.slice(1);
  const rule = (h: string) => parseDestinationRule(`${ruleHost(h)}:${port}`, source);
  if (host.startsWith(".")) return [rule(`*${host}`)];
  const single = rule(host);
  return single.host.kind === "name" ? [single, rule(`*.${host}`)] : [single];
}

/** A parsed bypass list. */
export interface NoProxyList {
  /** Destinations dialed directly. */
  readonly rules: readonly DestinationRule[];
  /** Entries that could not be read (skipped; only in lenient parsing). */
  readonly invalid: readonly string[];
}

/**
 * Parses a `NO_PROXY`-style list (comma- or space-separated).
 *
 * @param strict Throw on an unreadable entry (flags) instead of skipping it (environment).
 * @throws {KnpError} `INVALID_FLAG` naming `source` and the entry, when `strict`.
 */
export function parseNoProxy(text: string, source: string, strict: boolean): NoProxyList {
  const rules: DestinationRule[] = [];
  const invalid: string[] = [];
  for (const entry of text.split(/[\s,]+/).filter((e) => e !== "")) {
    try {
      rules.push(...entryRules(entry, source));
    } catch (err) {
      if (strict) {
        throw new KnpError("INVALID_FLAG", `${source}: bad entry "${entry}"`, { cause: err });
      }
      invalid.push(entry);
    }
  }
  return { rules, invalid };
}

/** Whether a dial to `address` (`host:port`) bypasses the proxy. */
export function bypassesProxy(noProxy: readonly DestinationRule[], address: string): boolean {
  const target = parseDialAddress(address);
  return target !== undefined && noProxy.some((rule) => ruleMatches(rule, target));
}

/** What the CONNECT exchange needs of a socket connected to the proxy (a `Deno.Conn` has it). */
export interface ProxySocket {
  /** Reads into `buffer`; `null` at end of stream. */
  read(buffer: Uint8Array): Promise<number | null>;
  /** Writes some of `data`; resolves with the count written. */
  write(data: Uint8Array): Promise<number>;
  /** Closes the socket. */
  close(): void;
}

/** A proxy answered `CONNECT` with something other than `2xx`. */
export class ProxyConnectError extends KnpError {
  /** The proxy's status code (0 when its answer was not HTTP). */
  readonly status: number;
  /** The reason phrase of the status line. */
  readonly reason: string;
  /** The dial error kind the refusal maps to: 504/408 `dial-timeout`, else `dial-refused`. */
  readonly kind: DialErrorKind;
  /** A refusal by `proxy` (its display URL) of the tunnel to `target`. */
  constructor(proxy: string, target: string, status: number, reason: string) {
    const what = status === 0 ? reason : `${status}${reason ? " " + reason : ""}`;
    super("DIAL_FAILED", `proxy ${proxy} refused CONNECT ${target}: ${what}`);
    this.name = "ProxyConnectError";
    this.status = status;
    this.reason = reason;
    this.kind = status === 504 || status === 408 ? "dial-timeout" : "dial-refused";
  }
}

const MAX_HEAD = 16 * 1024;
const HEAD_END = [13, 10, 13, 10];

function headEnd(buf: Uint8Array, from: number, to: number): number {
  for (let i = Math.max(0, from); i + 4 <= to; i++) {
    if (HEAD_END.every((b, k) => buf[i + k] === b)) return i;
  }
  return -1;
}

/** Reads the proxy's response head; returns it and the bytes behind it. */
async function readHead(
  conn: ProxySocket,
  fail: (reason: string) => ProxyConnectError,
): Promise<{ head: string; rest: Uint8Array }> {
  const buf = new Uint8Array(MAX_HEAD);
  let len = 0;
  for (;;) {
    if (len === buf.length) throw fail(`answer head larger than ${MAX_HEAD} bytes`);
    const n = await conn.read(buf.subarray(len));
    if (n === null) throw fail("the proxy closed the connection without answering");
    const end = headEnd(buf, len - 3, len + n);
    len += n;
    if (end >= 0) {
      const head = new TextDecoder("latin1").decode(buf.subarray(0, end));
      return { head, rest: buf.slice(end + 4, len) };
    }
  }
}

/** `CONNECT target` as the request line and `Host`, with credentials when the proxy has them. */
function connectRequest(target: string, proxy: HttpProxy): Uint8Array {
  const lines = [`CONNECT ${target} HTTP/1.1`, `Host: ${target}`];
  if (proxy.authorization) lines.push(`Proxy-Authorization: ${proxy.authorization}`);
  return new TextEncoder().encode(lines.join("\r\n") + "\r\n\r\n");
}

/**
 * Asks the proxy `conn` is connected to for a tunnel to `target` (`host:port`, IPv6 bracketed).
 * Resolves with the bytes that arrived behind the proxy's answer (the destination's first bytes,
 * usually none); the socket then carries the tunnel. Aborting `signal` closes `conn`.
 *
 * @throws {ProxyConnectError} when the proxy answers anything but `2xx` (with its status and
 *   reason), closes the connection, or does not speak HTTP; the socket's error when it fails.
 */
export async function openProxyTunnel(
  conn: ProxySocket,
  target: string,
  proxy: HttpProxy,
  signal?: AbortSignal,
): Promise<Uint8Array> {
  const fail = (reason: string) => new ProxyConnectError(proxy.display, target, 0, reason);
  const onAbort = () => {
    try {
      conn.close();
    } catch { /* closed */ }
  };
  if (signal?.aborted) throw signal.reason;
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    const request = connectRequest(target, proxy);
    for (let off = 0; off < request.length;) off += await conn.write(request.subarray(off));
    const { head, rest } = await readHead(conn, fail);
    const status = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(head.split("\r\n", 1)[0] ?? "");
    if (!status) throw fail(`not an HTTP answer: ${JSON.stringify(head.slice(0, 80))}`);
    const code = Number(status[1]);
    if (code < 200 || code > 299) {
      throw new ProxyConnectError(proxy.display, target, code, status[2] ?? "");
    }
    return rest;
  } catch (err) {
    if (signal?.aborted) throw signal.reason;
    throw err;
  } finally {
    signal?.removeEventListener("abort", onAbort);
  }
}

/** `host:port` for a CONNECT request line (IPv6 bracketed). */
export function connectTarget(hostname: string, port: number): string {
  const host = hostname.includes(":") && !hostname.startsWith("[") ? `[${hostname}]` : hostname;
  return `${host}:${port}`;
}
