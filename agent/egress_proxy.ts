/**
 * The agent's egress through an HTTP CONNECT proxy, for dials to destinations and for the
 * WebSocket link to servers.
 *
 * Where the proxy comes from:
 * - `--knp-egress-proxy` empty (the default): the environment: `HTTPS_PROXY`/`https_proxy`, else
 *   `HTTP_PROXY`/`http_proxy` (every tunnel is `CONNECT`, so either kind of proxy serves); the
 *   bypass list is `NO_PROXY`/`no_proxy` plus `--knp-egress-no-proxy`.
 * - `--knp-egress-proxy=http://[user:pw@]host:port`: that proxy; the bypass list is
 *   `--knp-egress-no-proxy` alone, and no proxy variable is read.
 * - `--knp-egress-proxy=none`: no proxy, whatever the environment says.
 *
 * The bypass syntax is `NO_PROXY`'s (see `@knp/transport/http_proxy`); loopback is not bypassed
 * implicitly. The destination policy is checked on the real destination before any proxy is
 * contacted ({@linkcode egressDialer} puts the policy in front).
 *
 * The gRPC link does not use these settings: grpc-js reads `grpc_proxy`/`https_proxy`/
 * `http_proxy` and `no_grpc_proxy`/`no_proxy` itself (lower case only).
 *
 * @module
 */

import type { FlagSpec } from "@knp/cli/flags";
import type { PermissionNeed } from "@knp/cli/permissions";
import { KnpError } from "@knp/core/errors";
import type { DestinationRule } from "@knp/core/destination_policy";
import { type Logger, nullLogger } from "@knp/core/log";
import {
  bypassesProxy,
  connectTarget,
  type HttpProxy,
  openProxyTunnel,
  parseNoProxy,
  parseProxyUrl,
  ProxyConnectError,
} from "@knp/transport/http_proxy";
import {
  classifyConnectError,
  denoDialer,
  type Dialer,
  EndpointDialError,
  type EndpointSocket,
  splitHostPort,
} from "./dialer.ts";
import {
  type AgentDestinationOptions,
  agentDestinationPolicy,
  policyDialer,
} from "./destination_flags.ts";

/** The egress proxy fields of the agent's options. */
export interface AgentEgressOptions {
  /** `--knp-egress-proxy`: `""` (environment), `none`, or an `http://` URL. @default "" */
  knpEgressProxy: string;
  /** `--knp-egress-no-proxy`: destinations dialed without the proxy. @default [] */
  knpEgressNoProxy: string[];
}

/** The value of `--knp-egress-proxy` that turns the proxy off. */
export const NO_EGRESS_PROXY = "none";

/** The proxy variables read when `--knp-egress-proxy` is empty, in order of preference. */
export const PROXY_ENV = ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"] as const;
/** The bypass variables read when `--knp-egress-proxy` is empty. */
export const NO_PROXY_ENV = ["NO_PROXY", "no_proxy"] as const;

/** The egress proxy flags, spread into `AGENT_FLAGS`. */
export const AGENT_EGRESS_FLAGS: readonly FlagSpec[] = [
  {
    name: "knp-egress-proxy",
    type: "string",
    default: "",
    help: "knp only: HTTP proxy (http://[user:password@]host:port) the agent tunnels through " +
      "with CONNECT, for dials to destinations and for the WebSocket link (not gRPC). Empty: " +
      "HTTPS_PROXY/https_proxy, else HTTP_PROXY/http_proxy, with NO_PROXY/no_proxy; none: no " +
      "proxy whatever the environment says.",
    implemented: true,
  },
  {
    name: "knp-egress-no-proxy",
    type: "stringSlice",
    default: [],
    help: "knp only: destinations reached without the proxy, NO_PROXY syntax (*, name (and its " +
      "subdomains), .suffix, IP, CIDR, each with an optional :port); added to NO_PROXY when the " +
      "proxy comes from the environment. Loopback is not bypassed unless listed.",
    implemented: true,
  },
];

/** A resolved egress proxy: where it is, what bypasses it, and where that came from. */
export interface EgressProxy {
  /** The proxy. */
  readonly proxy: HttpProxy;
  /** Destinations dialed directly. */
  readonly noProxy: readonly DestinationRule[];
  /** The flag or variable the proxy came from. */
  readonly source: string;
}

