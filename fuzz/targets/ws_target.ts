/**
 * Fuzz target `ws`: the WebSocket frame reader (`FrameParser` of `transport/ws_frame.ts`) and the
 * packet-batch decoder of the WebSocket link (`unframe` of `transport/ws_stream.ts`).
 *
 * Inputs: sequences of server frames (fragmented messages, pings and pongs, close frames with
 * codes and reasons, minimal and non-minimal 16/64-bit lengths, huge lengths, masked frames,
 * reserved bits, unknown opcodes) whose binary messages carry `[varint length][Packet]…` batches,
 * mutated at the byte level, and random bytes; each input is also fed in random chunks, and
 * parsed with a small and with the default message limit.
 *
 * Invariants: `push` never throws; events stop after a close or a failure, and a failure carries
 * close code 1002, 1007 or 1009; a close code is valid or 1005; no message exceeds the limit;
 * the events do not depend on how the bytes are chunked; an untouched valid input yields no
 * failure and its batches all decode. `unframe` yields packets or throws `KnpError`
 * `PACKET_DECODE` or `PacketDecodeError`; nothing else.
 *
 * @module
 */
import { KnpError } from "@knp/core/errors";
import { PacketDecodeError } from "@knp/proto";
import { DEFAULT_MAX_MESSAGE_BYTES, FrameParser } from "../../transport/ws_frame.ts";
import { frame, unframe } from "../../transport/ws_stream.ts";
import { concat, mutate } from "../mutate.ts";
import type { Rng } from "../rng.ts";
import { fromHex, invariant, type Target, toHex, unexpected } from "../target.ts";
import { randomPacket } from "./packet_target.ts";

/** One input: the bytes, where to cut them into chunks, the message limit, and validity. */
export interface WsInput {
  bytes: Uint8Array;
  cuts: number[];
  max: number;
  valid: boolean;
}

function header(b0: number, len: number, form: number, masked: boolean): Uint8Array {
  const m = masked ? 0x80 : 0;
  if (form === 0 && len < 126) return Uint8Array.of(b0, m | len);
  if (form <= 1 && len < 0x10000) return Uint8Array.of(b0, m | 126, len >>> 8, len & 0xff);
  const out = new Uint8Array(10);
  out[0] = b0;
  out[1] = m | 127;
  new DataView(out.buffer).setBigUint64(2, BigInt(len));
  return out;
}

/** A server frame; `odd` allows reserved bits, masks and non-minimal lengths. */
function buildFrame(rng: Rng, fin: boolean, opcode: number, payload: Uint8Array, odd: boolean) {
  const rsv = odd && rng.chance(0.03) ? rng.pick([0x10, 0x20, 0x40]) : 0;
  const masked = odd && rng.chance(0.02);
  const form = odd ? rng.int(3) : 0;
  const head = header((fin ? 0x80 : 0) | rsv | opcode, payload.length, form, masked);
  return concat(head, masked ? rng.bytes(4) : new Uint8Array(0), payload);
}

function batch(rng: Rng): Uint8Array {
  const packets = [];
  const n = rng.range(1, 4);
  for (let i = 0; i < n; i++) packets.push(randomPacket(rng));
  return frame(packets);
}

function message(rng: Rng, odd: boolean): Uint8Array[] {
  const kind = rng.int(10);
  if (kind < 5) return [buildFrame(rng, true, 2, batch(rng), odd)];
  if (kind < 6) return [buildFrame(rng, true, rng.pick([9, 10]), rng.bytes(rng.size(125)), odd)];
  if (kind < 7) {
    const reason = new TextEncoder().encode(rng.pick(["", "bye", "é", "x".repeat(123)]));
    const codes = odd ? [1000, 1005, 1006, 999, 5000, 0xffff] : [1000, 1001, 1011, 3000, 4999];
    const code = rng.pick(codes);
    const payload = rng.chance(0.2)
      ? new Uint8Array(0)
      : concat(Uint8Array.of(code >> 8, code & 255), reason);
    return [buildFrame(rng, true, 8, payload, odd)];
  }
  if (kind < 8) return [buildFrame(rng, true, 1, new TextEncoder().encode("héllo"), odd)];
  const data = batch(rng);
  const cut = rng.int(data.length + 1);
  return [
    buildFrame(rng, false, 2, data.subarray(0, cut), odd),
    ...(rng.chance(0.3) ? [buildFrame(rng, true, 9, new Uint8Array(0), odd)] : []),
    buildFrame(rng, true, 0, data.subarray(cut), odd),
  ];
}

