/**
 * {@linkcode ClientWebSocket}: an open client WebSocket over a `Deno.Conn`, with the part of the
 * browser `WebSocket` interface knp's link code uses ({@linkcode WebSocketSubset}) plus `ping()`
 * and `onpong` for keepalive. Opened by `connectWebSocket` (ws_client.ts).
 *
 * @module
 */

import {
  closePayload,
  coalesceFrames,
  encodeClientFrame,
  encodeFrameWith,
  FrameParser,
  OP_BINARY,
  OP_CLOSE,
  OP_PING,
  OP_PONG,
  OP_TEXT,
  releaseFrame,
} from "./ws_frame.ts";

/** How long `close()` waits for the server's close frame (or end of stream). */
const CLOSE_WAIT_MS = 2_000;
/** Size of the reusable read buffer. */
const READ_BUFFER_BYTES = 64 * 1024;
/** Frames up to this size queued together are copied into one write. */
const COALESCE_BYTES = 64 * 1024;

const encoder = new TextEncoder();

export type {
  WebSocketCloseEvent,
  WebSocketErrorEvent,
  WebSocketMessageEvent,
  WebSocketPongEvent,
} from "./ws_events.ts";
import type {
  WebSocketCloseEvent,
  WebSocketErrorEvent,
  WebSocketMessageEvent,
  WebSocketPongEvent,
} from "./ws_events.ts";
import {
  checkCloseCode,
  checkPingPayload,
  closeEvent,
  dispatch,
  errorEvent,
  messageEvent,
} from "./ws_events.ts";

/**
 * The members of the browser `WebSocket` that knp's link code uses. {@linkcode ClientWebSocket}
 * is assignable to it, so `ws as WebSocketSubset as WebSocket` is a checked, narrow cast for code
 * typed against `WebSocket` that only touches these members.
 */
export type WebSocketSubset = Pick<
  WebSocket,
  | "binaryType"
  | "bufferedAmount"
  | "readyState"
  | "url"
  | "onmessage"
  | "onclose"
  | "onerror"
  | "send"
  | "close"
>;

type State = 0 | 1 | 2 | 3;
const CONNECTING = 0;
const OPEN = 1;
const CLOSING = 2;
const CLOSED = 3;

/**
 * An open client WebSocket. Created by {@linkcode connectWebSocket}; events start in a task after
 * that promise resolves, so set the handlers right away (as with `new WebSocket`).
 *
 * Differences from the browser `WebSocket`, all deliberate:
 * - it is never `CONNECTING` (the promise resolves once the socket is open), and has no `onopen`,
 *   no `addEventListener`, no subprotocols and no extensions;
 * - `binaryType` defaults to `"arraybuffer"`;
 * - `close()` takes any close code an endpoint may send (1000–1003, 1007–1014, 3000–4999), not only
 *   1000 and 3000–4999, and cuts a reason longer than 123 bytes instead of throwing;
 * - `send()` takes strings, `ArrayBuffer`s and views, not `Blob`s;
 * - after a protocol error of the server, `onclose` reports the code this side sent (1002, 1007
 *   or 1009) rather than 1006.
 */
export class ClientWebSocket {
  /** `readyState` while the handshake runs. */ static readonly CONNECTING: 0 = CONNECTING;
  /** `readyState` once messages can be sent. */ static readonly OPEN: 1 = OPEN;
  /** `readyState` while the closing handshake runs. */ static readonly CLOSING: 2 = CLOSING;
  /** `readyState` once the connection is closed. */ static readonly CLOSED: 3 = CLOSED;
  /** `readyState` while the handshake runs. */ readonly CONNECTING: 0 = CONNECTING;
  /** `readyState` once messages can be sent. */ readonly OPEN: 1 = OPEN;
  /** `readyState` while the closing handshake runs. */ readonly CLOSING: 2 = CLOSING;
  /** `readyState` once the connection is closed. */ readonly CLOSED: 3 = CLOSED;

  /** The URL this socket was opened with. */
  readonly url: string;
  /** Called for every whole message. */
  onmessage: ((this: unknown, event: WebSocketMessageEvent) => unknown) | null = null;
  /** Called once, when the connection has closed. */
  onclose: ((this: unknown, event: WebSocketCloseEvent) => unknown) | null = null;
  /** Called right before `onclose` when the connection failed. */
  onerror: ((this: unknown, event: WebSocketErrorEvent) => unknown) | null = null;
  /** Called for every pong frame (answers to {@linkcode ClientWebSocket.ping}, or unsolicited). */
  onpong: ((this: unknown, event: WebSocketPongEvent) => unknown) | null = null;

