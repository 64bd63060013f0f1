// This module is browser compatible.
/**
 * Wire constants shared by the Konnectivity server, agent and client: gRPC method paths,
 * metadata keys, and the helpers that read the `agentidentifiers` header.
 *
 * Metadata keys are given in lower case, as gRPC sends them on the wire.
 *
 * @module
 */

/** Method path of the frontend service (the protos declare no package). */
export const PROXY_METHOD_PATH = "/ProxyService/Proxy";

/** Method path of the agent service (the protos declare no package). */
export const AGENT_METHOD_PATH = "/AgentService/Connect";

/** Request metadata: the agent's ID. The server requires exactly one value. */
export const AGENT_ID_KEY = "agentid";

/** Request metadata: URL-query-encoded agent identifiers; zero or one value. */
export const AGENT_IDENTIFIERS_KEY = "agentidentifiers";

/** Request metadata: `Bearer <token>` when the agent authenticates with a token. */
export const AUTHORIZATION_KEY = "authorization";

/** Response header sent by the server before the first packet: the server's ID. */
export const SERVER_ID_KEY = "serverid";

/** Response header sent by the server before the first packet: decimal server count. */
export const SERVER_COUNT_KEY = "servercount";

/** Request metadata of frontends; only logged. */
export const USER_AGENT_KEY = "user-agent";

/** Scheme prefix of the `authorization` value. */
export const BEARER_PREFIX = "Bearer ";

/**
 * Identifier types an agent may advertise in `agentidentifiers`: upstream's five, and knp's
 * `zone` (upstream servers ignore it; upstream agents reject it).
 */
export const IDENTIFIER_TYPES = ["ipv4", "ipv6", "host", "cidr", "default-route", "zone"] as const;

/** One of {@linkcode IDENTIFIER_TYPES}. */
export type IdentifierType = typeof IDENTIFIER_TYPES[number];

/** The identifiers an agent advertises, grouped by type. */
export interface AgentIdentifiers {
  /** IPv4 addresses the agent serves. */
  ipv4: string[];
  /** IPv6 addresses the agent serves. */
  ipv6: string[];
  /** Host names the agent serves. */
  host: string[];
  /** CIDR ranges the agent serves. */
  cidr: string[];
  /** Whether the agent accepts dials to any destination (`defaultRoute` proxy strategy). */
  defaultRoute: boolean;
  /** knp: the agent's zone (its first `zone` value); absent when not given. */
  zone?: string;
}

const TRUE_TEXTS = new Set(["1", "t", "T", "TRUE", "true", "True"]);

/**
 * Parses an `agentidentifiers` value the way the server does.
 *
 * Unknown keys (including `uid`) are ignored, so newer agents can add types. `default-route` is
 * true only when its first value is one of `1 t T TRUE true True`. knp's `zone` takes its first
 * value; without one the field is absent.
 *
 * @example Parse identifiers
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseAgentIdentifiers } from "./header.ts";
 * const ids = parseAgentIdentifiers("host=node1&ipv4=10.0.0.7&default-route=true");
 * assert.deepEqual(ids, {
 *   ipv4: ["10.0.0.7"],
 *   ipv6: [],
 *   host: ["node1"],
 *   cidr: [],
 *   defaultRoute: true,
 * });
 * ```
 *
 * @param text The header value (may be empty).
 * @returns The identifiers, each list in the order given.
 */
export function parseAgentIdentifiers(text: string): AgentIdentifiers {
  const ids: AgentIdentifiers = { ipv4: [], ipv6: [], host: [], cidr: [], defaultRoute: false };
  let sawDefaultRoute = false;
  for (const [key, value] of new URLSearchParams(text)) {
    switch (key) {
      case "ipv4":
      case "ipv6":
      case "host":
      case "cidr":
        ids[key].push(value);
        break;
      case "default-route":
        if (!sawDefaultRoute) ids.defaultRoute = TRUE_TEXTS.has(value);
        sawDefaultRoute = true;
        break;
      case "zone":
        ids.zone ??= value;
        break;
    }
  }
  return ids;
}

