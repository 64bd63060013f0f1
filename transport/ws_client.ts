/**
 * A minimal RFC 6455 WebSocket client over Deno's own TCP and TLS, for the agent link.
 *
 * Deno's `WebSocket` client leaves Nagle's algorithm on (it clears `TCP_NODELAY`) and offers no way
 * to change that, so a small write that follows another small write waits for the peer's delayed
 * ACK (~40 ms on Linux). This client connects with `Deno.connect`, sets `TCP_NODELAY`, then starts
 * TLS on that socket with `Deno.startTls`.
 *
 * `Deno.startTls` cannot present a client certificate. With `cert` and `key` in the options the
 * client uses `Deno.connectTls` instead, which can, but whose socket keeps Nagle's algorithm on
 * (Deno 2.9 has no way to set `TCP_NODELAY` on a `TlsConn`). knp's own server cannot ask for client
 * certificates anyway (the agent proves its identity inside the link's handshake), so the agent
 * does not pass them.
 *
 * ```ts
 * const ws = await connectWebSocket("wss://localhost:8096/knp/v1/agent", { caCerts: [ca] });
 * ws.onmessage = (e) => console.log(e.data);
 * ws.send("hello");
 * ```
 *
 * {@linkcode ClientWebSocket} has the part of the browser `WebSocket` interface knp's link code
 * uses ({@linkcode WebSocketSubset}); see there for the (few, deliberate) differences.
 *
 * @module
 */

/** Largest message accepted by default: a 4 MiB DATA packet plus framing (as the link's limit). */
export const DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024 + 1024;
/** Bound on the response head of the opening handshake. */
const MAX_RESPONSE_HEAD = 16 * 1024;
/** Bound on the body of a refusal kept for the error message. */
const MAX_REFUSAL_BODY = 16 * 1024;
/** How long a refusal's body may take to arrive. */
const REFUSAL_BODY_MS = 2_000;
/** How long `close()` waits for the server's close frame (or end of stream). */
const CLOSE_WAIT_MS = 2_000;
/** Default bound on the opening handshake (connect, TLS, upgrade). */
const DEFAULT_OPEN_TIMEOUT_MS = 30_000;
/** Size of the reusable read buffer. */
const READ_BUFFER_BYTES = 64 * 1024;
/** Frames up to this size queued together are copied into one write. */
const COALESCE_BYTES = 64 * 1024;
const ACCEPT_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

const OP_CONTINUATION = 0x0;
const OP_TEXT = 0x1;
const OP_BINARY = 0x2;
const OP_CLOSE = 0x8;
const OP_PING = 0x9;
const OP_PONG = 0xa;

const encoder = new TextEncoder();
const strictDecoder = new TextDecoder("utf-8", { fatal: true });
const latin1 = new TextDecoder("latin1");

/** Options of {@linkcode connectWebSocket}. */
export interface ConnectWebSocketOptions {
  /** PEM CA certificates trusted for `wss:` in addition to the default roots. */
  caCerts?: string[];
  /**
   * PEM client certificate and key presented in the TLS handshake. Only `Deno.connectTls` can
   * present one, and its socket keeps Nagle's algorithm on: leave these out unless the server (or
   * a TLS proxy in front of it) asks for a client certificate.
   */
  cert?: string;
  key?: string;
  /** Extra request headers of the upgrade request. */
  headers?: Record<string, string>;
  /** Aborts the opening handshake (connect, TLS, upgrade); ignored once the socket is open. */
  signal?: AbortSignal;
  /** Bound on the opening handshake. @default 30000 */
  timeoutMs?: number;
  /** Largest message (after reassembly) accepted; a larger one closes with 1009. */
  maxMessageBytes?: number;
}