/** The proxy for a dial to `address` (`host:port`), or undefined to dial it directly. */
export function proxyFor(egress: EgressProxy | undefined, address: string): HttpProxy | undefined {
  if (egress === undefined || bypassesProxy(egress.noProxy, address)) return undefined;
  return egress.proxy;
}

type EnvGet = (name: string) => string | undefined;

/**
 * Reads a variable the process may read; one it may not (a binary compiled with an older
 * permission set) counts as unset rather than failing the start.
 */
const readGrantedEnv: EnvGet = (name) =>
  Deno.permissions.querySync({ name: "env", variable: name }).state === "granted"
    ? Deno.env.get(name)
    : undefined;

function firstSet(names: readonly string[], env: EnvGet): [string, string] | undefined {
  for (const name of names) {
    const value = env(name)?.trim();
    if (value) return [name, value];
  }
  return undefined;
}

/**
 * Checks the egress flags (the environment is read only when the agent starts).
 *
 * @throws {KnpError} `INVALID_FLAG` naming the flag.
 */
export function validateAgentEgressOptions(o: AgentEgressOptions): void {
  if (o.knpEgressProxy !== "" && o.knpEgressProxy !== NO_EGRESS_PROXY) {
    parseProxyUrl(o.knpEgressProxy, "--knp-egress-proxy");
  }
  parseNoProxy(o.knpEgressNoProxy.join(","), "--knp-egress-no-proxy", true);
  if (o.knpEgressProxy === NO_EGRESS_PROXY && o.knpEgressNoProxy.length > 0) {
    throw new KnpError(
      "INVALID_FLAG",
      "--knp-egress-no-proxy: has no effect with --knp-egress-proxy=none",
    );
  }
}

/**
 * The egress proxy of validated options; with `--knp-egress-proxy` empty, from `env`. A bad
 * proxy variable fails (`CONFIG`); unreadable `NO_PROXY` entries are skipped with a warning.
 */
export function egressProxyOf(
  o: AgentEgressOptions,
  log: Logger = nullLogger,
  env: EnvGet = readGrantedEnv,
): EgressProxy | undefined {
  const flagRules = parseNoProxy(o.knpEgressNoProxy.join(","), "--knp-egress-no-proxy", true).rules;
  if (o.knpEgressProxy === NO_EGRESS_PROXY) return undefined;
  if (o.knpEgressProxy !== "") {
    const proxy = parseProxyUrl(o.knpEgressProxy, "--knp-egress-proxy");
    return announced({ proxy, noProxy: flagRules, source: "--knp-egress-proxy" }, log);
  }
  const found = firstSet(PROXY_ENV, env);
  if (found === undefined) return undefined;
  const [source, url] = found;
  let proxy: HttpProxy;
  try {
    proxy = parseProxyUrl(url, source);
  } catch (err) {
    throw new KnpError("CONFIG", (err as Error).message, { cause: err });
  }
  const bypass = firstSet(NO_PROXY_ENV, env);
  const envList = bypass ? parseNoProxy(bypass[1], bypass[0], false) : { rules: [], invalid: [] };
  if (envList.invalid.length > 0) {
    log.warn("ignoring unreadable NO_PROXY entries", {
      variable: bypass?.[0],
      entries: envList.invalid,
    });
  }
  return announced({ proxy, noProxy: [...envList.rules, ...flagRules], source }, log);
}

function announced(egress: EgressProxy, log: Logger): EgressProxy {
  log.info("egress through an HTTP proxy", {
    proxy: egress.proxy.display,
    source: egress.source,
    noProxy: egress.noProxy.map((rule) => rule.text),
  });
  return egress;
}

/** The permissions the egress settings need: read of the proxy variables when they are used. */
export function egressProxyNeeds(o: AgentEgressOptions): PermissionNeed[] {
  if (o.knpEgressProxy !== "") return [];
  const reason = "the egress proxy from the environment (--knp-egress-proxy unset)";
  return [...PROXY_ENV, ...NO_PROXY_ENV].map((value) => ({ kind: "env", value, reason }));
}

