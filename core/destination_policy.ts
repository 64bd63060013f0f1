// This module is browser compatible.
/**
 * Destination policy: which `host:port` a dial through the tunnel may reach. Pure: no I/O, no
 * name resolution.
 *
 * A rule is `HOST[:PORTS]`. HOST is `*` (any host), an exact name (`kubernetes.default.svc`),
 * a suffix (`*.svc.cluster.local`: any name below it, not the name itself), an IP (`10.0.0.7`,
 * `[fd00::7]`) or a CIDR (`10.0.0.0/8`, `[fd00::/8]`). PORTS is `*`, a port, a range `a-b`, or
 * several joined by `|` (`80|443|8000-8999`); no PORTS means any port. An IPv6 host with ports
 * must be bracketed (`[fd00::/8]:443`); unbracketed it means any port.
 *
 * A policy is an ordered allow list and deny list: a dial is denied if any deny rule matches,
 * else allowed if the allow list is empty or one of its rules matches, else denied. Every
 * decision names the rule that decided, for the audit log.
 *
 * Dial addresses are read as a resolver would: IPv4 in any `inet_aton` form (`127.1`), IPv6 in
 * brackets with an optional zone, IPv4-mapped IPv6 matching IPv4 rules, names case-insensitive
 * without a trailing dot, an empty host as `0.0.0.0`. With any rule in force, an address that
 * cannot be read this way is denied. Names are matched as names: an IP rule does not match a
 * name that resolves into its network (use an allow list to fail closed).
 *
 * @module
 */

import { KnpError } from "./errors.ts";
import {
  FAMILY_BITS,
  inNetwork,
  mapIpv4,
  mappedIpv4,
  parseIp,
  parseIpv4Loose,
  parseIpv6,
} from "./ip_address.ts";

/** An inclusive port range. */
export interface PortRange {
  /** First port. */
  readonly from: number;
  /** Last port. */
  readonly to: number;
}

/** What a rule's host part matches. */
export type HostPattern =
  | { readonly kind: "any" }
  | { readonly kind: "name"; readonly name: string }
  | { readonly kind: "suffix"; readonly suffix: string }
  | { readonly kind: "cidr"; readonly family: 4 | 6; readonly network: bigint; prefix: number };

/** One parsed rule. */
export interface DestinationRule {
  /** The rule as written (the audit log names it so). */
  readonly text: string;
  /** Where it came from: a flag (`--knp-destination-deny`), `self` or a preset. */
  readonly source: string;
  /** Which hosts it matches. */
  readonly host: HostPattern;
  /** Which ports it matches (any of them). */
  readonly ports: readonly PortRange[];
}

/** An ordered allow list and deny list. */
export interface DestinationPolicy {
  /** Empty: every destination no deny rule matches is allowed. */
  readonly allow: readonly DestinationRule[];
  /** Checked first: a match denies. */
  readonly deny: readonly DestinationRule[];
}

/** The outcome of {@linkcode evaluateDestination}, naming what decided it. */
export interface DestinationDecision {
  /** Whether the dial may go ahead. */
  readonly allowed: boolean;
  /** `"allow"` or `"deny"`, for the audit log. */
  readonly decision: "allow" | "deny";
  /** The deciding rule's text, or a parenthesised reason when no rule decided. */
  readonly rule: string;
  /** The deciding rule's source (`--knp-destination-deny`, `self`, …), or `policy`. */
  readonly source: string;
}

/** The policy that allows everything (upstream's behaviour). */
export const OPEN_POLICY: DestinationPolicy = Object.freeze({ allow: [], deny: [] });

const ALL_PORTS: readonly PortRange[] = [{ from: 1, to: 65535 }];
const NAME_LABEL = /^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$/;

function ruleError(flag: string, text: string, why: string): KnpError {
  return new KnpError("INVALID_FLAG", `${flag}: invalid destination rule "${text}": ${why}`);
}

/** A DNS-style name: labels of letters, digits, `-` and `_`; not all-numeric. */
function validName(name: string): boolean {
  if (name.length === 0 || name.length > 253) return false;
  const labels = name.split(".");
  if (labels.every((label) => /^[0-9]+$/.test(label))) return false;
  return labels.every((label) => NAME_LABEL.test(label));
}

function parsePort(text: string): number | undefined {
  if (!/^[0-9]{1,5}$/.test(text)) return undefined;
  const port = Number(text);
  return port >= 1 && port <= 65535 ? port : undefined;
}

/** Parses `*`, `443`, `8000-8999` or several joined by `|`. */
function parsePorts(text: string, fail: (why: string) => KnpError): PortRange[] {
  if (text === "*") return [...ALL_PORTS];
  return text.split("|").map((part) => {
    const [a, b, extra] = part.split("-");
    const from = parsePort(a ?? "");
    const to = b === undefined ? from : parsePort(b);
    if (extra !== undefined || from === undefined || to === undefined) {
      throw fail(`bad port "${part}" (want 1-65535, a range a-b, or *)`);
    }
    if (from > to) throw fail(`port range "${part}" is backwards`);
    return { from, to };
  });
}