/**
 * Returns the error Go's `url.ParseQuery` would report for a query string, or `undefined` when
 * it parses. `URLSearchParams` accepts some inputs Go rejects: a `;` inside a pair, and a `%`
 * not followed by two hex digits.
 *
 * @param text A URL query string without the leading `?`.
 * @returns The first error message, or `undefined`.
 */
export function queryParseError(text: string): string | undefined {
  for (const pair of text.split("&")) {
    if (pair.includes(";")) return "invalid semicolon separator in query";
    const bad = /%(?![0-9A-Fa-f]{2})/.exec(pair);
    if (bad !== null) {
      return `invalid URL escape ${JSON.stringify(pair.slice(bad.index, bad.index + 3))}`;
    }
  }
  return undefined;
}

/**
 * Checks an `--agent-identifiers` flag value the way the agent does before it starts.
 *
 * @example Reject an unknown type
 * ```ts
 * import assert from "node:assert/strict";
 * import { validateAgentIdentifiers } from "./header.ts";
 * assert.throws(() => validateAgentIdentifiers("uid=abc"), {
 *   message: "agent address is invalid: unknown address type: uid",
 * });
 * ```
 *
 * @param text The flag value (may be empty).
 * @throws {Error} `agent address is invalid: ...` when the text does not parse as a URL query
 * or names a type outside {@linkcode IDENTIFIER_TYPES}.
 */
export function validateAgentIdentifiers(text: string): void {
  const parseError = queryParseError(text);
  if (parseError !== undefined) throw new Error(`agent address is invalid: ${parseError}`);
  for (const [key, value] of new URLSearchParams(text)) {
    if (!(IDENTIFIER_TYPES as readonly string[]).includes(key)) {
      throw new Error(`agent address is invalid: unknown address type: ${key}`);
    }
    const problem = identifierValueProblem(key as IdentifierType, value);
    if (problem !== undefined) throw new Error(`agent address is invalid: ${problem}`);
  }
}

/** Whether `text` is a dotted-quad IPv4 address (four decimal octets, no leading zeros). */
export function isIPv4(text: string): boolean {
  const parts = text.split(".");
  return parts.length === 4 &&
    parts.every((p) => /^(0|[1-9][0-9]{0,2})$/.test(p) && Number(p) <= 255);
}

/** Whether `text` is an IPv6 address in text form (no zone, no brackets). */
export function isIPv6(text: string): boolean {
  const halves = text.split("::");
  if (halves.length > 2) return false;
  const groups = (half: string) => half === "" ? [] : half.split(":");
  const all = halves.flatMap(groups);
  let count = all.length;
  const last = all.at(-1);
  if (last !== undefined && last.includes(".")) {
    if (!isIPv4(last)) return false;
    all.pop();
    count++; // an embedded IPv4 address takes two groups
  }
  if (!all.every((g) => /^[0-9A-Fa-f]{1,4}$/.test(g))) return false;
  return halves.length === 2 ? count <= 7 : count === 8;
}

/** Whether `text` is `address/prefix` with a prefix length that fits the address family. */
export function isCidr(text: string): boolean {
  const slash = text.indexOf("/");
  if (slash === -1) return false;
  const address = text.slice(0, slash);
  const bits = text.slice(slash + 1);
  if (!/^(0|[1-9][0-9]{0,2})$/.test(bits)) return false;
  if (isIPv4(address)) return Number(bits) <= 32;
  return isIPv6(address) && Number(bits) <= 128;
}

const BOOL_TEXTS = new Set([...TRUE_TEXTS, "", "0", "f", "F", "FALSE", "false", "False"]);

/**
 * Why an identifier value is unusable, or `undefined` when it is fine: `ipv4` must be an IPv4
 * address, `ipv6` an IPv6 address, `cidr` an address with a fitting prefix length, `host` a
 * non-empty name without spaces, slashes or colons, `default-route` a Go boolean, `zone` a
 * Kubernetes label value (1-63 letters, digits, `-`, `_`, `.`; letter or digit at both ends).
 * (Upstream checks only the types; a bad value there is accepted and never matches.)
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { identifierValueProblem } from "./header.ts";
 * assert.equal(identifierValueProblem("ipv4", "10.0.0.7"), undefined);
 * assert.equal(
 *   identifierValueProblem("cidr", "10.0.0.0/99"),
 *   `cidr "10.0.0.0/99" is not an address/prefix-length (e.g. 10.0.0.0/8 or fd00::/64)`,
 * );
 * ```
 */