/** The upgrade was answered with something other than a valid `101 Switching Protocols`. */
export class WebSocketHandshakeError extends Error {
  /** HTTP status of the answer (0 when it was not HTTP at all). */
  readonly status: number;
  /** The status line as received, e.g. `HTTP/1.1 401 Unauthorized`. */
  readonly statusLine: string;
  /** The response body as text (trimmed, at most 16 KiB), empty when there was none. */
  readonly body: string;
  constructor(message: string, status = 0, statusLine = "", body = "") {
    super(message);
    this.name = "WebSocketHandshakeError";
    this.status = status;
    this.statusLine = statusLine;
    this.body = body;
  }
}

/** The event `onmessage` receives. */
export interface WebSocketMessageEvent {
  readonly type: string;
  /** A string for text messages; an `ArrayBuffer` (or `Blob`, per `binaryType`) for binary. */
  readonly data: string | ArrayBuffer | Blob;
}

/** The event `onclose` receives (once per socket). */
export interface WebSocketCloseEvent {
  readonly type: string;
  readonly code: number;
  readonly reason: string;
  /** Both close frames were exchanged and the connection ended in order. */
  readonly wasClean: boolean;
}

/** The event `onerror` receives, right before `onclose`, when the connection failed. */
export interface WebSocketErrorEvent {
  readonly type: string;
  readonly message?: string;
  readonly error?: unknown;
}

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

// ---------------------------------------------------------------------------------------------
// Frame encoding (client → server: always masked).

/** Random mask keys, drawn from a pool refilled by `crypto.getRandomValues`. */
const maskPool = new Uint32Array(1024);
let maskPoolPos = maskPool.length;

function nextMask(): number {
  if (maskPoolPos === maskPool.length) {
    crypto.getRandomValues(maskPool);
    maskPoolPos = 0;
  }
  return maskPool[maskPoolPos++]!;
}

/** XORs `len` bytes of `buf` from `offset` (a multiple of 4) with the 4-byte mask `word`. */
function maskInPlace(buf: ArrayBuffer, offset: number, len: number, word: number): void {
  const words = len >>> 2;
  const w = new Uint32Array(buf, offset, words);
  for (let i = 0; i < words; i++) w[i]! ^= word;
  const tail = len & 3;
  if (tail) {
    const bytes = new Uint8Array(buf, offset + (words << 2), tail);
    const mask = new Uint8Array(Uint32Array.of(word).buffer);
    for (let i = 0; i < tail; i++) bytes[i]! ^= mask[i]!;
  }
}

/**
 * Builds one masked client frame with FIN set. The payload starts 4-byte aligned in its buffer so
 * masking runs a word at a time. Exported for tests.
 */
export function encodeClientFrame(opcode: number, payload: Uint8Array): Uint8Array {
  const len = payload.length;
  const ext = len < 126 ? 0 : len < 0x10000 ? 2 : 8;
  const head = 2 + ext + 4;
  const pad = (4 - (head & 3)) & 3;
  const buffer = new ArrayBuffer(pad + head + len);
  const frame = new Uint8Array(buffer, pad, head + len);
  frame[0] = 0x80 | opcode;
  if (ext === 0) frame[1] = 0x80 | len;
  else if (ext === 2) {
    frame[1] = 0x80 | 126;
    frame[2] = len >>> 8;
    frame[3] = len & 0xff;
  } else {
    frame[1] = 0x80 | 127;
    const view = new DataView(buffer, pad + 2, 8);
    view.setUint32(0, Math.floor(len / 0x1_0000_0000));
    view.setUint32(4, len >>> 0);
  }
  const word = nextMask();
  new Uint32Array(buffer, pad + head - 4, 1)[0] = word;
  frame.set(payload, head);
  maskInPlace(buffer, pad + head, len, word);
  return frame;
}

// ---------------------------------------------------------------------------------------------
// Frame parsing (server → client: never masked).