/** Parses the host part: `*`, `*.suffix`, IP, CIDR or name. */
function parseHost(text: string, fail: (why: string) => KnpError): HostPattern {
  const host = text.toLowerCase();
  if (host === "*") return { kind: "any" };
  if (host.startsWith("*.")) {
    const suffix = host.slice(2);
    if (!validName(suffix)) throw fail(`bad name suffix "${suffix}"`);
    return { kind: "suffix", suffix };
  }
  const slash = host.indexOf("/");
  const ip = parseIp(slash < 0 ? host : host.slice(0, slash));
  if (ip === undefined) {
    if (slash >= 0) throw fail(`bad CIDR "${text}"`);
    if (host.includes(":") || /^[0-9.]+$/.test(host)) throw fail(`bad IP address "${text}"`);
    if (!validName(host)) throw fail(`bad host name "${text}"`);
    return { kind: "name", name: host.replace(/\.$/, "") };
  }
  const bits = FAMILY_BITS[ip.family];
  const prefixText = slash < 0 ? String(bits) : host.slice(slash + 1);
  const prefix = Number(prefixText);
  if (!/^[0-9]{1,3}$/.test(prefixText) || prefix > bits) {
    throw fail(`bad prefix length "/${prefixText}" (want 0-${bits})`);
  }
  return { kind: "cidr", family: ip.family, network: ip.value, prefix };
}

/** Splits a rule into host and ports text; an unbracketed IPv6 host means any port. */
function splitRule(text: string, fail: (why: string) => KnpError): [string, string] {
  if (text.startsWith("[")) {
    const end = text.indexOf("]");
    if (end < 0) throw fail("missing ]");
    const rest = text.slice(end + 1);
    if (rest !== "" && !rest.startsWith(":")) throw fail(`unexpected "${rest}" after ]`);
    return [text.slice(1, end), rest === "" ? "*" : rest.slice(1)];
  }
  const colons = text.split(":").length - 1;
  if (colons === 0) return [text, "*"];
  if (colons === 1) {
    const i = text.indexOf(":");
    return [text.slice(0, i), text.slice(i + 1)];
  }
  if (parseIpv6(text.replace(/\/[0-9]*$/, "")) === undefined) {
    throw fail("an IPv6 host with ports must be bracketed, e.g. [fd00::/8]:443");
  }
  return [text, "*"];
}

/**
 * Parses one rule.
 *
 * @param text The rule, e.g. `10.0.0.0/8:443`, `*.svc:*`, `[::1]:8000-8999`.
 * @param flag The flag it came from, named in errors and in the rule's `source`.
 * @throws {KnpError} `INVALID_FLAG` naming the flag and what is wrong.
 */
export function parseDestinationRule(text: string, flag: string): DestinationRule {
  const fail = (why: string) => ruleError(flag, text, why);
  const trimmed = text.trim();
  if (trimmed === "") throw fail("empty rule");
  const [hostText, portText] = splitRule(trimmed, fail);
  if (hostText === "") throw fail("empty host (use * for any host)");
  const host = parseHost(hostText, fail);
  return { text: trimmed, source: flag, host, ports: parsePorts(portText, fail) };
}

/** Parses every rule of a repeatable, comma-separated flag. @throws {KnpError} `INVALID_FLAG` */
export function parseDestinationRules(texts: readonly string[], flag: string): DestinationRule[] {
  return texts.map((text) => parseDestinationRule(text, flag));
}

/** A dial address as the policy reads it. */
export interface DialTarget {
  /** The lower-cased name (no trailing dot), or the IP text as given. */
  readonly host: string;
  /** The IPv4 address, when the host is one (or an IPv4-mapped IPv6 address). */
  readonly v4: bigint | undefined;
  /** The IPv6 address (IPv4 addresses in their mapped form). */
  readonly v6: bigint | undefined;
  /** The port. */
  readonly port: number;
}

/** Splits `host:port` / `[v6%zone]:port` into host text (unbracketed) and port. */
function splitAddress(address: string): [string, number, boolean] | undefined {
  let host: string;
  let portText: string;
  const bracketed = address.startsWith("[");
  if (bracketed) {
    const end = address.indexOf("]");
    if (end < 0 || address[end + 1] !== ":") return undefined;
    host = address.slice(1, end).replace(/%[^%]*$/, "");
    portText = address.slice(end + 2);
  } else {
    const i = address.lastIndexOf(":");
    if (i < 0) return undefined;
    host = address.slice(0, i);
    portText = address.slice(i + 1);
    if (host.includes(":")) return undefined;
  }
  if (!/^[0-9]+$/.test(portText) || Number(portText) > 65535) return undefined;
  return [host, Number(portText), bracketed];
}

/**
 * Reads a dial address (`host:port`, `[v6]:port`) as a resolver would; undefined when it cannot
 * (no port, a named port, odd characters in the host).
 */
