/**
 * Byte sockets: the read/write/close shape shared by `Deno.Conn` and our adapter for node:net /
 * node:tls sockets, plus {@linkcode SocketWriter}, a per-connection write queue counted in bytes.
 *
 * @module
 */

import type { Duplex } from "node:stream";
import { SendAccounting } from "./packet_stream.ts";
import { realTimers, type Timers } from "@knp/core/timers";
import { giveBackMessageBuffer } from "./message_pool.ts";

/** What the proxy needs of a connected socket. `Deno.Conn` fits. */
export interface ByteSocket {
  /** Reads into `buffer`; `null` at end of stream. */
  read(buffer: Uint8Array): Promise<number | null>;
  /** Writes some of `data`; resolves with the count written. */
  write(data: Uint8Array): Promise<number>;
  /** Closes the socket. */
  close(): void;
}

/** The read switch of a node socket's native handle. */
interface ReadHandle {
  readStop(): unknown;
  readStart(): unknown;
}

/** Stops and starts a node socket's reads: on the TCP handle beneath TLS, else on the socket. */
function readSwitch(socket: Duplex): { paused: boolean; pause(): void; resume(): void } {
  const inner = (socket as Duplex & { _parent?: { _handle?: ReadHandle | null } | null })
    ._parent?._handle ?? undefined;
  const handle = inner && typeof inner.readStop === "function" ? inner : undefined;
  return {
    paused: false,
    pause() {
      this.paused = true;
      if (handle) handle.readStop();
      else socket.pause();
    },
    resume() {
      this.paused = false;
      if (handle) handle.readStart();
      else socket.resume();
    },
  };
}

/**
 * Adapts a node:net or node:tls socket (a Duplex of Buffers) to {@linkcode ByteSocket}.
 *
 * Reading stops while `maxBuffered` bytes wait unread. Under Deno 2.9, pausing a node:tls socket
 * stops its `data` events but not its reads from the network: a peer that keeps sending grows the
 * process without bound (measured: 24 GB). Pausing the TCP socket beneath (`_parent`) stops the
 * reads for good (`resume()` does not restart them), so reading is stopped and restarted on that
 * socket's handle (`readStop`/`readStart`), which bounds what a stalled peer can queue to the
 * kernel's buffers and keeps every byte (checked: 20 MiB through 320 stops, byte-exact).
 *
 * A zero-byte write resolves at once without touching the socket: node:tls under Deno fails it
 * with EPERM on a healthy connection, so it cannot serve as a liveness probe here.
 */
export function fromNodeSocket(socket: Duplex, maxBuffered = 256 * 1024): ByteSocket {
  const reading = readSwitch(socket);
  const chunks: Uint8Array[] = [];
  let buffered = 0;
  let ended = false;
  let failure: Error | undefined;
  let wake: (() => void) | undefined;
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  socket.on("data", (chunk: Uint8Array) => {
    chunks.push(chunk);
    buffered += chunk.byteLength;
    if (buffered > maxBuffered) reading.pause();
    notify();
  });
  socket.on("end", () => {
    ended = true;
    notify();
  });
  socket.on("close", () => {
    ended = true;
    notify();
  });
  socket.on("error", (err: Error) => {
    failure = err;
    notify();
  });
  return {
    async read(buffer) {
      while (chunks.length === 0) {
        if (failure) throw failure;
        if (ended) return null;
        await new Promise<void>((resolve) => (wake = resolve));
      }
      const head = chunks[0]!;
      const n = Math.min(head.byteLength, buffer.byteLength);
      buffer.set(head.subarray(0, n));
      if (n === head.byteLength) chunks.shift();
      else chunks[0] = head.subarray(n);
      buffered -= n;
      if (buffered <= maxBuffered / 2 && reading.paused) reading.resume();
      return n;
    },
    write(data) {
      return new Promise((resolve, reject) => {
        if (failure) return reject(failure);
        if (data.byteLength === 0) return resolve(0);
        socket.write(data, (err?: Error | null) => err ? reject(err) : resolve(data.byteLength));
      });
    },
    close() {
      socket.destroy();
    },
  };
}

