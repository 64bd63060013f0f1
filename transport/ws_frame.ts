/**
 * The RFC 6455 frame layer of knp's WebSockets: masked client frames
 * ({@linkcode encodeClientFrame}), unmasked server frames ({@linkcode encodeServerFrame}) and an
 * incremental parser of either ({@linkcode FrameParser}). No I/O.
 *
 * @module
 */

/** Largest message accepted by default: a 4 MiB DATA packet plus framing (as the link's limit). */
export const DEFAULT_MAX_MESSAGE_BYTES: number = 4 * 1024 * 1024 + 1024;

/** Opcode of a continuation frame. */
export const OP_CONTINUATION = 0x0;
/** Opcode of a text frame. */
export const OP_TEXT = 0x1;
/** Opcode of a binary frame. */
export const OP_BINARY = 0x2;
/** Opcode of a close frame. */
export const OP_CLOSE = 0x8;
/** Opcode of a ping frame. */
export const OP_PING = 0x9;
/** Opcode of a pong frame. */
export const OP_PONG = 0xa;

import { maskInPlace } from "./ws_frame_encode.ts";
import { takeMessageBuffer } from "./message_pool.ts";

const encoder = new TextEncoder();
const strictDecoder = new TextDecoder("utf-8", { fatal: true });

export {
  coalesceFrames,
  encodeClientFrame,
  encodeFrameWith,
  encodeServerFrame,
  FRAME_SLOT_BYTES,
  type PayloadWriter,
  releaseFrame,
  ZERO_MASK_HEADER,
} from "./ws_frame_encode.ts";

// ---------------------------------------------------------------------------------------------
// Frame parsing (server → client frames are never masked; client → server frames always are).

/** What a {@linkcode FrameParser} reports. */
export interface FrameHandler {
  /** A whole text message (checked to be UTF-8). */
  text(data: string): void;
  /**
   * A whole binary message: its own copy at offset 0, the whole buffer, or with `pooled` possibly
   * a view of a buffer from transport/message_pool.ts (larger than the message).
   */
  binary(data: Uint8Array<ArrayBuffer>): void;
  /** A ping frame and its payload. */
  ping(payload: Uint8Array<ArrayBuffer>): void;
  /** A pong frame and its payload. */
  pong(payload: Uint8Array<ArrayBuffer>): void;
  /** A close frame: its code (1005 when it had none) and reason. The parser stops here. */
  close(code: number, reason: string): void;
  /** The peer broke the protocol; `code` is the close code to answer. The parser stops here. */
  fail(code: number, reason: string): void;
}

/** Whether an endpoint may send `code` in a close frame. */
export function validCloseCode(code: number): boolean {
  return (code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) ||
    (code >= 3000 && code <= 4999);
}

/**
 * Incremental parser of frames: feed it the bytes as they arrive, in chunks of any size. By default
 * it parses a server's frames (unmasked); with `masked` a client's (masked, unmasked here).
 * Every payload byte is copied exactly once, into a buffer of the payload's size (fragmented
 * messages once more, when the last fragment arrives), so chunks may be reused after `push`.
 */
export class FrameParser {
  #handler: FrameHandler;
  #max: number;
  /** Header bytes gathered across chunks (at most 14). */
  #head = new Uint8Array(14);
  #headLen = 0;
  /** Current frame, while its payload is being read. */
  #inFrame = false;
  #opcode = 0;
  #fin = false;
  #payload: Uint8Array<ArrayBuffer> = new Uint8Array(0);
  #filled = 0;
  /** Whether frames must be masked (a client's), and the current frame's mask. */
  #masked: boolean;
  #mask = 0;
  /** Opcode of the fragmented message in progress (0: none) and its fragments. */
  #messageOpcode = 0;
  #fragments: Uint8Array<ArrayBuffer>[] = [];
  #fragmentBytes = 0;
  #stopped = false;
  readonly #pooled: boolean;