export function identifierValueProblem(type: IdentifierType, value: string): string | undefined {
  const hint = /\$[({]/.test(value) ? " (an unexpanded variable?)" : "";
  const bad = (what: string) => `${type} ${JSON.stringify(value)} is not ${what}${hint}`;
  switch (type) {
    case "ipv4":
      return isIPv4(value) ? undefined : bad("an IPv4 address");
    case "ipv6":
      return isIPv6(value) ? undefined : bad("an IPv6 address");
    case "cidr":
      return isCidr(value)
        ? undefined
        : bad("an address/prefix-length (e.g. 10.0.0.0/8 or fd00::/64)");
    case "host":
      return /^[^\s/:]{1,253}$/.test(value) ? undefined : bad("a host name");
    case "default-route":
      return BOOL_TEXTS.has(value) ? undefined : bad("a boolean (true or false)");
    case "zone":
      return /^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$/.test(value)
        ? undefined
        : bad("a zone name (1-63 letters, digits, -, _ or ., a letter or digit at both ends)");
  }
}

/**
 * Strips the port from a dial address, as the server does before matching it against agent
 * identifiers (`destHost` strategy).
 *
 * With at most one colon the text before the colon is kept (`"node1:10250"` → `"node1"`). With
 * more colons the text is an IPv6 address: when it contains `[`, everything from the last colon
 * is cut and surrounding brackets are trimmed (`"[a:b::1]:8080"` → `"a:b::1"`); otherwise it is
 * returned as is (`"::"` → `"::"`). A bracketed address without a port therefore loses its last
 * group (`"[::1]"` → `":"`), exactly like upstream.
 *
 * @example Strip ports
 * ```ts
 * import assert from "node:assert/strict";
 * import { removePortFromHost } from "./header.ts";
 * assert.equal(removePortFromHost("10.0.0.7:443"), "10.0.0.7");
 * assert.equal(removePortFromHost("[fd00::7]:443"), "fd00::7");
 * ```
 *
 * @param address A dial address, usually `host:port`.
 * @returns The host part.
 */
export function removePortFromHost(address: string): string {
  const first = address.indexOf(":");
  if (first === -1 || address.indexOf(":", first + 1) === -1) {
    return first === -1 ? address : address.slice(0, first);
  }
  let host = address;
  if (host.includes("[")) host = host.slice(0, host.lastIndexOf(":"));
  return host.replace(/^[[\]]+|[[\]]+$/g, "");
}

/**
 * knp extension: request metadata (agent → server) and response header (server → agent) that turn
 * on per-connection flow control (KNP_WINDOW packets) for one agent stream. Each side states the
 * window it grants per connection: `v1;window=<bytes>`. Upstream peers neither send nor answer it,
 * so they never see KNP_WINDOW.
 */
export const FLOW_CONTROL_KEY = "knp-flow-control";

/**
 * knp extension, the fast-link negotiation: request metadata of a knp agent naming the links it
 * can switch to (`websocket`); upstream servers ignore it.
 */
export const KNP_LINKS_KEY = "knp-links";
/** knp extension: response header of a knp server's switch reply, the link to continue on. */
export const KNP_LINK_KEY = "knp-link";
/** knp extension: response header of the switch reply, the port of that link (same host). */
export const KNP_LINK_PORT_KEY = "knp-link-port";
/** The one link offered and named in the negotiation: knp's WebSocket agent link. */
export const WEBSOCKET_LINK = "websocket";

/** Formats a {@linkcode FLOW_CONTROL_KEY} value. */
export function formatFlowControl(window: number): string {
  return `v1;window=${window}`;
}

/** Parses a {@linkcode FLOW_CONTROL_KEY} value; undefined when absent or not understood. */
export function parseFlowControl(values: readonly string[]): number | undefined {
  if (values.length !== 1) return undefined;
  const m = /^v1;window=(\d{1,10})$/.exec(values[0]!.trim());
  const window = m ? Number(m[1]) : NaN;
  return window >= 1024 && window <= 1 << 30 ? window : undefined;
}
