/**
 * {@linkcode H2ServerStream}: one gRPC call on a native HTTP/2 server connection, seen as a
 * {@linkcode PacketStream} — the same contract as grpc-js's `GrpcPacketStream` on the server side:
 * received messages are decoded and pushed to the handler (held while paused, and the stream's
 * HTTP/2 window is credited back only as they are delivered); sent packets are queued as
 * length-prefixed messages that the connection's write scheduler frames within the peer's
 * windows; `close()` ends with trailers (`grpc-status`, `grpc-message`), and the client's
 * half-close ends the stream cleanly after what it sent was delivered.
 *
 * @module
 */

import type { Packet } from "@knp/proto";
import type { PacketHandler, PacketStream } from "../packet_stream.ts";
import { DoneSignal } from "../packet_stream.ts";
import { ErrorCode, H2Error, MAX_WINDOW } from "./frame.ts";
import type { HeaderField } from "./hpack.ts";
import type { HeaderMap } from "./request_headers.ts";
import type { DataSource } from "./write_scheduler.ts";
import { encodeGrpcMessage, GrpcStatus, MessageError, statusFor } from "./grpc_message.ts";
import { MessageInbox, MessageOutbox } from "./stream_queues.ts";

/** Trailer key of a retry hint in ms (as `grpc_internal.ts` sends it). */
const RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms";

/** What a stream needs of its connection. */
export interface StreamOwner {
  /** Queues frames before any DATA (response headers). */
  control(frames: Uint8Array): void;
  /** Encodes a header list as HEADERS (+CONTINUATION) frames of `streamId`. */
  headerFrames(streamId: number, fields: HeaderField[], endStream: boolean): Uint8Array;
  /** A RST_STREAM frame. */
  resetFrame(streamId: number, code: number): Uint8Array;
  /** The stream has data or a tail to send. */
  activate(stream: H2ServerStream): void;
  /** The stream has nothing more to send (it was reset). */
  deactivate(stream: H2ServerStream): void;
  /** The application consumed `bytes` of the stream's flow-controlled data. */
  credit(stream: H2ServerStream, bytes: number): void;
  /** The stream is over on both sides; forget it. */
  finished(stream: H2ServerStream, reset: boolean): void;
}

/** Options of a {@linkcode H2ServerStream}. */
export interface H2ServerStreamOptions {
  /** Largest message accepted. */
  maxMessageBytes: number;
  /** Our initial window for the stream (SETTINGS_INITIAL_WINDOW_SIZE we sent). */
  recvWindow: number;
  /** The peer's initial window for the stream. */
  sendWindow: number;
  /** Peer description. */
  peer: string;
}

/** A gRPC call on a native HTTP/2 connection, server side. */
export class H2ServerStream implements PacketStream, DataSource {
  readonly id: number;
  readonly peer: string;
  readonly headers: HeaderMap;
  sendWindow: number;
  /** In its connection's write round robin (the scheduler sets it). */
  inRing = false;
  #owner: StreamOwner;
  #in: MessageInbox;
  #remoteEnded = false;
  #out = new MessageOutbox();
  #headersSent = false;
  #tail: Uint8Array | undefined;
  #closed = false;
  #ended = false;
  #finished = false;
  #done = new DoneSignal();

  /** Stream `id` of `owner`, opened with request `headers`. */
  constructor(id: number, headers: HeaderMap, owner: StreamOwner, options: H2ServerStreamOptions) {
    this.id = id;
    this.headers = headers;
    this.#owner = owner;
    this.peer = options.peer;
    this.sendWindow = options.sendWindow;
    // Pooled messages: the agent link's packet stream gives them back once framed.
    this.#in = new MessageInbox(options.maxMessageBytes, options.recvWindow, true);
  }

  get bufferedBytes(): number {
    return this.#out.buffered;
  }
  get closed(): boolean {
    return this.#closed || this.#ended;
  }
  get done(): Promise<Error | undefined> {
    return this.#done.promise;
  }
  /** True once the stream ended (the handler got or is due `onEnd`). */
  get ended(): boolean {
    return this.#ended;
  }
  /** True once the client half-closed. */
  get remoteEnded(): boolean {
    return this.#remoteEnded;
  }

  start(handler: PacketHandler): void {
    this.#in.handler = handler;
    this.#in.paused = false;
    this.#pump();
  }

  send(packet: Packet, onSent?: () => void): boolean {
    if (this.closed) return false;
    const ok = this.#out.push(packet, onSent);
    this.sendHeaders({});
    this.#owner.activate(this);
    return ok;
  }

  onDrain(callback: () => void): void {
    this.#out.onDrain(callback);
  }

