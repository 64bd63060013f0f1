/**
 * Fuzz target `connect`: the HTTP-CONNECT request-head parser (`parseConnectHead`) and the
 * target check (`validConnectTarget`) of the HTTP-CONNECT frontend.
 *
 * Inputs: valid heads (request line, Host, User-Agent and other headers) mutated at the byte
 * level, heads assembled from odd pieces (bad methods, versions, bracketed IPv6, long lines), and
 * random bytes; the bytes are decoded as the frontend decodes them (UTF-8, replacing bad bytes).
 *
 * Invariants: the parser returns a request whose target passes `validConnectTarget` and whose
 * pipelined bytes are the ones given, or throws the frontend's `HttpError` with status 400 or
 * 405; nothing else is thrown. `validConnectTarget` returns a boolean for any text, and accepts
 * only a port in 1–65535. The answer's reason phrase (`reasonPhrase`, for refusals and for
 * `dialFailure` of any error text) is one line of visible ASCII within `MAX_REASON_PHRASE`.
 *
 * @module
 */
import {
  HttpError,
  parseConnectHead,
  validConnectTarget,
} from "../../server/http_connect_frontend.ts";
import { dialFailure, MAX_REASON_PHRASE, reasonPhrase } from "../../server/http_connect_errors.ts";
import { mutate } from "../mutate.ts";
import type { Rng } from "../rng.ts";
import { byteTarget, invariant, unexpected } from "../target.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

const METHODS = ["CONNECT", "GET", "connect", "CONNECT ", "", "C0NNECT", "POST"];
const TARGETS = [
  "example.com:443",
  "10.0.0.7:10250",
  "[fd00::7]:443",
  "[::1]:1",
  "host:65535",
  "host:65536",
  "host:0",
  "host:",
  ":80",
  "host",
  "a:b:c",
  "[zz]:80",
  "h@st:80",
  "host:00080",
  "host:123456",
  "/path",
  "*",
  "[::1]",
  "x".repeat(300) + ":1",
  "é:443",
];
const VERSIONS = ["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.10", "http/1.1", "HTTP/1.", ""];
const HEADERS = [
  "Host: example.com",
  "host:x",
  "User-Agent: fuzz/1.0",
  "user-agent:",
  "X: y",
  ": no-name",
  "NoColon",
  " Host: leading-space",
  "Host :  spaced  ",
  "A:" + "b".repeat(500),
];

const GOOD_TARGETS = TARGETS.slice(0, 5);

function structuredHead(rng: Rng): string {
  const good = rng.chance(0.6);
  const sep = () => good || rng.chance(0.8) ? " " : rng.pick(["", "  ", "\t"]);
  const method = good ? "CONNECT" : rng.pick(METHODS);
  const target = rng.pick(good ? GOOD_TARGETS : TARGETS);
  const version = good ? rng.pick(VERSIONS.slice(0, 2)) : rng.pick(VERSIONS);
  const lines = [method + sep() + target + sep() + version];
  if (good) lines.push("Host: " + target);
  const n = rng.size(6);
  for (let i = 0; i < n; i++) lines.push(rng.pick(good ? HEADERS.slice(0, 5) : HEADERS));
  if (rng.chance(0.1)) lines.push("X-Long: " + "a".repeat(rng.size(70_000)));
  return lines.join(good || rng.chance(0.8) ? "\r\n" : rng.pick(["\n", "\r", "\r\n\r\n"]));
}

function generate(rng: Rng): Uint8Array {
  const mode = rng.int(10);
  const head = encoder.encode(structuredHead(rng));
  if (mode < 4) return head;
  if (mode < 9) return mutate(rng, head, encoder.encode(structuredHead(rng)), 3);
  return rng.bytes(rng.size(200));
}

function checkTarget(text: string): void {
  let ok: boolean;
  try {
    ok = validConnectTarget(text);
  } catch (err) {
    throw unexpected("validConnectTarget", err);
  }
  invariant(typeof ok === "boolean", "validConnectTarget returned a non-boolean");
  if (!ok) return;
  const port = Number(text.slice(text.lastIndexOf(":") + 1));
  invariant(Number.isInteger(port) && port >= 1 && port <= 65535, `accepted target ${text}`);
}

/** The status line's reason phrase of an answer is one bounded line of visible ASCII. */
function checkAnswer(err: HttpError): void {
  let phrase: string;
  try {
    phrase = reasonPhrase(err, "server-1");
  } catch (e) {
    throw unexpected("reasonPhrase", e);
  }
  invariant(/^[\x20-\x7e]*$/.test(phrase), `reason phrase ${JSON.stringify(phrase)}`);
  invariant(phrase.length <= MAX_REASON_PHRASE, `a ${phrase.length}-character reason phrase`);
  invariant(err.status >= 400 && err.status <= 599, `status ${err.status}`);
}

function check(input: Uint8Array): void {
  const head = decoder.decode(input);
  const rest = input.subarray(0, input.length & 7);
  checkTarget(head);
  checkTarget(head.split(" ")[1] ?? "");
  let failure: HttpError;
  try {
    failure = dialFailure(head, "server-1");
  } catch (err) {
    throw unexpected("dialFailure", err);
  }
  checkAnswer(failure);
  let request;
  try {
    request = parseConnectHead(head, rest);
  } catch (err) {
    if (!(err instanceof HttpError)) throw unexpected("parseConnectHead", err);
    checkAnswer(err);
    invariant(err.status === 400 || err.status === 405, `refused with status ${err.status}`);
    return;
  }
  invariant(validConnectTarget(request.target), `parsed an invalid target ${request.target}`);
  invariant(request.rest === rest, "the pipelined bytes were not kept");
  invariant(typeof request.userAgent === "string", "userAgent is not a string");
}

/** The `connect` target. */
export const connectTarget = byteTarget("connect", generate, check);
