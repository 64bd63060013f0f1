/**
 * The HTTP/2 frame layer (RFC 9113 §4, §6): constants, a strict incremental
 * {@linkcode FrameParser} (length limit, per-type size and stream-id rules, padding) and
 * encoders for every frame a gRPC server sends. All integers are big-endian.
 *
 * A violation is an {@linkcode H2Error}: on stream 0 a connection error (GOAWAY), otherwise a
 * stream error (RST_STREAM) — the receiver decides which frames to drop.
 *
 * @module
 */

import { KnpError } from "@knp/core/errors";

/** Frame types (RFC 9113 §6). */
export const FrameType = {
  DATA: 0x0,
  HEADERS: 0x1,
  PRIORITY: 0x2,
  RST_STREAM: 0x3,
  SETTINGS: 0x4,
  PUSH_PROMISE: 0x5,
  PING: 0x6,
  GOAWAY: 0x7,
  WINDOW_UPDATE: 0x8,
  CONTINUATION: 0x9,
} as const;

/** Frame flags. */
export const Flag = {
  END_STREAM: 0x1,
  ACK: 0x1,
  END_HEADERS: 0x4,
  PADDED: 0x8,
  PRIORITY: 0x20,
} as const;

/** Error codes (RFC 9113 §7). */
export const ErrorCode = {
  NO_ERROR: 0x0,
  PROTOCOL_ERROR: 0x1,
  INTERNAL_ERROR: 0x2,
  FLOW_CONTROL_ERROR: 0x3,
  SETTINGS_TIMEOUT: 0x4,
  STREAM_CLOSED: 0x5,
  FRAME_SIZE_ERROR: 0x6,
  REFUSED_STREAM: 0x7,
  CANCEL: 0x8,
  COMPRESSION_ERROR: 0x9,
  CONNECT_ERROR: 0xa,
  ENHANCE_YOUR_CALM: 0xb,
  INADEQUATE_SECURITY: 0xc,
  HTTP_1_1_REQUIRED: 0xd,
} as const;

/** Setting identifiers (RFC 9113 §6.5.2). */
export const Setting = {
  HEADER_TABLE_SIZE: 0x1,
  ENABLE_PUSH: 0x2,
  MAX_CONCURRENT_STREAMS: 0x3,
  INITIAL_WINDOW_SIZE: 0x4,
  MAX_FRAME_SIZE: 0x5,
  MAX_HEADER_LIST_SIZE: 0x6,
} as const;

/** The client connection preface (RFC 9113 §3.4). */
export const PREFACE: Uint8Array = new TextEncoder().encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/** Size of a frame header. */
export const FRAME_HEADER_BYTES = 9;
/** Smallest (and default) SETTINGS_MAX_FRAME_SIZE. */
export const DEFAULT_MAX_FRAME_SIZE = 16_384;
/** Largest SETTINGS_MAX_FRAME_SIZE. */
export const MAX_MAX_FRAME_SIZE = 16_777_215;
/** Largest flow-control window. */
export const MAX_WINDOW = 0x7fff_ffff;
/** Default initial window (RFC 9113 §6.9.2). */
export const DEFAULT_WINDOW = 65_535;

/** A protocol violation: a connection error on stream 0, a stream error otherwise. */
export class H2Error extends KnpError {
  /** The HTTP/2 error code to send. */
  readonly h2Code: number;
  /** 0 for a connection error, else the stream to reset. */
  readonly streamId: number;

  /** An error of HTTP/2 code `h2Code` on `streamId` (0: the connection). */
  constructor(h2Code: number, streamId: number, message: string) {
    super("PROTOCOL", `http2: ${message}`);
    this.h2Code = h2Code;
    this.streamId = streamId;
  }
}

/** One received frame; `payload` is a view of the received bytes (padding included). */
export interface Frame {
  /** Frame type. */
  type: number;
  /** Flags. */
  flags: number;
  /** Stream identifier (reserved bit cleared). */
  streamId: number;
  /** Payload bytes. */
  payload: Uint8Array;
}