function generate(rng: Rng): WsInput {
  const mode = rng.int(10);
  const odd = mode >= 2 && rng.chance(0.5);
  const frames: Uint8Array[] = [];
  const n = rng.range(1, 5);
  for (let i = 0; i < n; i++) frames.push(...message(rng, odd));
  let bytes = concat(...frames);
  if (mode >= 2 && mode < 9) bytes = mutate(rng, bytes, concat(...message(rng, true)), 5);
  if (mode === 9) bytes = rng.bytes(rng.size(64));
  const cuts: number[] = [];
  const nCuts = rng.size(8);
  for (let i = 0; i < nCuts; i++) cuts.push(rng.int(bytes.length + 1));
  cuts.sort((a, b) => a - b);
  const max = rng.chance(0.5) ? DEFAULT_MAX_MESSAGE_BYTES : rng.pick([0, 1, 125, 126, 1024]);
  return { bytes, cuts, max, valid: mode < 2 && !odd };
}

/** Runs `unframe` over one message; returns false when it threw a typed decode error. */
function checkUnframe(data: Uint8Array): boolean {
  try {
    for (const p of unframe(data)) invariant(typeof p.type === "string", "a packet without type");
    return true;
  } catch (err) {
    if (err instanceof PacketDecodeError) return false;
    if (err instanceof KnpError && err.code === "PACKET_DECODE") return false;
    throw unexpected("unframe", err);
  }
}

const FAIL_CODES = new Set([1002, 1007, 1009]);

/** Parses the chunks; returns the events as text (payloads by length and checksum). */
function parse(chunks: Uint8Array[], max: number, batches: Uint8Array[] | undefined): string[] {
  const events: string[] = [];
  let stopped = false;
  const sum = (d: Uint8Array) => d.reduce((h, b) => (Math.imul(h, 31) + b) | 0, 7);
  const add = (e: string) => {
    invariant(!stopped, `event ${e} after the parser stopped`);
    events.push(e);
  };
  const parser = new FrameParser({
    text: (t) => add(`text ${t.length}`),
    binary(d) {
      invariant(d.length <= max, `a ${d.length}-byte message over the ${max}-byte limit`);
      batches?.push(d);
      add(`binary ${d.length} ${sum(d)}`);
    },
    ping: (d) => add(`ping ${d.length} ${sum(d)}`),
    pong: (d) => add(`pong ${d.length} ${sum(d)}`),
    close(code, reason) {
      invariant(code === 1005 || (code >= 1000 && code < 5000), `close code ${code}`);
      add(`close ${code} ${reason}`);
      stopped = true;
    },
    fail(code, reason) {
      invariant(FAIL_CODES.has(code), `failure with close code ${code}`);
      add(`fail ${code} ${reason}`);
      stopped = true;
    },
  }, max);
  for (const chunk of chunks) {
    try {
      parser.push(chunk);
    } catch (err) {
      throw unexpected("FrameParser.push", err);
    }
  }
  invariant(parser.stopped === stopped, "stopped does not match the events");
  return events;
}

function check(input: WsInput): void {
  const { bytes, cuts, max } = input;
  const batches: Uint8Array[] = [];
  const whole = parse([bytes], max, batches);
  const chunks: Uint8Array[] = [];
  let from = 0;
  for (const cut of cuts) {
    chunks.push(bytes.subarray(from, Math.max(from, cut)));
    from = Math.max(from, cut);
  }
  chunks.push(bytes.subarray(from));
  const chunked = parse(chunks, max, undefined);
  invariant(whole.join("\n") === chunked.join("\n"), "events depend on the chunking");
  const decoded = batches.map(checkUnframe);
  checkUnframe(bytes);
  if (!input.valid || max !== DEFAULT_MAX_MESSAGE_BYTES) return;
  invariant(!whole.some((e) => e.startsWith("fail")), `a valid input failed: ${whole.join("; ")}`);
  invariant(decoded.every((ok) => ok), "a valid batch did not decode");
}

/** The `ws` target. */
export const wsTarget: Target<WsInput> = {
  name: "ws",
  generate,
  check,
  toJson: (i) => ({ hex: toHex(i.bytes), cuts: i.cuts, max: i.max, valid: i.valid }),
  fromJson(json) {
    const j = json as { hex?: unknown; cuts?: unknown; max?: unknown; valid?: unknown };
    if (!Array.isArray(j.cuts) || typeof j.max !== "number") throw new TypeError("bad ws input");
    return { bytes: fromHex(j.hex), cuts: j.cuts.map(Number), max: j.max, valid: j.valid === true };
  },
};
