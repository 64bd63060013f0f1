/**
 * {@linkcode H2ServerConnection}: the server side of one HTTP/2 connection carrying gRPC calls of
 * one method, on any {@linkcode ByteSocket} (a `Deno.Conn` for h2c, an adapted node:tls socket for
 * TLS). It reads and checks the preface and every frame, keeps the stream states, both directions
 * of flow control (the peer's windows bound what the write scheduler sends; ours are credited back
 * as the application consumes), answers PINGs and sends its own for keepalive, resets broken
 * streams, and ends with GOAWAY — at once for a connection error, after the open calls for a
 * graceful shutdown or the peer's GOAWAY.
 *
 * Frame-level rules live in `frame_rules.ts`; this class keeps the state those rules act on.
 *
 * @module
 */

import { KnpError } from "@knp/core/errors";
import { realTimers, type Timers } from "@knp/core/timers";
import type { ByteSocket } from "../byte_socket.ts";
import { AdaptiveReadSize } from "../byte_socket.ts";
import type { Keepalive } from "../keepalive.ts";
import type { KeepaliveOptions } from "../packet_stream.ts";
import { ErrorCode, FrameParser, goawayFrame, H2Error, headersFrames, PREFACE } from "./frame.ts";
import { rstStreamFrame, settingsFrame, windowUpdateFrame } from "./frame.ts";
import type { HeaderField } from "./hpack.ts";
import { HpackDecoder, HpackEncoder, HpackError } from "./hpack.ts";
import { H2ServerStream } from "./server_stream.ts";
import type { PlainResponse } from "./plain_response.ts";
import { announced, type LocalSettings, localSettings } from "./settings.ts";
import { WriteScheduler } from "./write_scheduler.ts";
import { FrameRules } from "./frame_rules.ts";
import { flushWithin, pingKeepalive, releaseConnection } from "./connection_parts.ts";
import { WindowCredit } from "./connection_parts.ts";

/** Options of an {@linkcode H2ServerConnection}. */
export interface H2ServerConnectionOptions {
  /** Peer description for logs and errors. */
  peer: string;
  /** The one gRPC method path served (e.g. `/ProxyService/Proxy`). */
  path: string;
  /** Largest gRPC message accepted. */
  maxMessageBytes: number;
  /** Our windows and limits (defaults: 8 MiB stream, 16 MiB connection windows). */
  settings?: Partial<LocalSettings> | undefined;
  /** PINGs and the dead-peer timeout. */
  keepalive?: KeepaliveOptions | undefined;
  /** GOAWAY after this long without an open call. */
  idleTimeoutMs?: number | undefined;
  /** Upper bound of one coalesced write, in bytes. */
  batchBytes?: number | undefined;
  /** Clock (tests). */
  timers?: Timers | undefined;
  /** Every new gRPC call. */
  onStream(stream: H2ServerStream): void;
}

/** A stream of the connection: a gRPC call or a plain (non-gRPC) answer. */
export type ServerStreamState = H2ServerStream | PlainResponse;

/** Streams reset recently, whose late frames are ignored (RFC 9113 §5.4.2). */
const RESET_MEMORY = 256;

/** The server side of one HTTP/2 connection. */
export class H2ServerConnection {
  readonly peer: string;
  readonly options: H2ServerConnectionOptions;
  readonly local: LocalSettings;
  readonly streams = new Map<number, ServerStreamState>();
  readonly writer: WriteScheduler;
  readonly decoder: HpackDecoder;
  /** The peer's SETTINGS_INITIAL_WINDOW_SIZE. */
  peerInitialWindow = 65_535;
  /** Highest stream id the client used. */
  lastStreamId = 0;
  /** Set once we sent GOAWAY (no new streams). */
  draining = false;
  /** Set once the peer sent GOAWAY. */
  peerGoaway = false;
  #socket: ByteSocket;
  #encoder = new HpackEncoder();
  #rules: FrameRules;
  #resetIds = new Set<number>();
  #credit: WindowCredit;
  #keepalive: Keepalive | undefined;
  #timers: Timers;
  #idleTimer: number | undefined;
  #torndown = false;
  #closed = Promise.withResolvers<Error | undefined>();
  #greeted = false;