/** `socket` with `early` bytes read first (what arrived behind the proxy's answer). */
function withEarlyBytes(socket: EndpointSocket, early: Uint8Array): EndpointSocket {
  if (early.length === 0) return socket;
  let pending: Uint8Array | undefined = early;
  return {
    read(buffer) {
      if (pending === undefined) return socket.read(buffer);
      const n = Math.min(buffer.length, pending.length);
      buffer.set(pending.subarray(0, n));
      pending = n === pending.length ? undefined : pending.subarray(n);
      return Promise.resolve(n);
    },
    write: (data) => socket.write(data),
    close: () => socket.close(),
  };
}

/** The error of a CONNECT exchange that failed, as a dial error for `address`. */
function tunnelError(address: string, proxy: HttpProxy, err: unknown, timedOut: boolean) {
  if (timedOut) {
    const text = `dial tcp ${address}: i/o timeout (waiting for proxy ${proxy.display})`;
    return new EndpointDialError("TIMEOUT", text, "dial-timeout", { cause: err });
  }
  if (err instanceof ProxyConnectError) {
    return new EndpointDialError("DIAL_FAILED", `dial tcp ${address}: ${err.message}`, err.kind, {
      cause: err,
    });
  }
  if (err instanceof EndpointDialError) return err;
  const text = `dial tcp ${address}: proxy ${proxy.display}: ${(err as Error)?.message ?? err}`;
  return new EndpointDialError("DIAL_FAILED", text, classifyConnectError(err), { cause: err });
}

/**
 * A dialer that reaches `address` through `proxy`: TCP to the proxy (with `TCP_NODELAY`, by
 * `base`), `CONNECT address`, and the tunnel as the socket; all within the dial's deadline.
 */
async function dialThrough(
  base: Dialer,
  proxy: HttpProxy,
  address: string,
  options: Parameters<Dialer>[2],
): Promise<EndpointSocket> {
  const started = Date.now();
  let socket: EndpointSocket;
  try {
    socket = await base("tcp", connectTarget(proxy.hostname, proxy.port), options);
  } catch (err) {
    const inner = err instanceof Error ? err.message : String(err);
    const kind = err instanceof EndpointDialError ? err.kind : classifyConnectError(err);
    const code = kind === "dial-timeout" ? "TIMEOUT" : "DIAL_FAILED";
    const text = `dial tcp ${address}: proxyconnect tcp: ${inner}`;
    throw new EndpointDialError(code, text, kind, { cause: err });
  }
  const deadline = new AbortController();
  const timer = setTimeout(
    () => deadline.abort(),
    Math.max(1, options.timeoutMs - (Date.now() - started)),
  );
  const onAbort = () => deadline.abort();
  options.signal?.addEventListener("abort", onAbort, { once: true });
  try {
    const early = await openProxyTunnel(socket, address, proxy, deadline.signal);
    return withEarlyBytes(socket, early);
  } catch (err) {
    try {
      socket.close();
    } catch { /* closed */ }
    const timedOut = deadline.signal.aborted && options.signal?.aborted !== true;
    throw tunnelError(address, proxy, err, timedOut);
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener("abort", onAbort);
  }
}

/**
 * `base` with the egress proxy: a dial goes through the proxy unless the bypass list names its
 * destination. A refusal by the proxy fails the dial with the proxy's status and reason (kind
 * `dial-refused`, `dial-timeout` for 504/408).
 */
export function proxyDialer(
  egress: EgressProxy | undefined,
  log: Logger,
  base: Dialer = denoDialer,
): Dialer {
  if (egress === undefined) return base;
  return (protocol, address, options) => {
    const proxy = protocol === "tcp" ? proxyFor(egress, address) : undefined;
    if (proxy === undefined) return base(protocol, address, options);
    try {
      splitHostPort(address);
    } catch (err) {
      return Promise.reject(err);
    }
    log.debug("dialing through the egress proxy", {
      address,
      proxy: proxy.display,
      ...(options.dialId !== undefined ? { dialID: options.dialId } : {}),
    });
    return dialThrough(base, proxy, address, options);
  };
}

/**
 * The agent's production dialer: the destination policy (checked on the real destination first),
 * then the egress proxy when one applies, then `Deno.connect`.
 */
export function egressDialer(
  o: AgentDestinationOptions,
  egress: EgressProxy | undefined,
  log: Logger,
): Dialer {
  return policyDialer(agentDestinationPolicy(o), proxyDialer(egress, log), log);
}