/** Payload size rules of a frame type: exact size (or -1), whether the stream id is 0. */
const RULES: Record<number, { size: number; connection: boolean | undefined }> = {
  [FrameType.DATA]: { size: -1, connection: false },
  [FrameType.HEADERS]: { size: -1, connection: false },
  [FrameType.PRIORITY]: { size: 5, connection: false },
  [FrameType.RST_STREAM]: { size: 4, connection: false },
  [FrameType.SETTINGS]: { size: -1, connection: true },
  [FrameType.PUSH_PROMISE]: { size: -1, connection: false },
  [FrameType.PING]: { size: 8, connection: true },
  [FrameType.GOAWAY]: { size: -1, connection: true },
  [FrameType.WINDOW_UPDATE]: { size: 4, connection: undefined },
  [FrameType.CONTINUATION]: { size: -1, connection: false },
};

/** Checks a frame's size and stream id against its type's rules (unknown types pass). */
export function validateFrame(frame: Frame): void {
  const rule = RULES[frame.type];
  if (!rule) return;
  const { type, streamId, flags } = frame;
  const length = frame.payload.length;
  if (rule.connection === true && streamId !== 0) {
    throw new H2Error(ErrorCode.PROTOCOL_ERROR, 0, `frame type ${type} on stream ${streamId}`);
  }
  if (rule.connection === false && streamId === 0) {
    throw new H2Error(ErrorCode.PROTOCOL_ERROR, 0, `frame type ${type} on stream 0`);
  }
  if (rule.size >= 0 && length !== rule.size) {
    // A bad PRIORITY or RST_STREAM size hurts one stream only where the RFC says so (§6.3).
    const id = type === FrameType.PRIORITY ? streamId : 0;
    throw new H2Error(ErrorCode.FRAME_SIZE_ERROR, id, `frame type ${type} of ${length} bytes`);
  }
  if (type === FrameType.SETTINGS) {
    if ((flags & Flag.ACK) && length !== 0) {
      throw new H2Error(ErrorCode.FRAME_SIZE_ERROR, 0, "SETTINGS ack with a payload");
    }
    if (length % 6 !== 0) throw new H2Error(ErrorCode.FRAME_SIZE_ERROR, 0, "SETTINGS size");
  }
  if (type === FrameType.GOAWAY && length < 8) {
    throw new H2Error(ErrorCode.FRAME_SIZE_ERROR, 0, "GOAWAY shorter than 8 bytes");
  }
}

/**
 * The content of a DATA or HEADERS frame without padding (and without the HEADERS priority
 * fields). Padding as long as the payload is a connection PROTOCOL_ERROR.
 */
export function unpadded(frame: Frame): Uint8Array {
  let body = frame.payload;
  let pad = 0;
  if (frame.flags & Flag.PADDED) {
    if (body.length < 1) throw new H2Error(ErrorCode.FRAME_SIZE_ERROR, 0, "no pad length");
    pad = body[0]!;
    body = body.subarray(1);
  }
  if (frame.type === FrameType.HEADERS && (frame.flags & Flag.PRIORITY)) {
    if (body.length < 5) throw new H2Error(ErrorCode.FRAME_SIZE_ERROR, 0, "short priority");
    body = body.subarray(5);
  }
  if (pad > body.length) throw new H2Error(ErrorCode.PROTOCOL_ERROR, 0, "padding too long");
  return body.subarray(0, body.length - pad);
}

/** The stream a HEADERS (with PRIORITY) or PRIORITY frame depends on, or -1. */
export function dependencyOf(frame: Frame): number {
  const p = frame.payload;
  let at = 0;
  if (frame.type === FrameType.HEADERS) {
    if (!(frame.flags & Flag.PRIORITY)) return -1;
    if (frame.flags & Flag.PADDED) at = 1;
  }
  if (p.length < at + 4) return -1;
  return readU32(p, at) & MAX_WINDOW;
}

/** Reads a big-endian unsigned 32-bit integer. */
export function readU32(bytes: Uint8Array, at: number): number {
  return (bytes[at]! * 0x1000000) + ((bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) |
    bytes[at + 3]!);
}