  /** Serves `socket`; call {@linkcode run}. */
  constructor(socket: ByteSocket, options: H2ServerConnectionOptions) {
    this.#socket = socket;
    this.options = options;
    this.peer = options.peer;
    this.local = localSettings(options.settings);
    this.#timers = options.timers ?? realTimers;
    this.decoder = new HpackDecoder(4096, this.local.maxHeaderListSize);
    this.writer = new WriteScheduler(
      socket,
      (err) => this.teardown(closedError(this.peer, err)),
      options.batchBytes,
      this.#timers,
    );
    this.#rules = new FrameRules(this);
    this.#credit = new WindowCredit(this.writer, this.local);
    this.#keepalive = pingKeepalive(
      this.peer,
      options.keepalive,
      this.writer,
      this.#timers,
      (error) => this.fail(ErrorCode.NO_ERROR, error),
    );
  }

  /** Settles when the connection is closed, with the error that closed it (if any). */
  get closed(): Promise<Error | undefined> {
    return this.#closed.promise;
  }

  /** Reads and serves until the connection ends; never rejects. */
  async run(): Promise<void> {
    this.#keepalive?.start();
    this.#armIdle();
    const parser = new FrameParser(this.local.maxFrameSize);
    // Small reads while idle (a pending read holds its buffer), doubling up to 256 KiB in bulk.
    // The buffer is reused while its size stays: what outlives a read is copied (see FrameParser,
    // MessageDeframer, FrameRules), which costs less than a fresh 256 KiB buffer per read.
    const sizes = new AdaptiveReadSize(2048, 256 * 1024);
    let buf = sizes.buffer();
    let preface = 0;
    try {
      while (!this.#torndown) {
        if (buf.length !== sizes.size) buf = sizes.buffer();
        const n = await this.#socket.read(buf);
        if (n === null) break;
        sizes.filled(n, buf.length);
        let chunk = buf.subarray(0, n);
        if (preface < PREFACE.length) {
          // Our SETTINGS once the client spoke: one write with the ACK of its SETTINGS.
          this.#greet();
          const take = Math.min(PREFACE.length - preface, chunk.length);
          for (let i = 0; i < take; i++) {
            if (chunk[i] !== PREFACE[preface + i]) {
              throw new H2Error(ErrorCode.PROTOCOL_ERROR, 0, "bad connection preface");
            }
          }
          preface += take;
          chunk = chunk.subarray(take);
        }
        this.#keepalive?.alive();
        for (const frame of parser.push(chunk)) {
          this.#rules.onFrame(frame);
          if (this.#torndown) break;
        }
      }
      this.teardown(closedError(this.peer));
    } catch (err) {
      this.#onError(err);
    }
  }

  /** Our SETTINGS and the connection window beyond the default. */
  #greet(): void {
    if (this.#greeted) return;
    this.#greeted = true;
    this.writer.control(settingsFrame(announced(this.local)));
    const extra = this.local.connectionWindow - 65_535;
    if (extra > 0) this.writer.control(windowUpdateFrame(0, extra));
  }

  /** Stops taking calls; closes once the open ones are over (`graceful`) or at once. */
  async shutdown(graceful: boolean): Promise<void> {
    if (!this.draining) {
      this.draining = true;
      this.#greet();
      this.writer.control(goawayFrame(this.lastStreamId, ErrorCode.NO_ERROR, "server shutdown"));
    }
    if (!graceful || this.streams.size === 0) {
      await this.#flushThenTeardown(new KnpError("TUNNEL_CLOSED", "server shut down"));
    }
    await this.closed;
  }

  /** A frame-processing failure: stream errors reset the stream, others end the connection. */
  #onError(err: unknown): void {
    if (err instanceof H2Error && err.streamId === 0) this.fail(err.h2Code, err);
    else if (err instanceof HpackError) this.fail(ErrorCode.COMPRESSION_ERROR, err);
    else if (this.#torndown) return;
    else if (err instanceof H2Error) this.fail(ErrorCode.INTERNAL_ERROR, err);
    else this.teardown(closedError(this.peer, err));
  }

  /** A connection error: GOAWAY with `code`, then close; every stream ends with `error`. */
  fail(code: number, error: Error): void {
    if (this.#torndown) return;
    this.draining = true;
    this.#greet();
    this.writer.control(goawayFrame(this.lastStreamId, code, error.message.slice(0, 200)));
    const cause = error instanceof KnpError && error.code === "TIMEOUT"
      ? error
      : new KnpError("TUNNEL_CLOSED", `connection to ${this.peer} failed: ${error.message}`, {
        cause: error,
      });
    void this.#flushThenTeardown(cause);
  }

  /** Sends RST_STREAM and ends the stream with `error`. */
  resetStream(id: number, code: number, error: Error): void {
    this.writer.control(rstStreamFrame(id, code));
    this.rememberReset(id);
    const stream = this.streams.get(id);
    if (stream) stream.onReset(error);
  }

  /** Notes a stream whose late frames are to be ignored. */
  rememberReset(id: number): void {
    this.#resetIds.add(id);
    if (this.#resetIds.size > RESET_MEMORY) {
      this.#resetIds.delete(this.#resetIds.values().next().value!);
    }
  }

  /** Treats late frames of stream `id` as errors again (the peer reset it). */
  forgetReset(id: number): void {
    this.#resetIds.delete(id);
  }

  /** True for a stream reset recently. */
  wasReset(id: number): boolean {
    return this.#resetIds.has(id);
  }

  /** Received DATA of `bytes` (flow-controlled): credits the connection window back at once. */
  connectionData(bytes: number): void {
    this.#credit.connection(bytes);
  }

  /** A new stream was opened: no longer idle. */
  opened(stream: ServerStreamState): void {
    this.streams.set(stream.id, stream);
    if (this.#idleTimer !== undefined) this.#timers.clearTimeout(this.#idleTimer);
    this.#idleTimer = undefined;
  }

  // --- StreamOwner / PlainOwner ---

  /** Queues control frames. */
  control(frames: Uint8Array): void {
    this.writer.control(frames);
  }

  /** Encodes header frames within the peer's frame size. */
  headerFrames(streamId: number, fields: HeaderField[], endStream: boolean): Uint8Array {
    return headersFrames(
      streamId,
      this.#encoder.encode(fields),
      endStream,
      this.writer.maxFrameSize,
    );
  }

  /** A RST_STREAM frame. */
  resetFrame(streamId: number, code: number): Uint8Array {
    return rstStreamFrame(streamId, code);
  }

  /** Puts a stream in the write round robin. */
  activate(stream: ServerStreamState): void {
    this.writer.activate(stream);
  }

  /** Takes a stream out of the write round robin. */
  deactivate(stream: ServerStreamState): void {
    this.writer.deactivate(stream);
  }

  /** The application consumed `bytes` of a stream: WINDOW_UPDATE once a quarter window is due. */
  credit(stream: ServerStreamState, bytes: number): void {
    if (!stream.remoteEnded) this.#credit.stream(stream.id, bytes);
  }

  /** A stream is over. */
  finished(stream: ServerStreamState, reset: boolean): void {
    if (this.streams.get(stream.id) !== stream) return;
    this.streams.delete(stream.id);
    this.#credit.forget(stream.id);
    this.#rules.forget(stream.id);
    if (reset || !stream.remoteEnded) this.rememberReset(stream.id);
    if (this.streams.size > 0) return;
    if (this.draining || this.peerGoaway) {
      void this.#flushThenTeardown(new KnpError("TUNNEL_CLOSED", "connection drained"));
    } else this.#armIdle();
  }

  /** Closes the socket and ends every stream with `error`; idempotent. */
  teardown(error: Error): void {
    if (this.#torndown) return;
    this.#torndown = true;
    this.draining = true;
    if (this.#idleTimer !== undefined) this.#timers.clearTimeout(this.#idleTimer);
    const parts = { keepalive: this.#keepalive, writer: this.writer, socket: this.#socket };
    releaseConnection(parts, this.streams, (s) => s.onReset(error));
    this.#closed.resolve(error);
  }

  async #flushThenTeardown(error: Error): Promise<void> {
    if (this.#torndown) return;
    await flushWithin(this.writer, this.#timers, 1000);
    this.teardown(error);
  }

  #armIdle(): void {
    const ms = this.options.idleTimeoutMs;
    if (!ms || this.#torndown || this.#idleTimer !== undefined) return;
    this.#idleTimer = this.#timers.setTimeout(() => {
      this.#idleTimer = undefined;
      if (this.streams.size === 0) void this.shutdown(true);
    }, ms);
  }
}

/** The error streams end with when their connection closes. */
function closedError(peer: string, cause?: unknown): KnpError {
  const why = cause instanceof Error ? `: ${cause.message}` : "";
  return new KnpError("TUNNEL_CLOSED", `connection to ${peer} closed${why}`, { cause });
}
