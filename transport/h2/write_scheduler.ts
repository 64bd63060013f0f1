/**
 * {@linkcode WriteScheduler}: everything an HTTP/2 connection sends goes out through one write
 * at a time, and whatever queued while a write was in flight is coalesced into the next one:
 * control frames first (SETTINGS and PING acks, WINDOW_UPDATE, HEADERS, RST_STREAM, GOAWAY), then
 * DATA frames taken round robin from the streams with data — at most one frame per stream per
 * turn, within the peer's connection and stream windows — so a bulk stream cannot keep a small
 * message waiting for more than one turn. A stream's trailers follow its last DATA frame. PING
 * acks go first in the next write, which they wait for at most {@linkcode ACK_DELAY_MS}.
 *
 * @module
 */

import { realTimers, type Timers } from "@knp/core/timers";
import type { ByteSocket } from "../byte_socket.ts";
import { DEFAULT_MAX_FRAME_SIZE, DEFAULT_WINDOW, FRAME_HEADER_BYTES, FrameType } from "./frame.ts";
import { writeFrameHeader } from "./frame.ts";

/** A stream with message bytes to send. */
export interface DataSource {
  /** Stream id. */
  readonly id: number;
  /** The peer's flow-control window of the stream, in bytes (may be negative). */
  sendWindow: number;
  /**
   * Owned by the {@linkcode WriteScheduler}: true while the stream is in its round robin. (A
   * flag rather than a set of the scheduler's: a stream joins and leaves once per message, and
   * V8 chains every replaced hash table of a set to its successor, which lets a chatty
   * connection's garbage reach the old generation.)
   */
  inRing: boolean;
  /** Message bytes queued, not counting windows. */
  pendingBytes(): number;
  /**
   * Moves up to `limit` queued bytes into `pieces` (views, in order) and pushes into `done` a
   * callback for each message wholly taken. Returns the bytes taken.
   */
  take(limit: number, pieces: Uint8Array[], done: (() => void)[]): number;
  /** Frames due once the data is out (trailers, RST_STREAM), taken once; else undefined. */
  takeTail(): Uint8Array | undefined;
}

/** Writes up to this size get a buffer of their own (no shared buffer for chatty traffic). */
const SMALL_WRITE = 32 * 1024;

/**
 * How long a PING ack may wait for another write to ride on. gRPC clients ping on every DATA they
 * receive while no ping is out (BDP estimation): an ack written alone costs both sides a syscall
 * and a wake-up, and one due as the client hangs up hits a closed socket.
 */
export const ACK_DELAY_MS = 2;

/**
 * Bulk write buffers not in use, shared by every connection of the process (at most
 * {@linkcode SCRATCH_POOL_MAX}): a connection holds one only while it writes.
 */
const SCRATCH_POOL: Uint8Array<ArrayBuffer>[] = [];
const SCRATCH_POOL_MAX = 4;
const EMPTY = new Uint8Array(0);

/** Default upper bound of one coalesced write, in bytes. */
export const DEFAULT_BATCH_BYTES = 256 * 1024;

/** Coalesces an HTTP/2 connection's frames into few, large writes. */
export class WriteScheduler {
  #socket: ByteSocket;
  #onError: (err: unknown) => void;
  #batchBytes: number;
  #control: Uint8Array[] = [];
  #controlBytes = 0;
  #acks: Uint8Array[] = [];
  #ackBytes = 0;
  #ackTimer: number | undefined;
  /** Set when the acks may no longer wait for another write. */
  #acksDue = false;
  #timers: Timers;
  #ring: DataSource[] = [];
  #next = 0;
  #writing = false;
  #scheduled = false;
  #failed = false;
  #idle: (() => void)[] = [];
  #scratch = EMPTY;
  /** The peer's connection-level flow-control window, in bytes. */
  connWindow = DEFAULT_WINDOW;
  /** The peer's SETTINGS_MAX_FRAME_SIZE. */
  maxFrameSize = DEFAULT_MAX_FRAME_SIZE;

  /** Writes to `socket`; `onError` gets the first write failure. */
  constructor(
    socket: ByteSocket,
    onError: (err: unknown) => void,
    batchBytes = DEFAULT_BATCH_BYTES,
    timers: Timers = realTimers,
  ) {
    this.#timers = timers;
    this.#socket = socket;
    this.#onError = onError;
    this.#batchBytes = batchBytes;
  }

  /** Control bytes queued and not yet written (a peer that never reads grows this). */
  get controlBytes(): number {
    return this.#controlBytes + this.#ackBytes;
  }

  /** True when nothing is queued or being written. */
  get idle(): boolean {
    return !this.#writing && this.#control.length === 0 && this.#ring.length === 0 &&
      this.#acks.length === 0;
  }