/** What a {@linkcode FrameParser} reports. */
export interface FrameHandler {
  /** A whole text message (checked to be UTF-8). */
  text(data: string): void;
  /** A whole binary message: its own exactly sized copy (offset 0, the whole buffer). */
  binary(data: Uint8Array<ArrayBuffer>): void;
  ping(payload: Uint8Array<ArrayBuffer>): void;
  pong(payload: Uint8Array<ArrayBuffer>): void;
  /** A close frame: its code (1005 when it had none) and reason. The parser stops here. */
  close(code: number, reason: string): void;
  /** The peer broke the protocol; `code` is the close code to answer. The parser stops here. */
  fail(code: number, reason: string): void;
}

function validCloseCode(code: number): boolean {
  return (code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) ||
    (code >= 3000 && code <= 4999);
}

/**
 * Incremental parser of server frames: feed it the bytes as they arrive, in chunks of any size.
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
  /** Opcode of the fragmented message in progress (0: none) and its fragments. */
  #messageOpcode = 0;
  #fragments: Uint8Array<ArrayBuffer>[] = [];
  #fragmentBytes = 0;
  #stopped = false;

  constructor(handler: FrameHandler, maxMessageBytes = DEFAULT_MAX_MESSAGE_BYTES) {
    this.#handler = handler;
    this.#max = maxMessageBytes;
  }

  /** True once a close frame or a protocol error ended parsing. */
  get stopped(): boolean {
    return this.#stopped;
  }

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
    if (b1 & 0x80) return this.#fail(1002, "masked frame from the server");
    let len = b1 & 0x7f;
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
    this.#payload = new Uint8Array(len);
    this.#filled = 0;
    this.#inFrame = true;
    if (len === 0) this.#endFrame();
  }

  #endFrame(): void {
    this.#inFrame = false;
    const payload = this.#payload;
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

/** Header size from its second byte: 2, + 2 or 8 for the extended length, + 4 with a mask. */
function headerSize(b1: number): number {
  const len = b1 & 0x7f;
  return 2 + (len === 126 ? 2 : len === 127 ? 8 : 0) + (b1 & 0x80 ? 4 : 0);
}

