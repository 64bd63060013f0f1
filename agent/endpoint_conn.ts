/**
 * `EndpointConn`: the agent's owner state machine for one proxied TCP connection.
 *
 * Endpoint → server: a read loop sends each read as one DATA packet on the shared server stream,
 * waiting only for that stream's own backpressure (the shared link's capacity). With flow control
 * a connection is bounded by its window, and a backed-up link holds at most one read of each
 * connection (see `#linkRoom`), so connections wake one by one as the link's fair queue reaches
 * them instead of all at once when it drains.
 * Server → endpoint: DATA is queued here (bounded in bytes) and written by this connection's own
 * write loop, so a slow endpoint never blocks the shared stream's receive loop; see SinkGuard.
 *
 * One teardown path: stop reading, flush queued writes when the server asked to close, close the
 * socket, send CLOSE_RSP (after every DATA of this connection), leave the table.
 *
 * @module
 */

import { closeResponse, dataPacket, knpWindow } from "@knp/proto";
import { type GuardLimits, SharedPause, SinkGuard } from "@knp/core/backpressure";
import { errorMessage } from "@knp/core/errors";
import type { Logger } from "@knp/core/log";
import type { PacketStream } from "@knp/transport/packet_stream";
import { AdaptiveReadSize, BufferPool, SocketWriter } from "@knp/transport/byte_socket";
import type { Timers } from "@knp/core/timers";
import type { EndpointSocket } from "./dialer.ts";

/** With flow control, the link backlog (in windows) above which endpoints stop being read. */
const FLOW_LINK_CAP_WINDOWS = 64;
/**
 * With flow control, the link backlog (in windows) above which a connection reads again only
 * once the link has taken all it read before, and reads at most {@linkcode SHARED_READ_MAX}.
 */
const FLOW_LINK_SHARE_WINDOWS = 4;
/** Largest read while the link backlog is over the share mark. */
const SHARED_READ_MAX = 64 * 1024;
/** Largest read from the endpoint (one DATA packet at most this large). */
export const READ_BUFFER_SIZE = 256 * 1024;
/**
 * Large reads go into buffers of this agent-wide pool, given back once the link has taken the
 * DATA packet (`onSent`: every PacketStream has encoded the payload into its own buffer by then).
 * 16 × 256 KiB bounds what it holds.
 */
const readPool = new BufferPool(READ_BUFFER_SIZE, 16);
/** Reads of at least this size use a pooled buffer. */
const POOLED_READ_MIN = 32 * 1024;
/** Read size of an idle or chatty connection (what its pending read holds). */
export const READ_SIZE_MIN = 1024;
/** How long a server-requested close waits without progress for queued writes to be written. */
export const CLOSE_FLUSH_MS = 5_000;

/** Why a connection ends. */
export type CloseCause =
  | { by: "server" }
  | { by: "endpoint"; error?: string | undefined }
  | { by: "overflow" }
  | { by: "stream-gone" };

/** Options of {@linkcode EndpointConn}. */
export interface EndpointConnOptions {
  connectId: bigint;
  socket: EndpointSocket;
  stream: PacketStream;
  shared: SharedPause;
  guard: GuardLimits;
  timers: Timers;
  logger: Logger;
  /** Called once when the connection has left the world. */
  onClosed: (conn: EndpointConn) => void;
  /**
   * Per-connection flow control negotiated with a knp server: `sendWindow` bytes may be sent
   * before the server grants more; `recvWindow` is what this side grants.
   */
  flow?: { sendWindow: number; recvWindow: number } | undefined;
}

/** One proxied connection on the agent. */
export class EndpointConn {
  readonly connectId: bigint;
  #socket: EndpointSocket;
  #stream: PacketStream;
  #timers: Timers;
  #log: Logger;
  #onClosed: (conn: EndpointConn) => void;
  #writer: SocketWriter;
  #guard: SinkGuard;
  /** Called when the write loop stops with nothing left to write (or fails). */
  #closing = false;
  #flow: { sendWindow: number; recvWindow: number } | undefined;
  #credit = 0;
  #creditWaiter: (() => void) | undefined;
  #ungranted = 0;
  /** DATA bytes of this connection handed to the link and not yet taken by it. */
  #linkQueued = 0;
  /** Waits for `#linkQueued` to fall to zero (see {@linkcode FLOW_LINK_SHARE_WINDOWS}). */
  #linkWaiter: (() => void) | undefined;
  /** Made on first use of `done` (an idle connection nobody awaits holds no promise). */
  #done: PromiseWithResolvers<void> | undefined;
  #closed = false;