  /**
   * Reports to `handler`; a message over `maxMessageBytes` is a protocol error (1009). With
   * `masked` (a server parsing a client's frames) every frame must be masked; else none may be.
   * `pooled`: large unfragmented binary messages come from transport/message_pool.ts.
   */
  constructor(
    handler: FrameHandler,
    maxMessageBytes = DEFAULT_MAX_MESSAGE_BYTES,
    masked = false,
    pooled = false,
  ) {
    this.#handler = handler;
    this.#max = maxMessageBytes;
    this.#masked = masked;
    this.#pooled = pooled;
  }

  /** True once a close frame or a protocol error ended parsing. */
  get stopped(): boolean {
    return this.#stopped;
  }

  /** Parses the next bytes from the server; whole frames are reported as they complete. */
  push(chunk: Uint8Array): void {
    const end = chunk.length;
    let pos = 0;
    while (pos < end && !this.#stopped) {
      if (this.#inFrame) {
        const take = Math.min(this.#payload.length - this.#filled, end - pos);
        this.#payload.set(chunk.subarray(pos, pos + take), this.#filled);
        this.#filled += take;
        pos += take;
        if (this.#filled === this.#payload.length) this.#endFrame();
        continue;
      }
      if (this.#headLen === 0 && end - pos >= 2) {
        // Fast path: the whole header is in this chunk.
        const size = headerSize(chunk[pos + 1]!);
        if (end - pos >= size) {
          this.#startFrame(chunk, pos);
          pos += size;
          continue;
        }
      }
      // Slow path: gather the header across chunks.
      if (this.#headLen < 2) {
        this.#head[this.#headLen++] = chunk[pos++]!;
        if (this.#headLen < 2) continue;
      }
      const size = headerSize(this.#head[1]!);
      const take = Math.min(size - this.#headLen, end - pos);
      this.#head.set(chunk.subarray(pos, pos + take), this.#headLen);
      this.#headLen += take;
      pos += take;
      if (this.#headLen === size) {
        this.#headLen = 0;
        this.#startFrame(this.#head, 0);
      }
    }
  }

  #fail(code: number, reason: string): void {
    this.#stopped = true;
    this.#fragments = [];
    this.#handler.fail(code, reason);
  }

  #startFrame(bytes: Uint8Array, at: number): void {
    const b0 = bytes[at]!;
    const b1 = bytes[at + 1]!;
    const fin = (b0 & 0x80) !== 0;
    const opcode = b0 & 0x0f;
    if (b0 & 0x70) return this.#fail(1002, "reserved bits set without an extension");
    if (((b1 & 0x80) !== 0) !== this.#masked) {
      return this.#fail(
        1002,
        this.#masked ? "unmasked frame from a client" : "masked frame from the server",
      );
    }
    let len = b1 & 0x7f;
    if (this.#masked) {
      const m = at + headerSize(b1) - 4;
      this.#mask = new DataView(bytes.buffer, bytes.byteOffset + m, 4).getUint32(0, true);
    }
    if (len === 126) len = (bytes[at + 2]! << 8) | bytes[at + 3]!;
    else if (len === 127) {
      const hi = ((bytes[at + 2]! << 24) | (bytes[at + 3]! << 16) | (bytes[at + 4]! << 8) |
        bytes[at + 5]!) >>> 0;
      const lo = ((bytes[at + 6]! << 24) | (bytes[at + 7]! << 16) | (bytes[at + 8]! << 8) |
        bytes[at + 9]!) >>> 0;
      if (hi & 0x8000_0000) return this.#fail(1002, "frame length with the high bit set");
      len = hi * 0x1_0000_0000 + lo;
    }
    if (opcode >= 0x8) {
      if (opcode !== OP_CLOSE && opcode !== OP_PING && opcode !== OP_PONG) {
        return this.#fail(1002, `unknown opcode ${opcode}`);
      }
      if (!fin) return this.#fail(1002, "fragmented control frame");
      if (len > 125) return this.#fail(1002, "control frame longer than 125 bytes");
    } else if (opcode === OP_CONTINUATION) {
      if (this.#messageOpcode === 0) return this.#fail(1002, "continuation frame with no message");
    } else if (opcode === OP_TEXT || opcode === OP_BINARY) {
      if (this.#messageOpcode !== 0) {
        return this.#fail(1002, "new message inside a fragmented message");
      }
    } else {
      return this.#fail(1002, `unknown opcode ${opcode}`);
    }
    if (opcode < 0x8 && this.#fragmentBytes + len > this.#max) {
      return this.#fail(1009, `message larger than ${this.#max} bytes`);
    }
    this.#opcode = opcode;
    this.#fin = fin;
    // Every byte of a pooled buffer's message is written before it is delivered.
    this.#payload = this.#pooled && fin && opcode === OP_BINARY
      ? takeMessageBuffer(len)
      : new Uint8Array(len);
    this.#filled = 0;
    this.#inFrame = true;
    if (len === 0) this.#endFrame();
  }

  #endFrame(): void {
    this.#inFrame = false;
    const payload = this.#payload;
    // A zero key (see ZERO_MASK_HEADER) leaves the payload as it is.
    if (this.#masked && this.#mask !== 0 && payload.length > 0) unmask(payload, this.#mask);
    const opcode = this.#opcode;
    switch (opcode) {
      case OP_TEXT:
      case OP_BINARY:
        if (this.#fin) return this.#deliver(payload, opcode);
        this.#messageOpcode = opcode;
        this.#fragments = [payload];
        this.#fragmentBytes = payload.length;
        return;
      case OP_CONTINUATION: {
        this.#fragments.push(payload);
        this.#fragmentBytes += payload.length;
        if (!this.#fin) return;
        const message = new Uint8Array(this.#fragmentBytes);
        let pos = 0;
        for (const part of this.#fragments) {
          message.set(part, pos);
          pos += part.length;
        }
        const messageOpcode = this.#messageOpcode;
        this.#messageOpcode = 0;
        this.#fragments = [];
        this.#fragmentBytes = 0;
        return this.#deliver(message, messageOpcode);
      }
      case OP_PING:
        return this.#handler.ping(payload);
      case OP_PONG:
        return this.#handler.pong(payload);
      case OP_CLOSE: {
        if (payload.length === 1) return this.#fail(1002, "close frame with a 1-byte payload");
        let code = 1005;
        let reason = "";
        if (payload.length >= 2) {
          code = (payload[0]! << 8) | payload[1]!;
          if (!validCloseCode(code)) return this.#fail(1002, `invalid close code ${code}`);
          try {
            reason = strictDecoder.decode(payload.subarray(2));
          } catch {
            return this.#fail(1007, "close reason is not UTF-8");
          }
        }
        this.#stopped = true;
        return this.#handler.close(code, reason);
      }
    }
  }

  #deliver(data: Uint8Array<ArrayBuffer>, opcode: number): void {
    if (opcode === OP_BINARY) return this.#handler.binary(data);
    let text: string;
    try {
      text = strictDecoder.decode(data);
    } catch {
      return this.#fail(1007, "text message is not UTF-8");
    }
    this.#handler.text(text);
  }
}

/** XORs a whole payload (its own buffer, offset 0) with the mask read little-endian. */
function unmask(payload: Uint8Array<ArrayBuffer>, word: number): void {
  maskInPlace(payload.buffer, 0, payload.length, word);
}

/** Header size from its second byte: 2, + 2 or 8 for the extended length, + 4 with a mask. */
function headerSize(b1: number): number {
  const len = b1 & 0x7f;
  return 2 + (len === 126 ? 2 : len === 127 ? 8 : 0) + (b1 & 0x80 ? 4 : 0);
}

/** Cuts UTF-8 bytes to at most `max` without splitting a character. */
function truncateUtf8(bytes: Uint8Array, max: number): Uint8Array {
  if (bytes.length <= max) return bytes;
  let end = max;
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--;
  return bytes.subarray(0, end);
}

/** The payload of a close frame: none without a code, else the code and the reason (cut to fit). */
export function closePayload(code?: number, reason?: string): Uint8Array {
  if (code === undefined) return new Uint8Array(0);
  const text = truncateUtf8(encoder.encode(reason ?? ""), 123);
  const payload = new Uint8Array(2 + text.length);
  payload[0] = code >>> 8;
  payload[1] = code & 0xff;
  payload.set(text, 2);
  return payload;
}