export function parseDialAddress(address: string): DialTarget | undefined {
  const parts = splitAddress(address);
  if (parts === undefined) return undefined;
  const [rawHost, port, bracketed] = parts;
  if (bracketed) {
    const v6 = parseIpv6(rawHost);
    return v6 === undefined ? undefined : { host: rawHost, v4: mappedIpv4(v6), v6, port };
  }
  const host = (rawHost === "" ? "0.0.0.0" : rawHost).toLowerCase().replace(/\.$/, "");
  if (!/^[a-z0-9._-]+$/.test(host)) return undefined;
  const v4 = parseIpv4Loose(host);
  if (v4 !== undefined) return { host, v4, v6: mapIpv4(v4), port };
  return { host, v4: undefined, v6: undefined, port };
}

function hostMatches(pattern: HostPattern, target: DialTarget): boolean {
  switch (pattern.kind) {
    case "any":
      return true;
    case "name":
      return target.v6 === undefined && target.host === pattern.name;
    case "suffix":
      return target.v6 === undefined && target.host.endsWith(`.${pattern.suffix}`);
    case "cidr": {
      const value = pattern.family === 4 ? target.v4 : target.v6;
      return value !== undefined &&
        inNetwork(pattern.family, pattern.network, pattern.prefix, value);
    }
  }
}

/** Whether `rule` matches `target`. */
export function ruleMatches(rule: DestinationRule, target: DialTarget): boolean {
  return hostMatches(rule.host, target) &&
    rule.ports.some((range) => target.port >= range.from && target.port <= range.to);
}

function decided(allowed: boolean, rule: string, source: string): DestinationDecision {
  return { allowed, decision: allowed ? "allow" : "deny", rule, source };
}

/**
 * Decides whether a dial to `address` may go ahead: denied if any deny rule matches, else
 * allowed if the allow list is empty or one of its rules matches, else denied.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * const policy = {
 *   allow: parseDestinationRules(["10.0.0.0/8:*"], "--knp-allow-destinations"),
 *   deny: parseDestinationRules(["10.0.0.1:22"], "--knp-deny-destinations"),
 * };
 * assert.equal(evaluateDestination(policy, "10.1.2.3:443").allowed, true);
 * assert.equal(evaluateDestination(policy, "10.0.0.1:22").rule, "10.0.0.1:22");
 * assert.equal(evaluateDestination(policy, "example.com:443").allowed, false);
 * ```
 */
export function evaluateDestination(
  policy: DestinationPolicy,
  address: string,
): DestinationDecision {
  if (policy.allow.length === 0 && policy.deny.length === 0) {
    return decided(true, "(no rules)", "policy");
  }
  const target = parseDialAddress(address);
  if (target === undefined) return decided(false, "(unreadable address)", "policy");
  for (const rule of policy.deny) {
    if (ruleMatches(rule, target)) return decided(false, rule.text, rule.source);
  }
  if (policy.allow.length === 0) return decided(true, "(no allow list)", "policy");
  for (const rule of policy.allow) {
    if (ruleMatches(rule, target)) return decided(true, rule.text, rule.source);
  }
  return decided(false, "(not in allow list)", "policy");
}

/** The DIAL_RSP error text of a denied dial (the taxonomy reads it as `policy-denied`). */
export function policyDeniedText(address: string, decision: DestinationDecision): string {
  return `dial tcp ${address}: denied by destination policy ` +
    `(rule ${JSON.stringify(decision.rule)} from ${decision.source})`;
}

/** `host` as a rule's host part: IPv6 (and IPv6 CIDRs) bracketed. */
export function ruleHost(host: string): string {
  return host.includes(":") && !host.startsWith("[") ? `[${host}]` : host;
}

/** Inputs of {@linkcode hardenedAgentRules}. */
export interface HardenedPresetInput {
  /** The node's own addresses (IPs or names): the kubelet port is allowed on them. */
  readonly nodeAddresses: readonly string[];
  /** Pod CIDRs: any port. */
  readonly podCidrs: readonly string[];
  /** Service CIDRs: any port. */
  readonly serviceCidrs: readonly string[];
  /** The kubelet's port. @default 10250 */
  readonly kubeletPort?: number;
}

/**
 * The allow list of the hardened agent preset: the kubelet port on the node's addresses, and
 * any port in the given pod and service CIDRs.
 *
 * @throws {KnpError} `INVALID_FLAG` naming `--knp-pod-cidr`/`--knp-service-cidr`/the address
 *   source when a value is malformed, or when the preset would allow nothing.
 */
export function hardenedAgentRules(
  input: HardenedPresetInput,
  sources = { node: "--agent-identifiers", pod: "--knp-pod-cidr", service: "--knp-service-cidr" },
): DestinationRule[] {
  const port = input.kubeletPort ?? 10250;
  const rules = [
    ...input.nodeAddresses.map((a) => parseDestinationRule(`${ruleHost(a)}:${port}`, sources.node)),
    ...input.podCidrs.map((c) => parseDestinationRule(`${ruleHost(c)}:*`, sources.pod)),
    ...input.serviceCidrs.map((c) => parseDestinationRule(`${ruleHost(c)}:*`, sources.service)),
  ];
  if (rules.length === 0) {
    throw new KnpError(
      "INVALID_FLAG",
      `--knp-destination-preset: hardened needs node addresses (${sources.node}), ` +
        `${sources.pod} or ${sources.service}; it would allow nothing`,
    );
  }
  return rules;
}
