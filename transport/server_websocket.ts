/**
 * {@linkcode ServerWebSocket}: the server end of an open WebSocket, run by knp's own frame code on
 * an accepted node socket (the agent link's node:tls socket) after ws_accept.ts answered the
 * upgrade. It has the members of the browser `WebSocket` that knp's link code uses
 * (`WebSocketSubset`) plus `ping()` and `onpong`, so `WebSocketPacketStream` can keep the peer
 * alive from the server side too. Frames from the client must be masked; frames sent are not.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import type { Socket } from "node:net";
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
import {
  closePayload,
  DEFAULT_MAX_MESSAGE_BYTES,
  encodeFrameWith,
  encodeServerFrame,
  FrameParser,
  OP_BINARY,
  OP_CLOSE,
  OP_PING,
  OP_PONG,
  OP_TEXT,
  releaseFrame,
} from "./ws_frame.ts";

/** How long `close()` waits for the client's close frame before cutting the connection. */
const CLOSE_WAIT_MS = 2_000;
/**
 * Frame bytes handed to the socket whose write has not completed, above which further frames wait
 * here: a pong is written at once, so it waits behind at most this (plus one frame).
 */
const SOCKET_AHEAD_BYTES = 64 * 1024;

const encoder = new TextEncoder();

const OPEN = 1;
const CLOSING = 2;
const CLOSED = 3;

/** An open server-side WebSocket over an accepted socket. */
export class ServerWebSocket {
  /** `readyState` once messages can be sent. */ readonly OPEN: 1 = OPEN;
  /** `readyState` while the closing handshake runs. */ readonly CLOSING: 2 = CLOSING;
  /** `readyState` once the connection is closed. */ readonly CLOSED: 3 = CLOSED;
  /** The peer as "host:port". */
  readonly url: string;
  /** Called for every whole message. */
  onmessage: ((this: unknown, event: WebSocketMessageEvent) => unknown) | null = null;
  /** Called once, when the connection has closed. */
  onclose: ((this: unknown, event: WebSocketCloseEvent) => unknown) | null = null;
  /** Called right before `onclose` when the connection failed. */
  onerror: ((this: unknown, event: WebSocketErrorEvent) => unknown) | null = null;
  /** Called for every pong frame. */
  onpong: ((this: unknown, event: WebSocketPongEvent) => unknown) | null = null;

  #socket: Socket;
  #state = OPEN;
  #binaryType: BinaryType = "arraybuffer";
  #parser: FrameParser;
  #closeSent = false;
  /** Frames in send order (data, pings, close) not yet handed to the socket, from `#head`. */
  #queue: Uint8Array[] = [];
  #head = 0;
  #queued = 0;
  /** Bytes handed to the socket whose write callback has not run yet. */
  #inSocket = 0;
  #received: { code: number; reason: string } | undefined;
  #failure: { code: number; reason: string } | undefined;
  #closeTimer: ReturnType<typeof setTimeout> | undefined;
  #finished = false;