/** Writes a big-endian unsigned 32-bit integer. */
export function writeU32(bytes: Uint8Array, at: number, value: number): void {
  bytes[at] = value >>> 24;
  bytes[at + 1] = (value >>> 16) & 0xff;
  bytes[at + 2] = (value >>> 8) & 0xff;
  bytes[at + 3] = value & 0xff;
}

/** Writes a frame header at `at`. */
export function writeFrameHeader(
  out: Uint8Array,
  at: number,
  length: number,
  type: number,
  flags: number,
  streamId: number,
): void {
  out[at] = (length >>> 16) & 0xff;
  out[at + 1] = (length >>> 8) & 0xff;
  out[at + 2] = length & 0xff;
  out[at + 3] = type;
  out[at + 4] = flags;
  writeU32(out, at + 5, streamId & MAX_WINDOW);
}

/** A whole frame with `payload`. */
export function encodeFrame(
  type: number,
  flags: number,
  streamId: number,
  payload: Uint8Array = new Uint8Array(0),
): Uint8Array {
  const out = new Uint8Array(FRAME_HEADER_BYTES + payload.length);
  writeFrameHeader(out, 0, payload.length, type, flags, streamId);
  out.set(payload, FRAME_HEADER_BYTES);
  return out;
}

/** A SETTINGS frame (or its ACK when `settings` is omitted). */
export function settingsFrame(settings?: ReadonlyMap<number, number>): Uint8Array {
  if (!settings) return encodeFrame(FrameType.SETTINGS, Flag.ACK, 0);
  const payload = new Uint8Array(settings.size * 6);
  let at = 0;
  for (const [id, value] of settings) {
    payload[at] = id >> 8;
    payload[at + 1] = id & 0xff;
    writeU32(payload, at + 2, value);
    at += 6;
  }
  return encodeFrame(FrameType.SETTINGS, 0, 0, payload);
}

/** Parses a SETTINGS payload into (id, value) pairs, in order. */
export function parseSettings(payload: Uint8Array): [number, number][] {
  const out: [number, number][] = [];
  for (let at = 0; at + 6 <= payload.length; at += 6) {
    out.push([(payload[at]! << 8) | payload[at + 1]!, readU32(payload, at + 2)]);
  }
  return out;
}

/** A PING frame with the 8 bytes `data`. */
export function pingFrame(data: Uint8Array, ack: boolean): Uint8Array {
  return encodeFrame(FrameType.PING, ack ? Flag.ACK : 0, 0, data);
}

/** A GOAWAY frame. */
export function goawayFrame(lastStreamId: number, code: number, debug = ""): Uint8Array {
  const text = new TextEncoder().encode(debug);
  const payload = new Uint8Array(8 + text.length);
  writeU32(payload, 0, lastStreamId & MAX_WINDOW);
  writeU32(payload, 4, code);
  payload.set(text, 8);
  return encodeFrame(FrameType.GOAWAY, 0, 0, payload);
}

/** An RST_STREAM frame. */
export function rstStreamFrame(streamId: number, code: number): Uint8Array {
  const payload = new Uint8Array(4);
  writeU32(payload, 0, code);
  return encodeFrame(FrameType.RST_STREAM, 0, streamId, payload);
}

/** A WINDOW_UPDATE frame. */
export function windowUpdateFrame(streamId: number, increment: number): Uint8Array {
  const payload = new Uint8Array(4);
  writeU32(payload, 0, increment);
  return encodeFrame(FrameType.WINDOW_UPDATE, 0, streamId, payload);
}

/** A header block as one HEADERS frame and as many CONTINUATION frames as `maxFrameSize` needs. */
export function headersFrames(
  streamId: number,
  block: Uint8Array,
  endStream: boolean,
  maxFrameSize: number,
): Uint8Array {
  const count = Math.max(1, Math.ceil(block.length / maxFrameSize));
  const out = new Uint8Array(block.length + count * FRAME_HEADER_BYTES);
  let at = 0;
  for (let i = 0; i < count; i++) {
    const chunk = block.subarray(i * maxFrameSize, (i + 1) * maxFrameSize);
    const type = i === 0 ? FrameType.HEADERS : FrameType.CONTINUATION;
    const flags = (i === count - 1 ? Flag.END_HEADERS : 0) |
      (i === 0 && endStream ? Flag.END_STREAM : 0);
    writeFrameHeader(out, at, chunk.length, type, flags, streamId);
    out.set(chunk, at + FRAME_HEADER_BYTES);
    at += FRAME_HEADER_BYTES + chunk.length;
  }
  return out;
}