/**
 * A socket's write queue: never blocks the caller, counts queued bytes, writes in order (partial
 * writes handled), reports failure once.
 */
export class SocketWriter {
  #socket: ByteSocket;
  #queue: Uint8Array[] = [];
  #callbacks: ((() => void) | undefined)[] = [];
  #acct: SendAccounting;
  #writing = false;
  /** Waiters of `flushed` (made on first use: an idle connection's writer holds none). */
  #idle: (() => void)[] | undefined;
  /** Their progress callbacks (made on first use, as `#idle`). */
  #progress: Set<() => void> | undefined;
  #onError: (err: unknown) => void;
  #failed = false;
  #timers: Timers;

  /** Writes to `socket`; `onError` gets the first write error; `highWater` bytes may be queued before `write` reports backpressure. */
  constructor(
    socket: ByteSocket,
    onError: (err: unknown) => void,
    highWater = 1 << 20,
    timers: Timers = realTimers,
  ) {
    this.#socket = socket;
    this.#onError = onError;
    this.#acct = new SendAccounting(highWater);
    this.#timers = timers;
  }

  /** True while bytes are queued or being written. */
  get writing(): boolean {
    return this.#writing;
  }

  /** Drops whatever is still queued (the connection is closing); callbacks do not run. */
  discard(): void {
    this.#queue = [];
    this.#callbacks = [];
    this.#acct.flush();
  }

  /** Bytes queued and not yet written. */
  get bufferedBytes(): number {
    return this.#acct.buffered;
  }