  /**
   * Runs the WebSocket on `socket`, whose upgrade was answered; `leftover` are bytes read after
   * the request head. The socket may be paused; it is resumed here. `pooled`: large binary
   * messages come from transport/message_pool.ts (as a `Uint8Array` when a view of a larger
   * buffer) for a consumer that gives them back (the agent link's packet stream).
   */
  constructor(
    socket: Socket,
    leftover: Uint8Array,
    maxMessageBytes: number = DEFAULT_MAX_MESSAGE_BYTES,
    pooled = false,
  ) {
    this.#socket = socket;
    this.url = `${socket.remoteAddress}:${socket.remotePort}`;
    this.#parser = new FrameParser(
      {
        text: (data) => this.#onMessage(data),
        binary: (data) => this.#onMessage(data),
        ping: (payload) => {
          // A pong goes out before queued frames (see SOCKET_AHEAD_BYTES).
          if (this.#state === OPEN) this.#writeNow(encodeServerFrame(OP_PONG, payload));
        },
        pong: (payload) => this.#onPong(payload),
        close: (code, reason) => this.#onCloseFrame(code, reason),
        fail: (code, reason) => this.#failConnection(code, reason),
      },
      maxMessageBytes,
      true,
      pooled,
    );
    socket.on("data", (chunk: Uint8Array) => {
      if (!this.#parser.stopped) this.#parser.push(chunk);
    });
    socket.on("error", (err: Error) => this.#abnormal(err));
    socket.on("close", () => this.#abnormal(new Error("the connection closed")));
    socket.on("end", () => {
      if (!this.#received && !this.#failure) {
        this.#abnormal(new Error("the client ended the connection without a close frame"));
      } else this.#finish();
    });
    if (leftover.length > 0) queueMicrotask(() => this.#parser.push(leftover));
    socket.resume();
  }

  /** `OPEN`, `CLOSING` or `CLOSED`. */
  get readyState(): number {
    return this.#state;
  }

  /** Bytes handed to `send()` not yet written to the socket. */
  get bufferedAmount(): number {
    return this.#queued + this.#socket.writableLength;
  }

  /** How binary messages are delivered: `"arraybuffer"` or `"blob"`. */
  get binaryType(): BinaryType {
    return this.#binaryType;
  }

  set binaryType(value: BinaryType) {
    if (value === "arraybuffer" || value === "blob") this.#binaryType = value;
  }

  /** Queues a message; never blocks. Dropped once closing. */
  send(data: string | ArrayBufferLike | ArrayBufferView): void {
    if (this.#state !== OPEN) return;
    if (typeof data === "string") {
      return this.#write(encodeServerFrame(OP_TEXT, encoder.encode(data)));
    }
    const bytes = ArrayBuffer.isView(data)
      ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
      : new Uint8Array(data);
    this.#write(encodeServerFrame(OP_BINARY, bytes));
  }

  /**
   * Queues a binary message of `length` bytes that `fill` writes in place into the frame (no copy
   * of a payload built from parts); dropped once closing.
   */
  sendBinaryWith(length: number, fill: (out: Uint8Array, offset: number) => void): void {
    if (this.#state !== OPEN) return;
    this.#write(encodeFrameWith(OP_BINARY, length, false, fill));
  }

  /** Sends a ping frame (at most 125 bytes of payload); dropped once closing. */
  ping(payload: Uint8Array = new Uint8Array(0)): void {
    if (this.#state !== OPEN) return;
    checkPingPayload(payload);
    this.#write(encodeServerFrame(OP_PING, payload));
  }

  /**
   * Starts the closing handshake: sends a close frame and waits (at most 2 s) for the client's
   * before closing the connection. `onclose` follows.
   */
  close(code?: number, reason?: string): void {
    checkCloseCode(code);
    if (this.#state !== OPEN) return;
    this.#state = CLOSING;
    this.#sendClose(code, reason);
    this.#closeTimer = setTimeout(() => this.#finish(), CLOSE_WAIT_MS);
  }

  /** Queues a frame in send order. */
  #write(frame: Uint8Array): void {
    if (this.#finished) return;
    this.#queue.push(frame);
    this.#queued += frame.length;
    this.#pump(false);
  }

  /** Hands queued frames to the socket while little is in it (`all`: every one, before `end`). */
  #pump(all: boolean): void {
    while (this.#head < this.#queue.length && (all || this.#inSocket < SOCKET_AHEAD_BYTES)) {
      if (this.#finished) break;
      const frame = this.#queue[this.#head++]!;
      this.#queued -= frame.length;
      this.#writeNow(frame);
    }
    if (this.#head >= this.#queue.length || this.#finished) {
      this.#queue = [];
      this.#head = 0;
      this.#queued = 0;
    }
  }

  /** Writes a frame to the socket now, ahead of the queued frames. */
  #writeNow(frame: Uint8Array): void {
    if (this.#finished) return;
    const size = frame.length;
    this.#inSocket += size;
    this.#socket.write(Buffer.from(frame.buffer, frame.byteOffset, size), (err) => {
      if (!err) releaseFrame(frame);
      this.#inSocket -= size;
      if (this.#head < this.#queue.length) this.#pump(false);
    });
  }

  #sendClose(code?: number, reason?: string): void {
    if (this.#closeSent) return;
    this.#closeSent = true;
    this.#write(encodeServerFrame(OP_CLOSE, closePayload(code, reason)));
  }

  #onMessage(data: string | Uint8Array<ArrayBuffer>): void {
    if (this.#state !== OPEN || !this.onmessage) return;
    dispatch(this, this.onmessage, messageEvent(data, this.#binaryType));
  }

  #onPong(payload: Uint8Array<ArrayBuffer>): void {
    if (this.#state === CLOSED) return;
    dispatch(this, this.onpong, { type: "pong", data: payload });
  }

  /** The client's close frame: echo it (unless ours went out), then the server ends the TCP. */
  #onCloseFrame(code: number, reason: string): void {
    this.#received = { code, reason };
    this.#state = CLOSING;
    this.#sendClose(code === 1005 ? undefined : code, reason);
    this.#pump(true);
    this.#socket.end();
    this.#finish();
  }

  /** The client broke the protocol: send our close code and end the connection. */
  #failConnection(code: number, reason: string): void {
    this.#failure = { code, reason };
    this.#state = CLOSING;
    this.#sendClose(code, reason);
    this.#pump(true);
    this.#socket.end();
    this.#finish();
  }

  #abnormal(err: unknown): void {
    if (this.#finished) return;
    if (this.#closeSent && this.#state === CLOSING && !this.#failure) {
      // We sent a close frame and the client hung up: as good as its close frame.
      return this.#finish();
    }
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
    const socket = this.#socket;
    if (!this.#received || socket.destroyed) socket.destroy();
    else {
      // Our answer to the client's close frame is on its way: let the client close the TCP
      // connection first (RFC 6455 §7.1.1), bounded.
      const timer = setTimeout(() => socket.destroy(), CLOSE_WAIT_MS);
      socket.once("close", () => clearTimeout(timer));
    }
    dispatch(this, this.onclose, closeEvent(this.#failure, this.#received, this.#closeSent));
  }
}
