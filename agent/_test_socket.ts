/**
 * Test doubles for the agent: an in-memory {@linkcode EndpointSocket} whose far end the test
 * drives, and a {@linkcode Dialer} whose dials the test can answer. No sockets, no timers.
 *
 * @module
 */

import type { Dialer, EndpointSocket } from "./dialer.ts";

/** How the endpoint side takes writes. */
export type WriteMode =
  /** Every write completes at once. */
  | "instant"
  /** Writes wait until {@linkcode FakeEndpoint.releaseWrites} (or stay pending). */
  | "gated"
  /** Writes never complete (a peer that stopped reading); close() fails them. */
  | "stalled";

/**
 * One proxied connection's socket. The agent uses `read`/`write`/`close`; the test plays the
 * remote endpoint with `push`, `end`, `fail` and inspects `written`, `closed` and `log`.
 */
export class FakeEndpoint implements EndpointSocket {
  /** What happened, in order: "write:<n>" per completed write, "close". */
  readonly log: string[] = [];
  /** Bytes the agent wrote, one entry per completed write. */
  readonly writes: Uint8Array[] = [];
  writeMode: WriteMode;
  /** Largest write accepted at once (to exercise partial writes). */
  maxWrite: number;
  #closed = false;
  #eof = false;
  #readError: Error | undefined;
  #incoming: Uint8Array[] = [];
  #reader: ((n: number | null) => void) | undefined;
  #readerBuffer: Uint8Array | undefined;
  #readerFail: ((err: Error) => void) | undefined;
  #pendingWrites: { data: Uint8Array; resolve: (n: number) => void; reject: (e: Error) => void }[] =
    [];

  constructor(options: { writeMode?: WriteMode; maxWrite?: number } = {}) {
    this.writeMode = options.writeMode ?? "instant";
    this.maxWrite = options.maxWrite ?? Infinity;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Everything written so far, concatenated. */
  get written(): Uint8Array {
    const total = this.writes.reduce((n, w) => n + w.byteLength, 0);
    const out = new Uint8Array(total);
    let off = 0;
    for (const w of this.writes) {
      out.set(w, off);
      off += w.byteLength;
    }
    return out;
  }

  /** Bytes the remote endpoint sent that the agent has not read yet. */
  get unread(): number {
    return this.#incoming.reduce((sum, chunk) => sum + chunk.byteLength, 0);
  }

  /** Writes waiting in "gated" or "stalled" mode. */
  get pendingWrites(): number {
    return this.#pendingWrites.length;
  }

  // ------------------------------------------------------------ agent side

  read(buffer: Uint8Array): Promise<number | null> {
    if (this.#reader) return Promise.reject(new Error("concurrent read"));
    if (this.#incoming.length > 0) return Promise.resolve(this.#take(buffer));
    if (this.#readError) return Promise.reject(this.#readError);
    if (this.#eof || this.#closed) return Promise.resolve(null);
    return new Promise((resolve, reject) => {
      this.#reader = resolve;
      this.#readerFail = reject;
      this.#readerBuffer = buffer;
    });
  }

  write(data: Uint8Array): Promise<number> {
    if (this.#closed) return Promise.reject(new Error("socket closed"));
    const n = Math.min(data.byteLength, this.maxWrite);
    if (this.writeMode === "instant") {
      this.#complete(data.slice(0, n));
      return Promise.resolve(n);
    }
    return new Promise((resolve, reject) => {
      this.#pendingWrites.push({ data: data.slice(0, n), resolve, reject });
    });
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.log.push("close");
    this.#wakeReader(null);
    const pending = this.#pendingWrites;
    this.#pendingWrites = [];
    for (const w of pending) w.reject(new Error("socket closed"));
  }

  // ----------------------------------------------------------- remote side

  /** The remote endpoint sends bytes to the agent. */
  push(data: Uint8Array): void {
    this.#incoming.push(data);
    if (this.#reader) this.#wakeReader(this.#take(this.#readerBuffer!));
  }

  /** The remote endpoint closes its side: reads return EOF once `push`ed bytes are taken. */
  end(): void {
    this.#eof = true;
    if (this.#reader && this.#incoming.length === 0) this.#wakeReader(null);
  }

  /** Reads fail with `err` (a reset). */
  fail(err: Error): void {
    this.#readError = err;
    const fail = this.#readerFail;
    this.#reader = this.#readerFail = this.#readerBuffer = undefined;
    fail?.(err);
  }

  /** Completes every waiting write ("gated" mode) and, with `mode`, switches mode. */
  releaseWrites(mode: WriteMode = this.writeMode): void {
    this.writeMode = mode;
    const pending = this.#pendingWrites;
    this.#pendingWrites = [];
    for (const w of pending) {
      this.#complete(w.data);
      w.resolve(w.data.byteLength);
    }
  }

  #complete(data: Uint8Array): void {
    this.writes.push(data);
    this.log.push(`write:${data.byteLength}`);
  }

  #take(buffer: Uint8Array): number {
    const head = this.#incoming[0]!;
    const n = Math.min(head.byteLength, buffer.byteLength);
    buffer.set(head.subarray(0, n));
    if (n === head.byteLength) this.#incoming.shift();
    else this.#incoming[0] = head.subarray(n);
    return n;
  }

  #wakeReader(n: number | null): void {
    const wake = this.#reader;
    this.#reader = this.#readerFail = this.#readerBuffer = undefined;
    wake?.(n);
  }
}

/** One dial the fake dialer received. */
export interface DialCall {
  protocol: string;
  address: string;
  signal?: AbortSignal | undefined;
  timeoutMs: number;
  /** Answers the dial with a socket. */
  resolve(socket: FakeEndpoint): void;
  /** Fails the dial. */
  reject(error: unknown): void;
}

/**
 * A dialer that records each dial. With `auto`, dials succeed at once with a new
 * {@linkcode FakeEndpoint} made by `auto()`; otherwise the test answers them via `calls`.
 */
export function fakeDialer(auto?: (address: string) => FakeEndpoint | Error): {
  dialer: Dialer;
  calls: DialCall[];
  sockets: FakeEndpoint[];
} {
  const calls: DialCall[] = [];
  const sockets: FakeEndpoint[] = [];
  const dialer: Dialer = (protocol, address, { timeoutMs, signal }) => {
    const { promise, resolve, reject } = Promise.withResolvers<EndpointSocket>();
    calls.push({
      protocol,
      address,
      signal,
      timeoutMs,
      resolve: (socket) => {
        sockets.push(socket);
        resolve(socket);
      },
      reject,
    });
    if (auto) {
      const result = auto(address);
      if (result instanceof Error) reject(result);
      else {
        sockets.push(result);
        resolve(result);
      }
    }
    return promise;
  };
  return { dialer, calls, sockets };
}