  constructor(options: EndpointConnOptions) {
    this.connectId = options.connectId;
    this.#socket = options.socket;
    this.#stream = options.stream;
    this.#timers = options.timers;
    // Not logger.with(): no per-connection logger object for the (many) idle connections.
    this.#log = options.logger;
    this.#onClosed = options.onClosed;
    this.#flow = options.flow;
    this.#writer = new SocketWriter(
      options.socket,
      (err) => {
        if (!this.#closing) this.close({ by: "endpoint", error: errorMessage(err) });
      },
      1 << 20,
      options.timers,
    );
    this.#credit = options.flow?.sendWindow ?? 0;
    const guard = options.flow ? flowGuard(options.guard, options.flow) : options.guard;
    this.#guard = new SinkGuard(this, options.shared, guard, options.timers);
  }

  /** Resolves when the teardown has finished. */
  get done(): Promise<void> {
    if (this.#done === undefined) {
      this.#done = Promise.withResolvers<void>();
      if (this.#closed) this.#done.resolve();
    }
    return this.#done.promise;
  }

  /** Bytes queued toward the endpoint. */
  get bufferedBytes(): number {
    return this.#writer.bufferedBytes;
  }

  get closing(): boolean {
    return this.#closing;
  }

  onDrain(callback: () => void): void {
    this.#writer.onDrain(callback);
  }

  /** Flow control: the server passed `bytes` more on; reading may go on. */
  addCredit(bytes: number): void {
    if (!this.#flow) return;
    this.#credit += bytes;
    if (this.#credit > 0) {
      const wake = this.#creditWaiter;
      this.#creditWaiter = undefined;
      wake?.();
    }
  }

  /** Starts the read loop (after DIAL_RSP went out). */
  start(): void {
    this.#readLoop();
  }

  /** Queues DATA from the server. Never blocks. */
  write(bytes: Uint8Array): void {
    if (this.#closing || bytes.byteLength === 0) return;
    const size = bytes.byteLength;
    const underMark = this.#writer.write(bytes, () => this.#granted(size));
    if (this.#guard.afterSend(underMark) === "overflow") {
      this.#log.warn("endpoint is not reading; connection reset alone", {
        connectID: this.connectId,
        bufferedBytes: this.bufferedBytes,
      });
      this.close({ by: "overflow" });
    }
  }

  async #readLoop(): Promise<void> {
    const sizes = new AdaptiveReadSize(READ_SIZE_MIN, READ_BUFFER_SIZE);
    let error: string | undefined;
    try {
      while (!this.#closing) {
        if (!await this.#linkRoom()) break;
        if (this.#flow && this.#credit <= 0) {
          await new Promise<void>((resolve) => (this.#creditWaiter = resolve));
          if (this.#closing || this.#stream.closed) break;
        }
        // With flow control, never read more than the server has room for.
        const wanted = this.#linkShared() ? Math.min(sizes.size, SHARED_READ_MAX) : sizes.size;
        const size = Math.max(1, Math.min(wanted, this.#flow ? this.#credit : Infinity));
        // The DATA packet takes the read's bytes without a copy; a pooled buffer comes back
        // once the link has encoded the packet.
        const pooled = size >= POOLED_READ_MIN ? readPool.take() : undefined;
        const buffer = pooled ? pooled.subarray(0, size) : new Uint8Array(size);
        const n = await this.#socket.read(buffer);
        if (n === null || this.#closing) {
          if (pooled) readPool.give(pooled);
          break;
        }
        sizes.filled(n, buffer.byteLength);
        this.#credit -= n;
        this.#linkQueued += n;
        this.#stream.send(dataPacket(this.connectId, buffer.subarray(0, n)), () => {
          if (pooled) readPool.give(pooled);
          this.#linkTook(n);
        });
      }
    } catch (err) {
      if (!this.#closing) error = errorMessage(err);
    }
    if (!this.#closing) this.close({ by: "endpoint", error });
  }

  /**
   * Waits until the shared link lets this connection read its endpoint; false when the connection
   * or the link ended meanwhile. Over the cap ({@linkcode #streamUnderMark}) everyone waits for the
   * link to drain. Over the share mark, a connection waits only for the link to take what it read
   * before: each connection then has at most one read queued on the link, so the backlog stays
   * near the mark, a connection with nothing queued (a small reply) reads at once, and the
   * connections that wait wake one at a time as the fair queue reaches them, not all together.
   */
  async #linkRoom(): Promise<boolean> {
    if (this.#stream.bufferedBytes > 0 && !this.#streamUnderMark()) {
      await new Promise<void>((resolve) => this.#stream.onDrain(resolve));
    } else if (this.#linkQueued > 0 && this.#linkShared()) {
      await new Promise<void>((resolve) => (this.#linkWaiter = resolve));
    } else return true;
    return !this.#closing && !this.#stream.closed;
  }

  /** With flow control, whether the link's backlog is over the share mark. */
  #linkShared(): boolean {
    const flow = this.#flow;
    return flow !== undefined &&
      this.#stream.bufferedBytes > FLOW_LINK_SHARE_WINDOWS * flow.sendWindow;
  }

  /** The link took `bytes` of this connection's DATA. */
  #linkTook(bytes: number): void {
    this.#linkQueued -= bytes;
    if (this.#linkQueued > 0) return;
    const wake = this.#linkWaiter;
    this.#linkWaiter = undefined;
    wake?.();
  }

  /**
   * Whether the shared link's backlog lets this connection read its endpoint. Without flow control
   * the link is the only bound: 1 MiB. With it, each connection is bounded by its window and the
   * link sends connections fairly, so waiting on the shared backlog would only put a small reply
   * behind everyone's bulk data; the mark is then a safety cap of 64 windows for the whole link.
   */
  #streamUnderMark(): boolean {
    const mark = this.#flow ? FLOW_LINK_CAP_WINDOWS * this.#flow.sendWindow : 1 << 20;
    return this.#stream.bufferedBytes <= mark;
  }

  /** Flow control: grant written bytes back to the server in batches of a quarter window. */
  #granted(bytes: number): void {
    if (!this.#flow || this.#closing) return;
    this.#ungranted += bytes;
    if (this.#ungranted >= this.#flow.recvWindow / 4) {
      this.#stream.send(knpWindow(this.connectId, this.#ungranted));
      this.#ungranted = 0;
    }
  }

  /** The single teardown path. Idempotent. */
  async close(cause: CloseCause): Promise<void> {
    if (this.#closing) return this.done;
    this.#closing = true;
    this.#creditWaiter?.();
    this.#linkWaiter?.();
    this.#guard.dispose();
    if (cause.by === "server" && this.#writer.writing) {
      // Deliver what the client wrote before it closed, while the endpoint keeps reading.
      await this.#writer.flushed(CLOSE_FLUSH_MS);
    }
    try {
      this.#socket.close();
    } catch { /* already closed */ }
    this.#writer.discard();
    if (cause.by !== "stream-gone") {
      let error = "";
      if (cause.by === "overflow") {
        error = "endpoint stopped reading; connection reset by the agent";
      }
      this.#stream.send(closeResponse(this.connectId, error));
    }
    if (cause.by === "endpoint" && cause.error !== undefined) {
      // An endpoint reset (or read failure) is worth seeing at the default level, with its error.
      this.#log.info("endpoint connection failed", {
        connectID: this.connectId,
        error: cause.error,
      });
    }
    this.#log.debug("endpoint connection closed", { connectID: this.connectId, by: cause.by });
    this.#onClosed(this);
    this.#closed = true;
    this.#done?.resolve();
  }
}

/** Guard limits under flow control, one object per (limits, flow) pair rather than per connection. */
const flowGuards = new WeakMap<object, WeakMap<GuardLimits, GuardLimits>>();

/** With flow control the server never has more than our window in flight: no shared pause. */
function flowGuard(guard: GuardLimits, flow: { recvWindow: number }): GuardLimits {
  let byGuard = flowGuards.get(flow);
  if (byGuard === undefined) flowGuards.set(flow, byGuard = new WeakMap());
  let limits = byGuard.get(guard);
  if (limits === undefined) {
    limits = { stallMs: 0, maxBytes: Math.max(guard.maxBytes, 2 * flow.recvWindow) };
    byGuard.set(guard, limits);
  }
  return limits;
}