  /**
   * Queues a PING ack: it goes out first in the next write, at the latest {@linkcode
   * ACK_DELAY_MS} from now.
   */
  ack(frame: Uint8Array): void {
    if (this.#failed) return;
    this.#acks.push(frame);
    this.#ackBytes += frame.length;
    if (this.#ackTimer !== undefined) return;
    this.#ackTimer = this.#timers.setTimeout(() => {
      this.#ackTimer = undefined;
      if (this.#acks.length === 0) return;
      this.#acksDue = true;
      this.schedule();
    }, ACK_DELAY_MS);
  }

  /** Drops the ack timer (the connection is over). */
  close(): void {
    if (this.#ackTimer !== undefined) this.#timers.clearTimeout(this.#ackTimer);
    this.#ackTimer = undefined;
  }

  /** Queues a ready-made frame (or frames); `urgent` puts it before the others. */
  control(frames: Uint8Array, urgent = false): void {
    if (this.#failed) return;
    if (urgent) this.#control.unshift(frames);
    else this.#control.push(frames);
    this.#controlBytes += frames.length;
    this.schedule();
  }

  /** Puts a stream in the round robin (it has data or a tail to send). */
  activate(source: DataSource): void {
    if (!source.inRing) {
      source.inRing = true;
      this.#ring.push(source);
    }
    this.schedule();
  }

  /** Drops a stream from the round robin (it was reset). */
  deactivate(source: DataSource): void {
    if (!source.inRing) return;
    source.inRing = false;
    const at = this.#ring.indexOf(source);
    this.#ring.splice(at, 1);
    if (at < this.#next) this.#next--;
  }

  /** Arranges a write once the current one (if any) is done. */
  schedule(): void {
    if (this.#scheduled || this.#writing || this.#failed) return;
    this.#scheduled = true;
    queueMicrotask(() => {
      this.#scheduled = false;
      if (!this.#writing) void this.#run();
    });
  }

  /** Resolves once everything queued has been written (or writing failed). */
  flushed(): Promise<void> {
    if (this.idle || this.#failed) return Promise.resolve();
    this.#acksDue = true;
    this.schedule();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  async #run(): Promise<void> {
    this.#writing = true;
    try {
      for (;;) {
        const done: (() => void)[] = [];
        const batch = this.#batch(done);
        if (!batch) break;
        let rest = batch;
        while (rest.length > 0) rest = rest.subarray(await this.#socket.write(rest));
        for (const d of done) d();
      }
    } catch (err) {
      this.#failed = true;
      this.#control = [];
      this.#acks = [];
      this.#ackBytes = 0;
      for (const source of this.#ring) source.inRing = false;
      this.#ring = [];
      this.#onError(err);
    }
    this.#writing = false;
    // An idle connection keeps no write buffer (thousands of idle tunnels are common): it goes back
    // to the process-wide pool, so bursts of bulk writes do not allocate one each.
    if (this.#scratch.length > 0 && SCRATCH_POOL.length < SCRATCH_POOL_MAX) {
      SCRATCH_POOL.push(this.#scratch);
    }
    this.#scratch = EMPTY;
    const idle = this.#idle;
    this.#idle = [];
    for (const f of idle) f();
  }

  /** Builds the next write, or undefined when nothing can be sent. */
  #batch(done: (() => void)[]): Uint8Array | undefined {
    let pieces: Uint8Array[] = this.#control;
    let size = this.#controlBytes;
    this.#control = [];
    this.#controlBytes = 0;
    size += this.#takeData(pieces, done, this.#batchBytes - size);
    // Acks ride on another write, or go alone once due (their timer is armed meanwhile).
    if (this.#acks.length > 0 && (pieces.length > 0 || this.#acksDue)) {
      pieces = this.#acks.concat(pieces);
      size += this.#ackBytes;
      this.#acks = [];
      this.#ackBytes = 0;
      this.#acksDue = false;
    }
    if (pieces.length === 0) return undefined;
    if (pieces.length === 1) return pieces[0]!;
    const out = this.#buffer(size);
    let at = 0;
    for (const p of pieces) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }

  /**
   * A buffer for a write of `size` bytes. Bulk writes share one buffer while the scheduler is busy
   * (the socket is done with it once its write resolved); small ones get their own.
   */
  #buffer(size: number): Uint8Array {
    if (size <= SMALL_WRITE) return new Uint8Array(size);
    if (this.#scratch.length < size) {
      const pooled = SCRATCH_POOL.pop();
      this.#scratch = pooled && pooled.length >= size
        ? pooled
        : new Uint8Array(Math.max(size, this.#batchBytes));
    }
    return this.#scratch.subarray(0, size);
  }

  /** Takes DATA frames round robin into `pieces`; returns the bytes added. */
  #takeData(pieces: Uint8Array[], done: (() => void)[], budget: number): number {
    let added = 0;
    let progress = true;
    while (progress && this.#ring.length > 0) {
      progress = false;
      for (let turns = this.#ring.length; turns > 0 && this.#ring.length > 0; turns--) {
        if (this.#next >= this.#ring.length) this.#next = 0;
        const source = this.#ring[this.#next]!;
        const bytes = this.#frameFrom(source, pieces, done, budget - added);
        if (bytes > 0) progress = true;
        added += bytes;
        if (source.pendingBytes() === 0) {
          const tail = source.takeTail();
          if (tail) {
            pieces.push(tail);
            added += tail.length;
            progress = true;
          }
          this.deactivate(source);
        } else this.#next++;
        if (added >= budget) return added;
      }
    }
    return added;
  }

  /** One DATA frame of `source`, as much as windows, frame size and budget allow. */
  #frameFrom(
    source: DataSource,
    pieces: Uint8Array[],
    done: (() => void)[],
    budget: number,
  ): number {
    const limit = Math.min(
      source.pendingBytes(),
      source.sendWindow,
      this.connWindow,
      this.maxFrameSize,
      budget - FRAME_HEADER_BYTES,
    );
    if (limit <= 0) return 0;
    const header = new Uint8Array(FRAME_HEADER_BYTES);
    pieces.push(header);
    const n = source.take(limit, pieces, done);
    writeFrameHeader(header, 0, n, FrameType.DATA, 0, source.id);
    source.sendWindow -= n;
    this.connWindow -= n;
    return FRAME_HEADER_BYTES + n;
  }
}
