/**
 * {@linkcode H2ClientConnection}: the client side of one HTTP/2 connection carrying gRPC calls,
 * on any {@linkcode ByteSocket} (a `Deno.Conn` for h2c, an adapted node:tls socket for TLS). It
 * sends the preface with large windows (8 MiB per stream, 16 MiB for the connection, as the native
 * server announces), opens {@linkcode H2ClientStream}s with the gRPC request headers, keeps both
 * directions of flow control (the server's windows bound the write scheduler; ours are credited
 * back as the application consumes), answers PINGs and sends its own for keepalive, and honours
 * GOAWAY (no new streams; open ones finish). Every write goes through the server's
 * {@linkcode WriteScheduler} (coalesced writes, round robin DATA).
 *
 * Hand-written for the same reasons as the server side (see README.md): grpc-js's client runs on
 * node:http2 with a 64 KiB receive window and one write per frame under Deno.
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
import { rstStreamFrame, Setting, settingsFrame, windowUpdateFrame } from "./frame.ts";
import type { HeaderField } from "./hpack.ts";
import { HpackDecoder, HpackEncoder, HpackError } from "./hpack.ts";
import { announced, type LocalSettings, localSettings } from "./settings.ts";
import { WriteScheduler } from "./write_scheduler.ts";
import { flushWithin, pingKeepalive, releaseConnection } from "./connection_parts.ts";
import { WindowCredit } from "./connection_parts.ts";
import { ClientFrameRules, type ClientRulesTarget } from "./client_frames.ts";
import { H2ClientStream } from "./client_stream.ts";
import { statusError } from "./client_status.ts";
import { GrpcStatus } from "./grpc_message.ts";

/** Options of an {@linkcode H2ClientConnection}. */
export interface H2ClientConnectionOptions {
  /** Server description for logs and errors. */
  peer: string;
  /** `:authority` of every request. */
  authority: string;
  /** `:scheme` of every request. */
  scheme: "http" | "https";
  /** Largest gRPC message accepted. */
  maxMessageBytes: number;
  /** Our windows and limits (defaults: 8 MiB stream, 16 MiB connection windows). */
  settings?: Partial<LocalSettings> | undefined;
  /** PINGs and the dead-server timeout. */
  keepalive?: KeepaliveOptions | undefined;
  /** Upper bound of one coalesced write, in bytes. */
  batchBytes?: number | undefined;
  /** Clock (tests). */
  timers?: Timers | undefined;
}

/** How long `close()` lets open streams finish. */
const CLOSE_GRACE_MS = 10_000;

/** Largest client stream id. */
const MAX_STREAM_ID = 0x7fff_ffff;

/** The client side of one HTTP/2 connection. */
export class H2ClientConnection implements ClientRulesTarget {
  readonly peer: string;
  readonly options: H2ClientConnectionOptions;
  readonly local: LocalSettings;
  readonly streams = new Map<number, H2ClientStream>();
  readonly writer: WriteScheduler;
  /** The server's SETTINGS_INITIAL_WINDOW_SIZE. */
  peerInitialWindow = 65_535;
  #nextId = 1;
  #socket: ByteSocket;
  #decoder: HpackDecoder;
  #encoder = new HpackEncoder();
  #rules: ClientFrameRules;
  #keepalive: Keepalive | undefined;
  #timers: Timers;
  #credit: WindowCredit;
  #goaway = false;
  #closing = false;
  #torndown = false;
  #started = false;
  #closed = Promise.withResolvers<Error | undefined>();