// ---------------------------------------------------------------------------------------------
// The socket.

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
  static readonly CONNECTING = CONNECTING;
  static readonly OPEN = OPEN;
  static readonly CLOSING = CLOSING;
  static readonly CLOSED = CLOSED;
  readonly CONNECTING = CONNECTING;
  readonly OPEN = OPEN;
  readonly CLOSING = CLOSING;
  readonly CLOSED = CLOSED;

  /** The URL this socket was opened with. */
  readonly url: string;
  onmessage: ((this: unknown, event: WebSocketMessageEvent) => unknown) | null = null;
  onclose: ((this: unknown, event: WebSocketCloseEvent) => unknown) | null = null;
  onerror: ((this: unknown, event: WebSocketErrorEvent) => unknown) | null = null;

  #conn: Deno.Conn;
  #state: State = OPEN;
  #binaryType: BinaryType = "arraybuffer";
  #parser: FrameParser;
  #queue: Uint8Array[] = [];
  #queued = 0;
  #writing = false;
  #closeSent = false;
  #closeQueued = false;
  /** The server's close frame, once received. */
  #received: { code: number; reason: string } | undefined;
  /** Set when this side failed the connection: the close code it sent. */
  #failure: { code: number; reason: string } | undefined;
  #readEnded = false;
  #closeTimer: ReturnType<typeof setTimeout> | undefined;
  #finished = false;

  /** Use {@linkcode connectWebSocket}. @internal */
  constructor(conn: Deno.Conn, url: string, leftover: Uint8Array, maxMessageBytes: number) {
    this.#conn = conn;
    this.url = url;
    this.#parser = new FrameParser({
      text: (data) => this.#onMessage(data),
      binary: (data) => this.#onMessage(data),
      ping: (payload) => {
        if (this.#state === OPEN) this.#enqueue(encodeClientFrame(OP_PONG, payload));
      },
      pong: () => {},
      close: (code, reason) => this.#onCloseFrame(code, reason),
      fail: (code, reason) => this.#failConnection(code, reason),
    }, maxMessageBytes);
    const copy = leftover.slice();
    setTimeout(() => this.#readLoop(copy), 0);
  }

  get readyState(): number {
    return this.#state;
  }

  /** Bytes handed to `send()` (with their frame headers) not yet written to the socket. */
  get bufferedAmount(): number {
    return this.#queued;
  }

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
    this.#enqueue(encodeClientFrame(opcode, bytes));
  }

  /**
   * Starts the closing handshake: sends a close frame, then waits (at most 2 s) for the server's
   * close frame or the end of the stream before closing the connection. `onclose` follows.
   */
  close(code?: number, reason?: string): void {
    if (code !== undefined && !validCloseCode(code)) {
      throw new DOMException(`invalid close code ${code}`, "InvalidAccessError");
    }
    if (this.#state === CLOSING || this.#state === CLOSED) return;
    this.#state = CLOSING;
    this.#sendClose(code, reason);
    this.#armCloseTimer();
  }

  // ------------------------------------------------------------------------------- internals

  #sendClose(code?: number, reason?: string): void {
    if (this.#closeQueued) return;
    this.#closeQueued = true;
    let payload = new Uint8Array(0);
    if (code !== undefined) {
      const text = truncateUtf8(encoder.encode(reason ?? ""), 123);
      payload = new Uint8Array(2 + text.length);
      payload[0] = code >>> 8;
      payload[1] = code & 0xff;
      payload.set(text, 2);
    }
    this.#enqueue(encodeClientFrame(OP_CLOSE, payload));
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

  async #writeLoop(): Promise<void> {
    this.#writing = true;
    try {
      while (this.#queue.length > 0 && !this.#finished) {
        const batch = this.#queue;
        this.#queue = [];
        let i = 0;
        while (i < batch.length) {
          let chunk = batch[i++]!;
          if (chunk.length < COALESCE_BYTES && i < batch.length) {
            // Copy small frames queued together into one write.
            let size = chunk.length;
            let j = i;
            while (j < batch.length && size + batch[j]!.length <= COALESCE_BYTES) {
              size += batch[j++]!.length;
            }
            if (j > i) {
              const joined = new Uint8Array(size);
              joined.set(chunk, 0);
              let pos = chunk.length;
              for (; i < j; i++) {
                joined.set(batch[i]!, pos);
                pos += batch[i]!.length;
              }
              chunk = joined;
            }
          }
          let off = 0;
          while (off < chunk.length) {
            const n = await this.#conn.write(off === 0 ? chunk : chunk.subarray(off));
            off += n;
            this.#queued -= n;
          }
        }
      }
    } catch (err) {
      this.#writing = false;
      this.#queue = [];
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
    if (this.#state !== OPEN) return;
    const handler = this.onmessage;
    if (!handler) return;
    let value: string | ArrayBuffer | Blob;
    if (typeof data === "string") value = data;
    else if (this.#binaryType === "blob") value = new Blob([data]);
    else value = data.buffer;
    try {
      handler.call(this, { type: "message", data: value });
    } catch (err) {
      reportError(err);
    }
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
    const handler = this.onerror;
    if (handler) {
      try {
        handler.call(this, {
          type: "error",
          message: err instanceof Error ? err.message : String(err),
          error: err,
        });
      } catch (e) {
        reportError(e);
      }
    }
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
    this.#queued = 0;
    let event: WebSocketCloseEvent;
    if (this.#failure) {
      event = {
        type: "close",
        code: this.#failure.code,
        reason: this.#failure.reason,
        wasClean: false,
      };
    } else if (this.#received && this.#closeSent) {
      event = { type: "close", ...this.#received, wasClean: true };
    } else {
      event = {
        type: "close",
        code: this.#received?.code ?? 1006,
        reason: this.#received?.reason ?? "",
        wasClean: false,
      };
    }
    const handler = this.onclose;
    if (handler) {
      try {
        handler.call(this, event);
      } catch (err) {
        reportError(err);
      }
    }
  }
}

/** Cuts UTF-8 bytes to at most `max` without splitting a character. */
function truncateUtf8(bytes: Uint8Array, max: number): Uint8Array {
  if (bytes.length <= max) return bytes;
  let end = max;
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--;
  return bytes.subarray(0, end);
}

// ---------------------------------------------------------------------------------------------
// Opening handshake.

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const RESERVED_HEADERS = new Set([
  "host",
  "upgrade",
  "connection",
  "sec-websocket-key",
  "sec-websocket-version",
  "sec-websocket-extensions",
  "content-length",
  "transfer-encoding",
]);

function base64(bytes: Uint8Array): string {
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin);
}

/** The `Sec-WebSocket-Accept` value for a key. Exported for tests. */
export async function acceptFor(key: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-1", encoder.encode(key + ACCEPT_GUID));
  return base64(new Uint8Array(digest));
}

interface ResponseHead {
  statusLine: string;
  status: number;
  headers: Map<string, string>;
}

function parseHead(text: string): ResponseHead {
  const lines = text.split("\r\n");
  const statusLine = lines[0] ?? "";
  const match = /^HTTP\/1\.[01] (\d{3})(?: .*)?$/.exec(statusLine);
  if (!match) {
    throw new WebSocketHandshakeError(
      `the server did not answer with HTTP: ${JSON.stringify(statusLine.slice(0, 200))}`,
    );
  }
  const headers = new Map<string, string>();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    const prev = headers.get(name);
    headers.set(name, prev === undefined ? value : `${prev}, ${value}`);
  }
  return { statusLine, status: Number(match[1]), headers };
}

function indexOfHeadEnd(buf: Uint8Array, from: number, to: number): number {
  for (let i = Math.max(0, from); i + 3 < to; i++) {
    if (buf[i] === 13 && buf[i + 1] === 10 && buf[i + 2] === 13 && buf[i + 3] === 10) return i;
  }
  return -1;
}

/** Reads the rest of a refusal's body (bounded in size and time) and returns it as text. */
async function readRefusalBody(
  conn: Deno.Conn,
  head: ResponseHead,
  first: Uint8Array,
): Promise<string> {
  if (/^(1\d\d|204|304)$/.test(String(head.status))) return "";
  const length = head.headers.get("content-length");
  const chunked = /\bchunked\b/i.test(head.headers.get("transfer-encoding") ?? "");
  const want = length !== undefined && /^\d+$/.test(length)
    ? Math.min(Number(length), MAX_REFUSAL_BODY)
    : MAX_REFUSAL_BODY;
  const parts: Uint8Array[] = [first.subarray(0, want)];
  let have = parts[0]!.length;
  // A chunked body is complete at its last (zero-size) chunk.
  const lastChunk = () => /(^|\n)0+(;[^\r\n]*)?\r?\n/.test(latin1.decode(concat(parts)));
  const timer = setTimeout(() => {
    try {
      conn.close();
    } catch { /* closed */ }
  }, REFUSAL_BODY_MS);
  try {
    const buf = new Uint8Array(4096);
    while (have < want && !(chunked && lastChunk())) {
      const n = await conn.read(buf).catch(() => null);
      if (n === null) break;
      const part = buf.slice(0, Math.min(n, want - have));
      parts.push(part);
      have += part.length;
    }
  } finally {
    clearTimeout(timer);
  }
  let body = concat(parts);
  if (chunked) body = dechunk(body);
  return new TextDecoder().decode(body).trim();
}

function concat(parts: Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

/** Decodes a chunked body as far as it goes. */
function dechunk(data: Uint8Array): Uint8Array {
  const out: Uint8Array[] = [];
  let pos = 0;
  while (pos < data.length) {
    const lineEnd = data.indexOf(10, pos);
    if (lineEnd < 0) break;
    const size = parseInt(latin1.decode(data.subarray(pos, lineEnd)).trim().split(";")[0]!, 16);
    if (!Number.isFinite(size) || size <= 0) break;
    out.push(data.subarray(lineEnd + 1, Math.min(lineEnd + 1 + size, data.length)));
    pos = lineEnd + 1 + size + 2;
  }
  return concat(out.length ? out : [new Uint8Array(0)]);
}

async function openConnection(
  url: URL,
  options: ConnectWebSocketOptions,
  signal: AbortSignal,
): Promise<Deno.Conn> {
  const hostname = url.hostname.startsWith("[") ? url.hostname.slice(1, -1) : url.hostname;
  const secure = url.protocol === "wss:";
  const port = url.port ? Number(url.port) : secure ? 443 : 80;
  if (secure && options.cert !== undefined && options.key !== undefined) {
    // The only way to present a client certificate; Nagle stays on (see the module doc).
    const conn = await Deno.connectTls({
      hostname,
      port,
      caCerts: options.caCerts,
      cert: options.cert,
      key: options.key,
      alpnProtocols: ["http/1.1"],
    });
    return conn;
  }
  const tcp = await Deno.connect({ hostname, port, signal });
  tcp.setNoDelay(true);
  if (!secure) return tcp;
  try {
    return await Deno.startTls(tcp, {
      hostname,
      caCerts: options.caCerts,
      alpnProtocols: ["http/1.1"],
    });
  } catch (err) {
    try {
      tcp.close();
    } catch { /* consumed */ }
    throw err;
  }
}

/**
 * Opens a client WebSocket (`ws:` or `wss:`): connects (with `TCP_NODELAY`), sends the upgrade
 * request with `headers`, and checks the `101` answer.
 *
 * @throws {WebSocketHandshakeError} when the server answers anything but a valid `101`; for an
 *   HTTP refusal its message carries the status line and the response body (the server's reason).
 * @throws the signal's reason when `signal` aborts, a `TimeoutError` `DOMException` after
 *   `timeoutMs`, or the connection's error (refused, TLS, …).
 */
export async function connectWebSocket(
  url: string,
  options: ConnectWebSocketOptions = {},
): Promise<ClientWebSocket> {
  const target = new URL(url);
  if (target.protocol !== "ws:" && target.protocol !== "wss:") {
    throw new SyntaxError(`not a WebSocket URL: ${url}`);
  }
  if (target.hash) throw new SyntaxError(`a WebSocket URL has no fragment: ${url}`);
  const extra: [string, string][] = [];
  for (const [name, value] of Object.entries(options.headers ?? {})) {
    if (!TOKEN.test(name)) throw new TypeError(`invalid header name ${JSON.stringify(name)}`);
    if (/[\r\n\0]/.test(value)) throw new TypeError(`invalid value of the header ${name}`);
    if (RESERVED_HEADERS.has(name.toLowerCase())) {
      throw new TypeError(`the header ${name} is set by the WebSocket client`);
    }
    extra.push([name, value]);
  }

  const timeoutMs = options.timeoutMs ?? DEFAULT_OPEN_TIMEOUT_MS;
  const controller = new AbortController();
  const timer = setTimeout(() => {
    controller.abort(
      new DOMException(
        `WebSocket opening handshake timed out after ${timeoutMs} ms`,
        "TimeoutError",
      ),
    );
  }, timeoutMs);
  const onAbort = () => controller.abort(options.signal!.reason);
  if (options.signal?.aborted) onAbort();
  else options.signal?.addEventListener("abort", onAbort, { once: true });
  const signal = controller.signal;

  let conn: Deno.Conn | undefined;
  const closeConn = () => {
    try {
      conn?.close();
    } catch { /* closed */ }
  };
  signal.addEventListener("abort", closeConn, { once: true });
  const aborted = new Promise<never>((_, reject) => {
    const fail = () => reject(signal.reason);
    if (signal.aborted) fail();
    else signal.addEventListener("abort", fail, { once: true });
  });
  aborted.catch(() => {});
  try {
    const opening = openConnection(target, options, signal);
    // A connection that completes after an abort is closed right away.
    opening.then((c) => {
      if (!signal.aborted) return;
      try {
        c.close();
      } catch { /* closed */ }
    }, () => {});
    conn = await Promise.race([opening, aborted]).catch((err) => {
      throw signal.aborted ? signal.reason : err;
    });
    if (signal.aborted) throw signal.reason;

    const keyBytes = crypto.getRandomValues(new Uint8Array(16));
    const key = base64(keyBytes);
    const expected = acceptFor(key);
    const defaultPort = target.protocol === "wss:" ? "443" : "80";
    const host = target.port && target.port !== defaultPort
      ? `${target.hostname}:${target.port}`
      : target.hostname;
    let request = `GET ${target.pathname || "/"}${target.search} HTTP/1.1\r\n` +
      `Host: ${host}\r\n` +
      "Upgrade: websocket\r\n" +
      "Connection: Upgrade\r\n" +
      `Sec-WebSocket-Key: ${key}\r\n` +
      "Sec-WebSocket-Version: 13\r\n";
    for (const [name, value] of extra) request += `${name}: ${value}\r\n`;
    request += "\r\n";
    const requestBytes = encoder.encode(request);
    for (let off = 0; off < requestBytes.length;) {
      off += await conn.write(requestBytes.subarray(off));
    }

    const buf = new Uint8Array(MAX_RESPONSE_HEAD);
    let len = 0;
    let headEnd = -1;
    while (headEnd < 0) {
      if (len === buf.length) {
        throw new WebSocketHandshakeError(
          `the upgrade response head is larger than ${MAX_RESPONSE_HEAD} bytes`,
        );
      }
      let n: number | null;
      try {
        n = await conn.read(buf.subarray(len));
      } catch (err) {
        if (signal.aborted) throw signal.reason;
        throw err;
      }
      if (signal.aborted) throw signal.reason;
      if (n === null) {
        throw new WebSocketHandshakeError(
          len === 0
            ? "the server closed the connection without answering the upgrade"
            : "the server closed the connection in the middle of the upgrade response",
        );
      }
      headEnd = indexOfHeadEnd(buf, len - 3, len + n);
      len += n;
    }
    const head = parseHead(latin1.decode(buf.subarray(0, headEnd)));
    const rest = buf.subarray(headEnd + 4, len);
    if (head.status !== 101) {
      const body = await readRefusalBody(conn, head, rest);
      if (signal.aborted) throw signal.reason;
      throw new WebSocketHandshakeError(
        `the server refused the WebSocket upgrade: ${head.statusLine}${body ? `: ${body}` : ""}`,
        head.status,
        head.statusLine,
        body,
      );
    }
    const fail = (what: string) => {
      throw new WebSocketHandshakeError(
        `invalid upgrade response (${what})`,
        head.status,
        head.statusLine,
      );
    };
    if (head.headers.get("upgrade")?.toLowerCase() !== "websocket") fail("no Upgrade: websocket");
    if (
      !(head.headers.get("connection") ?? "").toLowerCase().split(",").some((t) =>
        t.trim() === "upgrade"
      )
    ) fail("no Connection: Upgrade");
    if (head.headers.get("sec-websocket-accept") !== await expected) {
      fail("wrong Sec-WebSocket-Accept");
    }
    if (head.headers.has("sec-websocket-extensions")) fail("an extension nobody asked for");
    const protocol = head.headers.get("sec-websocket-protocol");
    if (protocol !== undefined) {
      const offered = extra.find(([n]) => n.toLowerCase() === "sec-websocket-protocol")?.[1] ?? "";
      if (!offered.split(",").some((p) => p.trim() === protocol)) {
        fail("a subprotocol nobody asked for");
      }
    }
    const ws = new ClientWebSocket(
      conn,
      target.href,
      rest,
      options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES,
    );
    return ws;
  } catch (err) {
    closeConn();
    throw err;
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener("abort", onAbort);
    signal.removeEventListener("abort", closeConn);
  }
}