  #conn: Deno.Conn;
  #state: State = OPEN;
  #binaryType: BinaryType = "arraybuffer";
  #parser: FrameParser;
  /** Frames in send order (data, pings, close), consumed from `#head`. */
  #queue: Uint8Array[] = [];
  #head = 0;
  /** Pongs: written before the queued frames (between two writes), see `#writeLoop`. */
  #pongs: Uint8Array[] = [];
  #queued = 0;
  #writing = false;
  #closeSent = false;
  #closeQueued = false;
  /** The server's close frame, once received. */
  #received: { code: number; reason: string } | undefined;
  /** Set when this side failed the connection: the close code it sent. */
  #failure: { code: number; reason: string } | undefined;
  #readEnded = false;
  /** The server announced ZERO_MASK_HEADER: frames go out with masking key 0. */
  readonly #zeroKey: boolean;
  #closeTimer: ReturnType<typeof setTimeout> | undefined;
  #finished = false;

  /** Use {@linkcode connectWebSocket}. @internal */
  constructor(
    conn: Deno.Conn,
    url: string,
    leftover: Uint8Array,
    maxMessageBytes: number,
    pooled = false,
    zeroKey = false,
  ) {
    this.#conn = conn;
    this.#zeroKey = zeroKey;
    this.url = url;
    this.#parser = new FrameParser(
      {
        text: (data) => this.#onMessage(data),
        binary: (data) => this.#onMessage(data),
        ping: (payload) => {
          if (this.#state === OPEN) this.#enqueuePong(this.#frame(OP_PONG, payload));
        },
        pong: (payload) => this.#onPong(payload),
        close: (code, reason) => this.#onCloseFrame(code, reason),
        fail: (code, reason) => this.#failConnection(code, reason),
      },
      maxMessageBytes,
      false,
      pooled,
    );
    const copy = leftover.slice();
    setTimeout(() => this.#readLoop(copy), 0);
  }

  /** One of `CONNECTING`, `OPEN`, `CLOSING` or `CLOSED`. */ get readyState(): number {
    return this.#state;
  }

  /** Whether frames go out with masking key 0 (the server announced `ZERO_MASK_HEADER`). */
  get zeroMaskKey(): boolean {
    return this.#zeroKey;
  }

  /** Bytes handed to `send()` (with their frame headers) not yet written to the socket. */
  get bufferedAmount(): number {
    return this.#queued;
  }

  /** How binary messages are delivered: `"arraybuffer"` or `"blob"`. */
  get binaryType(): BinaryType {
    return this.#binaryType;
  }

  set binaryType(value: BinaryType) {
    if (value === "arraybuffer" || value === "blob") this.#binaryType = value;
  }

  /** Queues a message; never blocks. Dropped silently once closing (as the browser does). */
  send(data: string | ArrayBufferLike | ArrayBufferView): void {
    if (this.#state !== OPEN) return;
    let opcode = OP_BINARY;
    let bytes: Uint8Array;
    if (typeof data === "string") {
      opcode = OP_TEXT;
      bytes = encoder.encode(data);
    } else if (data instanceof Uint8Array) bytes = data;
    else if (ArrayBuffer.isView(data)) {
      bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    } else if (data instanceof ArrayBuffer || data instanceof SharedArrayBuffer) {
      bytes = new Uint8Array(data);
    } else {
      throw new TypeError("send() takes a string, an ArrayBuffer or an ArrayBufferView");
    }
    this.#enqueue(this.#frame(opcode, bytes));
  }

  /**
   * Queues a binary message of `length` bytes that `fill` writes in place into the frame (no copy
   * of a payload built from parts); dropped once closing.
   */
  sendBinaryWith(length: number, fill: (out: Uint8Array, offset: number) => void): void {
    if (this.#state !== OPEN) return;
    this.#enqueue(encodeFrameWith(OP_BINARY, length, true, fill, this.#zeroKey));
  }

  /** Sends a ping frame (at most 125 bytes of payload); dropped once closing. */
  ping(payload: Uint8Array = new Uint8Array(0)): void {
    if (this.#state !== OPEN) return;
    checkPingPayload(payload);
    this.#enqueue(this.#frame(OP_PING, payload));
  }

  /**
   * Starts the closing handshake: sends a close frame, then waits (at most 2 s) for the server's
   * close frame or the end of the stream before closing the connection. `onclose` follows.
   */
  close(code?: number, reason?: string): void {
    checkCloseCode(code);
    if (this.#state === CLOSING || this.#state === CLOSED) return;
    this.#state = CLOSING;
    this.#sendClose(code, reason);
    this.#armCloseTimer();
  }

  // ------------------------------------------------------------------------------- internals

  #sendClose(code?: number, reason?: string): void {
    if (this.#closeQueued) return;
    this.#closeQueued = true;
    this.#enqueue(this.#frame(OP_CLOSE, closePayload(code, reason)));
  }

  /** One masked frame of this socket (key 0 once the server announced it). */
  #frame(opcode: number, payload: Uint8Array): Uint8Array {
    return encodeClientFrame(opcode, payload, this.#zeroKey);
  }

  #armCloseTimer(): void {
    if (this.#closeTimer !== undefined || this.#finished) return;
    this.#closeTimer = setTimeout(() => {
      this.#closeTimer = undefined;
      this.#finish();
    }, CLOSE_WAIT_MS);
  }

  #enqueue(frame: Uint8Array): void {
    this.#queue.push(frame);
    this.#queued += frame.length;
    if (!this.#writing) this.#writeLoop();
  }

  /**
   * A pong answers the peer's ping, which (on knp's link) acknowledges the peer's data: it goes
   * out before the data queued here, so it waits behind at most the write in progress. Pings and
   * the close frame keep their place (a ping's byte count covers the data queued before it).
   */
  #enqueuePong(frame: Uint8Array): void {
    this.#pongs.push(frame);
    this.#queued += frame.length;
    if (!this.#writing) this.#writeLoop();
  }

  /** The next write: every waiting pong, else the next frames of the queue (coalesced). */
  #nextChunk(): Uint8Array | undefined {
    if (this.#pongs.length > 0) {
      const [chunk] = coalesceFrames(this.#pongs, 0, Infinity);
      this.#pongs = [];
      return chunk;
    }
    if (this.#head >= this.#queue.length) return undefined;
    const [chunk, next] = coalesceFrames(this.#queue, this.#head, COALESCE_BYTES);
    this.#head = next;
    if (next >= this.#queue.length) {
      this.#queue = [];
      this.#head = 0;
    }
    return chunk;
  }

  async #writeLoop(): Promise<void> {
    this.#writing = true;
    try {
      let chunk: Uint8Array | undefined;
      while (!this.#finished && (chunk = this.#nextChunk()) !== undefined) {
        let off = 0;
        while (off < chunk.length) {
          const n = await this.#conn.write(off === 0 ? chunk : chunk.subarray(off));
          off += n;
          this.#queued -= n;
        }
        releaseFrame(chunk);
      }
    } catch (err) {
      this.#writing = false;
      this.#queue = [];
      this.#head = 0;
      this.#pongs = [];
      this.#queued = 0;
      if (!this.#finished) this.#abnormal(err);
      return;
    }
    this.#writing = false;
    if (this.#closeQueued && !this.#closeSent && this.#queue.length === 0) {
      this.#closeSent = true;
      // Both close frames exchanged: the server ends the stream next; wait for that, bounded.
      if (this.#received || this.#failure) this.#armCloseTimer();
      if (this.#readEnded) this.#finish();
    }
  }

  async #readLoop(leftover: Uint8Array): Promise<void> {
    if (leftover.length > 0) this.#parser.push(leftover);
    const buf = new Uint8Array(READ_BUFFER_BYTES);
    for (;;) {
      if (this.#finished) return;
      let n: number | null;
      try {
        n = await this.#conn.read(buf);
      } catch (err) {
        this.#readEnded = true;
        if (this.#finished) return;
        if (this.#closeSent && (this.#received || this.#failure)) return this.#finish();
        return this.#abnormal(err);
      }
      if (n === null) {
        this.#readEnded = true;
        if (this.#finished) return;
        // After both close frames (or after failing), the end of the stream is the clean end.
        if (this.#received || this.#failure) {
          if (this.#closeSent || !this.#writing) return this.#finish();
          return; // the write loop finishes once our close frame is out
        }
        return this.#abnormal(new Error("the server ended the connection without a close frame"));
      }
      if (!this.#parser.stopped) this.#parser.push(buf.subarray(0, n));
    }
  }

  #onMessage(data: string | Uint8Array<ArrayBuffer>): void {
    if (this.#state !== OPEN || !this.onmessage) return;
    dispatch(this, this.onmessage, messageEvent(data, this.#binaryType));
  }

  #onPong(payload: Uint8Array<ArrayBuffer>): void {
    if (this.#state === CLOSED) return;
    dispatch(this, this.onpong, { type: "pong", data: payload });
  }

  #onCloseFrame(code: number, reason: string): void {
    this.#received = { code, reason };
    if (this.#state === OPEN) this.#state = CLOSING;
    // Echo the code (none when the server's frame had none) unless we sent a close already.
    this.#sendClose(code === 1005 ? undefined : code, reason);
    this.#armCloseTimer();
  }

  /** The server broke the protocol: send our close code and end without waiting for its own. */
  #failConnection(code: number, reason: string): void {
    this.#failure = { code, reason };
    this.#state = CLOSING;
    this.#sendClose(code, reason);
    this.#armCloseTimer();
  }

  /** The connection broke (I/O error, or the stream ended without a close frame). */
  #abnormal(err: unknown): void {
    if (this.#finished) return;
    this.#failure ??= { code: 1006, reason: "" };
    dispatch(this, this.onerror, errorEvent(err));
    this.#finish();
  }

  #finish(): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#state = CLOSED;
    if (this.#closeTimer !== undefined) clearTimeout(this.#closeTimer);
    this.#closeTimer = undefined;
    try {
      this.#conn.close();
    } catch { /* already closed */ }
    this.#queue = [];
    this.#head = 0;
    this.#pongs = [];
    this.#queued = 0;
    dispatch(this, this.onclose, closeEvent(this.#failure, this.#received, this.#closeSent));
  }
}