  /** A connection over `socket`; call {@linkcode start}. */
  constructor(socket: ByteSocket, options: H2ClientConnectionOptions) {
    this.#socket = socket;
    this.options = options;
    this.peer = options.peer;
    this.local = localSettings(options.settings);
    this.#timers = options.timers ?? realTimers;
    this.#decoder = new HpackDecoder(4096, this.local.maxHeaderListSize);
    this.writer = new WriteScheduler(
      socket,
      (err) => this.#teardown(lostError(this.peer, err)),
      options.batchBytes,
      this.#timers,
    );
    this.#rules = new ClientFrameRules(this);
    this.#credit = new WindowCredit(this.writer, this.local);
    this.#keepalive = pingKeepalive(
      this.peer,
      options.keepalive,
      this.writer,
      this.#timers,
      (error) => this.#fail(ErrorCode.NO_ERROR, error),
    );
  }

  /** Settles when the connection is closed, with the error that closed it (if any). */
  get closed(): Promise<Error | undefined> {
    return this.#closed.promise;
  }

  /** True while new streams may be opened (no GOAWAY either way, not closing, ids left). */
  get usable(): boolean {
    return !this.#goaway && !this.#closing && !this.#torndown && this.#nextId < MAX_STREAM_ID;
  }

  /** Sends the preface and our SETTINGS and starts reading; idempotent. */
  start(): void {
    if (this.#started) return;
    this.#started = true;
    const settings = announced(this.local);
    settings.set(Setting.ENABLE_PUSH, 0);
    const frames = [PREFACE, settingsFrame(settings)];
    const extra = this.local.connectionWindow - 65_535;
    if (extra > 0) frames.push(windowUpdateFrame(0, extra));
    this.writer.control(concat(frames));
    this.#keepalive?.start();
    void this.#run();
  }

  /**
   * Opens `stream` as a call of `path` with request `metadata` (lowercase keys). A connection that
   * takes no more streams ends the stream at once with `UNAVAILABLE`.
   */
  open(stream: H2ClientStream, path: string, metadata: Record<string, string>): void {
    if (stream.ended) return;
    if (!this.usable) {
      stream.onLost(statusError(GrpcStatus.UNAVAILABLE, `connection to ${this.peer} is closing`));
      return;
    }
    const id = this.#nextId;
    this.#nextId += 2;
    const { authority, scheme } = this.options;
    const fields: HeaderField[] = [
      [":method", "POST"],
      [":scheme", scheme],
      [":path", path],
      [":authority", authority],
      ["content-type", "application/grpc"],
      ["te", "trailers"],
    ];
    for (const [k, v] of Object.entries(metadata)) fields.push([k.toLowerCase(), v]);
    this.streams.set(id, stream);
    stream.attach(id, this, fields, {
      recv: this.local.streamWindow,
      send: this.peerInitialWindow,
    });
  }

  /**
   * Closes once the open streams are over, or after `graceMs` (a half-closed call waits for the
   * server's trailers, which a dead server never sends); at once when there are none.
   */
  close(graceMs = CLOSE_GRACE_MS): void {
    if (this.#closing || this.#torndown) return;
    this.#closing = true;
    if (this.streams.size === 0) return this.#goodbye();
    const timer = this.#timers.setTimeout(
      () => this.#fail(ErrorCode.NO_ERROR, new KnpError("TUNNEL_CLOSED", "connection closed")),
      graceMs,
    );
    void this.closed.then(() => this.#timers.clearTimeout(timer));
  }

  /** Cuts the connection: every open stream ends with `error`. */
  abort(error: Error = new KnpError("TUNNEL_CLOSED", "connection closed")): void {
    this.#teardown(error);
  }

  async #run(): Promise<void> {
    const parser = new FrameParser(this.local.maxFrameSize);
    // Small reads while idle, doubling up to 256 KiB in bulk; the buffer is reused between reads
    // that leave no partial frame.
    const sizes = new AdaptiveReadSize(2048, 256 * 1024);
    let buf = sizes.buffer();
    try {
      while (!this.#torndown) {
        if (buf.length !== sizes.size) buf = sizes.buffer();
        const n = await this.#socket.read(buf);
        if (n === null) break;
        sizes.filled(n, buf.length);
        this.#keepalive?.alive();
        for (const frame of parser.push(buf.subarray(0, n))) {
          this.#rules.onFrame(frame);
          if (this.#torndown) break;
        }
        // A frame still incomplete may hold a view of this read (FrameParser keeps the later
        // pieces of a frame spanning several reads as views): the next read gets a fresh buffer.
        if (parser.pendingBytes > 0) buf = sizes.buffer();
      }
      this.#teardown(lostError(this.peer));
    } catch (err) {
      if (err instanceof H2Error && err.streamId === 0) this.#fail(err.h2Code, err);
      else if (err instanceof HpackError) this.#fail(ErrorCode.COMPRESSION_ERROR, err);
      else this.#teardown(lostError(this.peer, err));
    }
  }

  /** A connection error: GOAWAY with `code`, then close; every stream ends with `error`. */
  #fail(code: number, error: Error): void {
    if (this.#torndown) return;
    this.#goaway = true;
    this.writer.control(goawayFrame(0, code, error.message.slice(0, 200)));
    const cause = error instanceof KnpError && error.code === "TIMEOUT"
      ? error
      : statusError(GrpcStatus.UNAVAILABLE, `connection to ${this.peer} failed: ${error.message}`);
    void this.#flushThenTeardown(cause);
  }

  /** A stream error: RST_STREAM `code`, the stream ends with `INTERNAL`. */
  resetStream(id: number, code: number, error: Error): void {
    this.writer.control(rstStreamFrame(id, code));
    this.streams.get(id)?.onLost(statusError(GrpcStatus.INTERNAL, error.message));
  }

  /** The server's GOAWAY: streams above `lastStreamId` are refused; the others finish. */
  onGoaway(lastStreamId: number, code: number, debug: string): void {
    this.#goaway = true;
    const why = `GOAWAY (code ${code}${debug ? `, ${debug}` : ""})`;
    for (const stream of [...this.streams.values()]) {
      if (stream.id > lastStreamId) {
        stream.onLost(statusError(GrpcStatus.UNAVAILABLE, `stream refused by ${why}`));
      }
    }
    if (this.streams.size === 0) void this.#flushThenTeardown(lostError(this.peer));
  }

  // --- ClientRulesTarget ---

  /** The next stream id we would use. */
  get nextStreamId(): number {
    return this.#nextId;
  }

  /** Largest header block accepted. */
  get maxHeaderBlock(): number {
    return 2 * this.local.maxHeaderListSize;
  }

  /** Decodes a header block. */
  decode(block: Uint8Array): HeaderField[] {
    return this.#decoder.decode(block);
  }

  /** Received DATA of `bytes` (flow-controlled): credits the connection window back at once. */
  connectionData(bytes: number): void {
    this.#credit.connection(bytes);
  }

  // --- ClientStreamOwner ---

  /** Queues control frames. */
  control(frames: Uint8Array): void {
    this.writer.control(frames);
  }

  /** Encodes header frames within the server's frame size. */
  headerFrames(streamId: number, fields: HeaderField[], endStream: boolean): Uint8Array {
    return headersFrames(
      streamId,
      this.#encoder.encode(fields),
      endStream,
      this.writer.maxFrameSize,
    );
  }

  /** Puts a stream in the write round robin. */
  activate(stream: H2ClientStream): void {
    this.writer.activate(stream);
  }

  /** Takes a stream out of the write round robin. */
  deactivate(stream: H2ClientStream): void {
    this.writer.deactivate(stream);
  }

  /** The application consumed `bytes` of a stream: WINDOW_UPDATE once a quarter window is due. */
  credit(stream: H2ClientStream, bytes: number): void {
    if (this.streams.get(stream.id) === stream) this.#credit.stream(stream.id, bytes);
  }

  /** A stream is over. */
  finished(stream: H2ClientStream): void {
    if (this.streams.get(stream.id) !== stream) return;
    this.streams.delete(stream.id);
    this.#credit.forget(stream.id);
    if (this.streams.size > 0) return;
    if (this.#closing) this.#goodbye();
    else if (this.#goaway) void this.#flushThenTeardown(lostError(this.peer));
  }

  #goodbye(): void {
    this.writer.control(goawayFrame(0, ErrorCode.NO_ERROR, "client closed"));
    void this.#flushThenTeardown(new KnpError("TUNNEL_CLOSED", "connection closed"));
  }

  #teardown(error: Error): void {
    if (this.#torndown) return;
    this.#torndown = true;
    const parts = { keepalive: this.#keepalive, writer: this.writer, socket: this.#socket };
    releaseConnection(parts, this.streams, (s) => s.onLost(error));
    this.#closed.resolve(error);
  }

  async #flushThenTeardown(error: Error): Promise<void> {
    if (this.#torndown) return;
    await flushWithin(this.writer, this.#timers, 1000);
    this.#teardown(error);
  }
}

/** The error streams end with when their connection is lost. */
function lostError(peer: string, cause?: unknown): KnpError {
  const why = cause instanceof Error ? `: ${cause.message}` : "";
  return statusError(GrpcStatus.UNAVAILABLE, `connection to ${peer} closed${why}`);
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