  pause(): void {
    this.#in.paused = true;
  }

  resume(): void {
    if (!this.#in.handler || this.#ended) return;
    this.#in.paused = false;
    this.#pump();
  }

  /** Sends the response headers (`:status`, `content-type` and `extra`) unless already sent. */
  sendHeaders(extra: Record<string, string>): void {
    if (this.#headersSent || this.#finished) return;
    this.#headersSent = true;
    const fields: HeaderField[] = [[":status", "200"], ["content-type", "application/grpc"]];
    for (const [k, v] of Object.entries(extra)) fields.push([k.toLowerCase(), v]);
    this.#owner.control(this.#owner.headerFrames(this.id, fields, false));
  }

  close(error?: Error): void {
    if (this.closed) return;
    this.#closed = true;
    if (error) this.#out.clear();
    const fields: HeaderField[] = [];
    if (!this.#headersSent) {
      this.#headersSent = true;
      fields.push([":status", "200"], ["content-type", "application/grpc"]);
    }
    const status = error instanceof MessageError ? error.status : error ? statusFor(error) : 0;
    fields.push(["grpc-status", String(status)]);
    if (error) fields.push(["grpc-message", encodeGrpcMessage(error.message)]);
    const retry = (error as Error & { retryAfterMs?: unknown } | undefined)?.retryAfterMs;
    if (typeof retry === "number" && Number.isFinite(retry) && retry >= 0) {
      fields.push([RETRY_PUSHBACK_KEY, String(Math.ceil(retry))]);
    }
    let tail = this.#owner.headerFrames(this.id, fields, true);
    if (!this.#remoteEnded) {
      tail = concat(tail, this.#owner.resetFrame(this.id, ErrorCode.NO_ERROR));
    }
    this.#tail = tail;
    this.#owner.activate(this);
    this.#end(error);
  }

  // --- DataSource (the write scheduler) ---

  pendingBytes(): number {
    return this.#out.bytes;
  }

  take(limit: number, pieces: Uint8Array[], done: (() => void)[]): number {
    return this.#out.take(limit, pieces, done);
  }

  takeTail(): Uint8Array | undefined {
    const tail = this.#tail;
    if (!tail) return undefined;
    this.#tail = undefined;
    this.#finish(false);
    return tail;
  }

  // --- events from the connection ---

  /**
   * DATA arrived: `data` without padding, `flowBytes` as counted by flow control.
   * @throws {H2Error} a stream FLOW_CONTROL_ERROR when the peer overran the window
   */
  onData(data: Uint8Array, flowBytes: number, endStream: boolean): void {
    this.#in.charge(this.id, flowBytes);
    try {
      this.#in.accept(data, flowBytes, this.closed);
    } catch (err) {
      this.close(err as Error);
    }
    if (endStream) this.#remoteEnded = true;
    this.#pump();
  }

  /** The client half-closed with trailers (or an empty DATA frame). */
  onRemoteEnd(): void {
    this.#remoteEnded = true;
    this.#pump();
  }

  /** The peer's WINDOW_UPDATE. @throws {H2Error} when the window would pass 2^31-1 */
  onWindowUpdate(increment: number): void {
    this.sendWindow += increment;
    if (this.sendWindow > MAX_WINDOW) {
      throw new H2Error(ErrorCode.FLOW_CONTROL_ERROR, this.id, "stream window above 2^31-1");
    }
    if (this.#out.bytes > 0 && this.sendWindow > 0) this.#owner.activate(this);
  }

  /** The stream was reset (by the peer, or by us for a stream error) or its connection died. */
  onReset(error: Error): void {
    this.#out.clear();
    this.#tail = undefined;
    this.#closed = true;
    this.#owner.deactivate(this);
    this.#finish(true);
    this.#end(error);
  }

  /** Delivers what the inbox holds while not paused; handles the client's half-close. */
  #pump(): void {
    if (!this.#in.handler) return;
    const held = this.#in.deliver(this);
    if (held < 0) return;
    if (held > 0) this.#owner.credit(this, held);
    if (this.#remoteEnded && !this.#ended) this.#remoteDone();
  }

  #remoteDone(): void {
    if (!this.#in.idle) {
      this.close(new MessageError(GrpcStatus.INTERNAL, "stream ended inside a message"));
    } else this.close();
  }

  #finish(reset: boolean): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#owner.finished(this, reset);
  }

  #end(error?: Error): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#out.flush();
    this.#done.settle(error);
    const handler = this.#in.handler;
    if (handler) handler.onEnd(error);
    else queueMicrotask(() => this.#in.handler?.onEnd(error));
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
