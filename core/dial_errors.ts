// This module is browser compatible.
/**
 * The dial error taxonomy shared by the server's frontends and the client library.
 *
 * A failed dial travels as DIAL_RSP error text. knp keeps upstream's wording (so substring checks
 * such as "connection refused" or "No agent available" keep working) and appends a tag naming the
 * kind, the server and the agent: `… [knp: kind=dial-refused server=s1 agent=a1]`. Upstream peers
 * show the tag as part of the text; knp parses it back. Text without a tag (from an upstream
 * server) is classified by its substrings.
 *
 * @module
 */

/** What went wrong with a dial. */
export type DialErrorKind =
  | "no-agent"
  | "no-route"
  | "dial-refused"
  | "dial-timeout"
  | "dns-failure"
  | "server-overloaded"
  | "policy-denied"
  | "agent-draining"
  | "tunnel-closed"
  | "unknown";

/** HTTP status (code and reason phrase) for each kind, as the HTTP-CONNECT frontend answers. */
export const HTTP_STATUS: Record<DialErrorKind, readonly [number, string]> = {
  "no-agent": [500, "Internal Server Error"],
  "no-route": [500, "Internal Server Error"],
  "dial-refused": [502, "Bad Gateway"],
  "dial-timeout": [504, "Gateway Timeout"],
  "dns-failure": [502, "Bad Gateway"],
  "server-overloaded": [503, "Service Unavailable"],
  "policy-denied": [403, "Forbidden"],
  "agent-draining": [503, "Service Unavailable"],
  "tunnel-closed": [502, "Bad Gateway"],
  "unknown": [502, "Bad Gateway"],
};

/** Substrings that classify untagged text, first match wins (case-insensitive). */
const PATTERNS: readonly [RegExp, DialErrorKind][] = [
  [/^No agent available$/, "no-agent"],
  [/no agent serves/i, "no-route"],
  [/too many (open files|pending dials)|overloaded/i, "server-overloaded"],
  [/denied by (destination )?policy/i, "policy-denied"],
  [/draining|shutting down/i, "agent-draining"],
  [/i\/o timeout|deadline exceeded|timed out|timeout/i, "dial-timeout"],
  [/no such host|name resolution|lookup .* (failed|no such)/i, "dns-failure"],
  [
    /connection refused|connection reset|broken pipe|network is unreachable|no route to host|host is unreachable|network is down/i,
    "dial-refused",
  ],
  [/disconnected|tunnel closed|stream (closed|cancelled)/i, "tunnel-closed"],
];

const TAG = /\s*\[knp: ([^\]]*)\]$/;

/** The parts of a dial error text. */
export interface DialErrorInfo {
  /** What went wrong. */
  kind: DialErrorKind;
  /** The text without the knp tag. */
  message: string;
  /** The server that reported the failure, when tagged. */
  serverId?: string;
  /** The agent that reported the failure, when tagged. */
  agentId?: string;
}

/** Classifies an untagged error text by its substrings. */
export function classifyDialError(text: string): DialErrorKind {
  for (const [pattern, kind] of PATTERNS) if (pattern.test(text)) return kind;
  return "unknown";
}

/** Appends the knp tag to an error text (replacing an existing one). */
export function tagDialError(
  text: string,
  info: { kind?: DialErrorKind; serverId?: string; agentId?: string },
): string {
  const message = text.replace(TAG, "");
  const kind = info.kind ?? classifyDialError(message);
  const parts = [`kind=${kind}`];
  if (info.serverId) parts.push(`server=${info.serverId}`);
  if (info.agentId) parts.push(`agent=${info.agentId}`);
  return `${message} [knp: ${parts.join(" ")}]`;
}

/** Reads a dial error text: the knp tag when present, else classification by substrings. */
export function parseDialError(text: string): DialErrorInfo {
  const match = TAG.exec(text);
  if (!match) return { kind: classifyDialError(text), message: text };
  const message = text.slice(0, match.index);
  const info: DialErrorInfo = { kind: classifyDialError(message), message };
  for (const field of match[1]!.split(" ")) {
    const eq = field.indexOf("=");
    const key = field.slice(0, eq);
    const value = field.slice(eq + 1);
    if (key === "kind" && value in HTTP_STATUS) info.kind = value as DialErrorKind;
    else if (key === "server") info.serverId = value;
    else if (key === "agent") info.agentId = value;
  }
  return info;
}