/**
 * Splits a byte stream into frames. Payloads of frames that lie within one pushed chunk are views
 * of it (no copy), valid until the caller reuses the chunk; the bytes of a frame split across
 * chunks are kept (copied) and gathered once it is complete.
 */
export class FrameParser {
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;
  /** Largest payload accepted (our SETTINGS_MAX_FRAME_SIZE). */
  maxFrameSize: number;

  /** A parser accepting payloads up to `maxFrameSize` bytes. */
  constructor(maxFrameSize = DEFAULT_MAX_FRAME_SIZE) {
    this.maxFrameSize = maxFrameSize;
  }

  /** Bytes held that do not yet make a whole frame. */
  get pendingBytes(): number {
    return this.#pendingBytes;
  }

  /**
   * Adds received bytes and returns the frames now complete, in order.
   * @throws {H2Error} FRAME_SIZE_ERROR for a frame longer than `maxFrameSize`
   */
  push(chunk: Uint8Array): Frame[] {
    const frames: Frame[] = [];
    let at = 0;
    if (this.#pendingBytes > 0) {
      // Only the frame split across chunks is gathered; the rest of `chunk` stays views.
      const had = this.#pendingBytes;
      this.#pending.push(chunk);
      this.#pendingBytes += chunk.length;
      const needed = this.#needed();
      if (this.#pendingBytes < needed) {
        // Still incomplete: keep a copy, since the caller may reuse `chunk` for its next read.
        this.#pending[this.#pending.length - 1] = chunk.slice();
        return frames;
      }
      const first = gather(this.#pending, needed);
      this.#pending = [];
      this.#pendingBytes = 0;
      this.#parse(first, 0, frames);
      at = needed - had;
    }
    at = this.#parse(chunk, at, frames);
    if (at < chunk.length) {
      this.#pending = [chunk.slice(at)];
      this.#pendingBytes = chunk.length - at;
    }
    return frames;
  }

  /** Parses the whole frames of `buf` from `at` into `frames`; returns where the rest starts. */
  #parse(buf: Uint8Array, at: number, frames: Frame[]): number {
    while (buf.length - at >= FRAME_HEADER_BYTES) {
      const length = this.#length(buf[at]!, buf[at + 1]!, buf[at + 2]!);
      if (buf.length - at < FRAME_HEADER_BYTES + length) break;
      const start = at + FRAME_HEADER_BYTES;
      frames.push({
        type: buf[at + 3]!,
        flags: buf[at + 4]!,
        streamId: readU32(buf, at + 5) & MAX_WINDOW,
        payload: buf.subarray(start, start + length),
      });
      at = start + length;
    }
    return at;
  }

  /** Bytes the pending frame needs in all (its header's length once 3 bytes are in). */
  #needed(): number {
    if (this.#pendingBytes < 3) return FRAME_HEADER_BYTES;
    const head = gather(this.#pending, 3);
    return FRAME_HEADER_BYTES + this.#length(head[0]!, head[1]!, head[2]!);
  }

  #length(b0: number, b1: number, b2: number): number {
    const length = (b0 << 16) | (b1 << 8) | b2;
    if (length > this.maxFrameSize) {
      throw new H2Error(ErrorCode.FRAME_SIZE_ERROR, 0, `frame of ${length} bytes`);
    }
    return length;
  }
}

/** The first `bytes` bytes of `chunks`, as one array (the only chunk itself when it suffices). */
function gather(chunks: Uint8Array[], bytes: number): Uint8Array {
  if (chunks[0]!.length >= bytes) return chunks[0]!.subarray(0, bytes);
  const out = new Uint8Array(bytes);
  let at = 0;
  for (const c of chunks) {
    if (at >= bytes) break;
    const n = Math.min(c.length, bytes - at);
    out.set(c.subarray(0, n), at);
    at += n;
  }
  return out;
}