  /**
   * Queues bytes; returns false once over the high-water mark. `onWritten` runs once written.
   * Bytes in a buffer lent by transport/message_pool.ts (a packet's payload) are this writer's
   * share of it: it gives the share back once they are written.
   */
  write(bytes: Uint8Array, onWritten?: () => void): boolean {
    if (this.#failed) return false;
    if (bytes.byteLength === 0) {
      giveBackMessageBuffer(bytes);
      onWritten?.();
      return this.#acct.buffered <= this.#acct.highWater;
    }
    this.#queue.push(bytes);
    this.#callbacks.push(onWritten);
    const ok = this.#acct.add(bytes.byteLength);
    if (!this.#writing) this.#pump();
    return ok;
  }

  /** Runs `callback` once the queue drains to its low-water mark. */
  onDrain(callback: () => void): void {
    this.#acct.onDrain(callback);
  }

  /**
   * Resolves once everything queued is written (or writing failed), or when no byte could be
   * written for `idleMs`: a slow reader that keeps reading gets all of it; a stuck one does not
   * hold the connection forever.
   */
  flushed(idleMs: number): Promise<void> {
    if (!this.#writing || this.#failed) return Promise.resolve();
    const timers = this.#timers;
    const progressSet = this.#progress ??= new Set();
    const idle = this.#idle ??= [];
    return new Promise((resolve) => {
      const finish = () => {
        timers.clearTimeout(timer);
        progressSet.delete(progress);
        resolve();
      };
      const progress = () => {
        timers.clearTimeout(timer);
        timer = timers.setTimeout(finish, idleMs);
      };
      let timer = timers.setTimeout(finish, idleMs);
      progressSet.add(progress);
      idle.push(finish);
    });
  }

  async #pump(): Promise<void> {
    this.#writing = true;
    try {
      while (this.#queue.length > 0) {
        let chunk = this.#queue[0]!;
        while (chunk.byteLength > 0) {
          chunk = chunk.subarray(await this.#socket.write(chunk));
          if (this.#progress !== undefined) { for (const p of this.#progress) p(); }
        }
        const done = this.#queue.shift();
        if (done === undefined) break; // discarded while writing
        this.#acct.remove(done.byteLength);
        giveBackMessageBuffer(done);
        this.#callbacks.shift()?.();
      }
    } catch (err) {
      this.#failed = true;
      this.#queue = [];
      this.#callbacks = [];
      this.#acct.flush();
      this.#onError(err);
    }
    this.#writing = false;
    const idle = this.#idle;
    this.#idle = undefined;
    if (idle !== undefined) { for (const f of idle) f(); }
  }
}

/** Below this read size a full read grows the size fourfold, above it twofold. */
const MESSAGE_READ_SIZE = 16 * 1024;

/**
 * Read sizes that follow the traffic: small while a connection is idle or chatty (an idle
 * connection's pending read then holds only `min` bytes), growing while reads come back full (4×
 * below {@linkcode MESSAGE_READ_SIZE}, 2× above it) up to `max` for bulk transfers, and halving
 * after a read of under an eighth. Each read gets a fresh buffer, so the bytes read can be handed
 * on (as DATA) without a copy.
 *
 * Fourfold below 16 KiB: a connection whose messages are a few KB (a webhook's AdmissionReview, a
 * keep-alive HTTP exchange) settles on a size that takes each message in one read. Doubling
 * oscillated there (2 KiB full, 4 KiB with a short remainder read, back to 2 KiB), so every such
 * message crossed the tunnel as two DATA packets: measured through a real kube-apiserver, keep-
 * alive webhook calls took 0.15–0.4 ms longer at p50. Twofold above: growing fourfold all the way
 * (64 KiB straight to 256 KiB) raised the server's peak RSS from ~216 to ~285 MB and the agent's
 * longest /readyz stall from 59–91 to 330–380 ms under 100 downloads (not explained; measured in
 * two runs each).
 */
export class AdaptiveReadSize {
  /** Smallest read size, in bytes. */
  readonly min: number;
  /** Largest read size, in bytes. */
  readonly max: number;
  #size: number;

  /** Starts at `min` bytes and grows up to `max`. */
  constructor(min = 2048, max = 256 * 1024) {
    this.min = min;
    this.max = max;
    this.#size = min;
  }

  /** Current read size. */
  get size(): number {
    return this.#size;
  }

  /** A fresh buffer for the next read, at most `limit` bytes. */
  buffer(limit = Infinity): Uint8Array {
    return new Uint8Array(Math.max(1, Math.min(this.#size, limit)));
  }

  /** Tells how much of a `capacity`-byte buffer the last read filled. */
  filled(n: number, capacity: number): void {
    if (n >= capacity && capacity >= this.#size) {
      this.#size = Math.min(this.max, this.#size * (this.#size < MESSAGE_READ_SIZE ? 4 : 2));
    } else if (n < this.#size / 8) this.#size = Math.max(this.min, this.#size / 2);
  }
}

/**
 * A bounded free list of equally sized buffers, for read buffers whose bytes are copied out
 * later (a packet's payload, encoded into a link message): `give` a buffer back once its bytes
 * are no longer referenced. Large buffers allocated per read are what drives V8's old-generation
 * collections on a busy link (their backing stores count as external memory).
 */
export class BufferPool {
  /** Size of every buffer of the pool. */
  readonly size: number;
  #free: Uint8Array<ArrayBuffer>[] = [];
  #max: number;

  /** Buffers of `size` bytes; at most `max` are kept while unused. */
  constructor(size: number, max: number) {
    this.size = size;
    this.#max = max;
  }

  /** A free buffer of the pool, or a new one. */
  take(): Uint8Array<ArrayBuffer> {
    return this.#free.pop() ?? new Uint8Array(this.size);
  }

  /** Returns a buffer taken from this pool; its bytes must no longer be referenced. */
  give(buffer: Uint8Array<ArrayBuffer>): void {
    if (buffer.byteLength === this.size && this.#free.length < this.#max) this.#free.push(buffer);
  }
}
