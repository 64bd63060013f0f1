/**
 * Fuzz target `header`: the gRPC metadata helpers of `proto/header.ts` (`parseAgentIdentifiers`,
 * `validateAgentIdentifiers`, `queryParseError`, `removePortFromHost`, `parseFlowControl`,
 * `formatFlowControl`) and the agent's own `--agent-identifiers` check (`agentIdentifiersProblem`).
 *
 * Inputs: query strings built from identifier keys, values, `%` escapes (good and bad), `;`, `+`,
 * `=` and `&` in odd places, mutated at the byte level; host:port addresses; flow-control values.
 *
 * Invariants: `parseAgentIdentifiers` never throws and returns string lists and a boolean;
 * `validateAgentIdentifiers` throws only `agent address is invalid: …` errors, and exactly when
 * `agentIdentifiersProblem` reports a problem; `removePortFromHost` never throws and never grows
 * the text; `parseFlowControl` returns undefined or an integer window in 1024–2^30 that survives
 * `formatFlowControl`.
 *
 * @module
 */
import {
  formatFlowControl,
  parseAgentIdentifiers,
  parseFlowControl,
  queryParseError,
  removePortFromHost,
  validateAgentIdentifiers,
} from "@knp/proto";
import { agentIdentifiersProblem } from "../../agent/options.ts";
import { mutate } from "../mutate.ts";
import type { Rng } from "../rng.ts";
import { invariant, type Target, unexpected } from "../target.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

const KEYS = [
  "ipv4",
  "ipv6",
  "host",
  "cidr",
  "default-route",
  "uid",
  "",
  "IPV4",
  "host%3D",
  "ho%73t",
  "default-route ",
];
const VALUES = [
  "10.0.0.7",
  "fd00::7",
  "node1",
  "10.0.0.0/8",
  "true",
  "True",
  "1",
  "t",
  "false",
  "",
  "%zz",
  "%",
  "%4",
  "%41",
  "a+b",
  "a;b",
  "é",
  "%C3%A9",
  "%FF",
  "=",
  "&",
  "x".repeat(100),
];
const HOSTS = [
  "node1:10250",
  "10.0.0.7:443",
  "[fd00::7]:443",
  "[::1]",
  "::",
  "fd00::7",
  ":",
  "",
  "[",
  "]",
  "[[::1]]:80",
  "a:b",
  "host",
  "[a]:b:c",
];
const WINDOWS = [
  "v1;window=1024",
  "v1;window=1073741824",
  "v1;window=1073741825",
  "v1;window=1023",
  " v1;window=65536 ",
  "v1;window=0001024",
  "v1;window=99999999999",
  "v1;window=",
  "v2;window=4096",
  "v1;window=4096;x",
];

function query(rng: Rng): string {
  const pairs: string[] = [];
  const n = rng.size(8);
  for (let i = 0; i < n; i++) {
    const key = rng.pick(KEYS);
    pairs.push(rng.chance(0.9) ? `${key}=${rng.pick(VALUES)}` : key);
  }
  return pairs.join(rng.chance(0.9) ? "&" : rng.pick([";", "&&", "&;", "=&"]));
}

function raw(rng: Rng, base: string, other: string): string {
  const bytes = mutate(rng, encoder.encode(base), encoder.encode(other), 5);
  return decoder.decode(bytes);
}

/** One input: an identifiers query, a dial address and flow-control header values. */
export interface HeaderInput {
  query: string;
  address: string;
  flow: string[];
}

function generate(rng: Rng): HeaderInput {
  const q = query(rng);
  const a = rng.pick(HOSTS);
  const w = rng.pick(WINDOWS);
  const mutateIt = rng.chance(0.7);
  const flow = [mutateIt ? raw(rng, w, rng.pick(WINDOWS)) : w];
  if (rng.chance(0.1)) flow.push(rng.pick(WINDOWS));
  if (rng.chance(0.05)) flow.length = 0;
  return {
    query: mutateIt ? raw(rng, q, query(rng)) : q,
    address: mutateIt ? raw(rng, a, rng.pick(HOSTS)) : a,
    flow,
  };
}

function checkIdentifiers(text: string): void {
  let ids;
  try {
    ids = parseAgentIdentifiers(text);
  } catch (err) {
    throw unexpected("parseAgentIdentifiers", err);
  }
  for (const list of [ids.ipv4, ids.ipv6, ids.host, ids.cidr]) {
    invariant(list.every((v) => typeof v === "string"), "an identifier is not a string");
  }
  invariant(typeof ids.defaultRoute === "boolean", "defaultRoute is not a boolean");
  let message: string | undefined;
  try {
    validateAgentIdentifiers(text);
  } catch (err) {
    if (!(err instanceof Error) || !err.message.startsWith("agent address is invalid: ")) {
      throw unexpected("validateAgentIdentifiers", err);
    }
    message = err.message;
  }
  const problem = agentIdentifiersProblem(text);
  invariant(
    (message === undefined) === (problem === undefined),
    `validateAgentIdentifiers (${message}) and agentIdentifiersProblem (${problem}) disagree`,
  );
  const parseError = queryParseError(text);
  invariant(parseError === undefined || message !== undefined, "queryParseError not reported");
}

function checkAddress(address: string): void {
  let host: string;
  try {
    host = removePortFromHost(address);
  } catch (err) {
    throw unexpected("removePortFromHost", err);
  }
  invariant(typeof host === "string" && host.length <= address.length, "the host grew");
}

function checkFlow(values: string[]): void {
  let window;
  try {
    window = parseFlowControl(values);
  } catch (err) {
    throw unexpected("parseFlowControl", err);
  }
  if (window === undefined) return;
  invariant(Number.isInteger(window) && window >= 1024 && window <= 2 ** 30, `window ${window}`);
  invariant(parseFlowControl([formatFlowControl(window)]) === window, "format/parse mismatch");
}

function check(input: HeaderInput): void {
  checkIdentifiers(input.query);
  checkAddress(input.address);
  checkFlow(input.flow);
}

/** The `header` target. */
export const headerTarget: Target<HeaderInput> = {
  name: "header",
  generate,
  check,
  toJson: (i) => i,
  fromJson(json) {
    const j = json as Partial<HeaderInput>;
    if (typeof j.query !== "string" || typeof j.address !== "string" || !Array.isArray(j.flow)) {
      throw new TypeError("expected { query, address, flow }");
    }
    return { query: j.query, address: j.address, flow: j.flow.map(String) };
  },
};
