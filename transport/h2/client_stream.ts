/**
 * {@linkcode H2ClientStream}: one gRPC call of the native HTTP/2 client, seen as a
 * {@linkcode PacketStream} — the same contract as the grpc-js adapter's client side
 * (`GrpcPacketStream`): packets are sent as length-prefixed messages that the connection's write
 * scheduler frames within the server's windows; received messages are decoded and pushed to the
 * handler (held while paused; the stream window is credited back only as they are delivered);
 * `close()` half-closes (END_STREAM after what was queued) and the stream ends on the server's
 * trailers; `close(error)` cancels it (RST_STREAM CANCEL). The server's status becomes the error
 * the grpc-js adapter reports (`client_status.ts`).
 *
 * The send queue and the delivery with its window credit are `server_stream.ts`'s
 * (`stream_queues.ts`); what ends a call stays apart because the two ends differ there: the
 * client's stream is over on the server's trailers, the server's on its own.
 *
 * @module
 */

import type { Packet } from "@knp/proto";
import { errorMessage } from "@knp/core/errors";
import type { PacketHandler, PacketStream } from "../packet_stream.ts";
import { DoneSignal } from "../packet_stream.ts";
import { encodeFrame, ErrorCode, Flag, FrameType, H2Error, MAX_WINDOW } from "./frame.ts";
import { rstStreamFrame } from "./frame.ts";
import type { HeaderField } from "./hpack.ts";
import type { DataSource } from "./write_scheduler.ts";
import { decodeGrpcMessage, GrpcStatus, MessageError } from "./grpc_message.ts";
import { MessageInbox, MessageOutbox } from "./stream_queues.ts";
import { type HeaderLookup, lookupOf, statusError, statusOfHttp } from "./client_status.ts";
import { statusOfReset } from "./client_status.ts";

/** What a client stream needs of its connection. */
export interface ClientStreamOwner {
  /** Queues frames before any DATA (request headers, RST_STREAM). */
  control(frames: Uint8Array): void;
  /** Encodes a header list as HEADERS (+CONTINUATION) frames of `streamId`. */
  headerFrames(streamId: number, fields: HeaderField[], endStream: boolean): Uint8Array;
  /** The stream has data or a tail to send. */
  activate(stream: H2ClientStream): void;
  /** The stream has nothing more to send. */
  deactivate(stream: H2ClientStream): void;
  /** The application consumed `bytes` of the stream's flow-controlled data. */
  credit(stream: H2ClientStream, bytes: number): void;
  /** The stream is over on both sides; forget it. */
  finished(stream: H2ClientStream): void;
}

/** A gRPC call on a native HTTP/2 connection, client side. */
export class H2ClientStream implements PacketStream, DataSource {
  /** Stream id (0 until the connection opened it). */
  id = 0;
  readonly peer: string;
  sendWindow = 0;
  /** In its connection's write round robin (the scheduler sets it). */
  inRing = false;
  #owner: ClientStreamOwner | undefined;
  #in: MessageInbox;
  #out = new MessageOutbox();
  #tail: Uint8Array | undefined;
  #halfClosed = false;
  #gotHeaders = false;
  #remoteEnded = false;
  #outcome: Error | undefined;
  #closed = false;
  #ended = false;
  #finished = false;
  #done = new DoneSignal();
  #headers = Promise.withResolvers<HeaderLookup>();

  /** A call to `peer` accepting messages up to `maxMessageBytes`; open it with `attach`. */
  constructor(peer: string, maxMessageBytes: number) {
    this.peer = peer;
    this.#in = new MessageInbox(maxMessageBytes, 0);
    this.#headers.promise.catch(() => {});
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
  /** The server's response headers; rejects with the call's error when it ends without them. */
  get responseHeaders(): Promise<HeaderLookup> {
    return this.#headers.promise;
  }

  /** Opens the stream as `id`: queues the request headers and what was sent meanwhile. */
  attach(
    id: number,
    owner: ClientStreamOwner,
    request: HeaderField[],
    windows: { recv: number; send: number },
  ): void {
    this.id = id;
    this.#owner = owner;
    this.#in.window = windows.recv;
    this.sendWindow = windows.send;
    owner.control(owner.headerFrames(id, request, false));
    if (this.#halfClosed) this.#tail = endStreamFrame(id);
    if (this.#out.bytes > 0 || this.#tail) owner.activate(this);
  }

  start(handler: PacketHandler): void {
    this.#in.handler = handler;
    this.#in.paused = false;
    this.#pump();
  }

  send(packet: Packet, onSent?: () => void): boolean {
    if (this.closed) return false;
    const ok = this.#out.push(packet, onSent);
    this.#owner?.activate(this);
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

  close(error?: Error): void {
    if (this.closed) return;
    this.#closed = true;
    if (error) {
      this.#cancel(ErrorCode.CANCEL);
      this.#end(error);
      return;
    }
    // Half-close: END_STREAM after what is queued; the call ends on the server's trailers.
    this.#halfClosed = true;
    if (this.#owner) {
      this.#tail = endStreamFrame(this.id);
      this.#owner.activate(this);
    }
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
    this.#tail = undefined;
    return tail;
  }

  // --- events from the connection ---

  /** Response headers, or trailers (`endStream`). @throws {H2Error} a stream error */
  onHeaders(fields: HeaderField[], endStream: boolean): void {
    if (this.#remoteEnded) throw new H2Error(ErrorCode.STREAM_CLOSED, this.id, "after END_STREAM");
    if (this.#gotHeaders) {
      if (!endStream) {
        throw new H2Error(ErrorCode.PROTOCOL_ERROR, this.id, "trailers without END_STREAM");
      }
      return this.#trailers(fields);
    }
    this.#gotHeaders = true;
    const lookup = lookupOf(fields);
    const status = lookup.get(":status")[0] ?? "";
    if (status !== "200") {
      const error = statusError(
        statusOfHttp(status),
        `Received HTTP status code ${status}`,
        lookup,
      );
      this.#remoteEnded = true;
      this.#cancel(endStream ? undefined : ErrorCode.CANCEL);
      this.#end(error);
      return;
    }
    if (!endStream) return this.#headers.resolve(lookup);
    // Trailers-only: the call is over before it began (grpc-js reports its status then).
    this.#trailers(fields);
    this.#headers.reject(
      this.#outcome ?? statusError(GrpcStatus.OK, "trailers-only response", lookupOf(fields)),
    );
  }

  #trailers(fields: HeaderField[]): void {
    this.#remoteEnded = true;
    const lookup = lookupOf(fields);
    const raw = lookup.get("grpc-status")[0];
    const code = raw === undefined || !/^\d+$/.test(raw) ? GrpcStatus.UNKNOWN : Number(raw);
    const details = raw === undefined
      ? "No status received"
      : decodeGrpcMessage(lookup.get("grpc-message")[0] ?? "");
    if (code !== GrpcStatus.OK) this.#outcome = statusError(code, details, lookup);
    else if (!this.#in.idle) {
      this.#outcome = statusError(GrpcStatus.INTERNAL, "stream ended inside a message", lookup);
    }
    // The server is done: whatever we had left to send is moot (grpc-go resets too).
    if (!this.#tailTaken()) this.#cancel(ErrorCode.NO_ERROR);
    else this.#finish();
    this.#pump();
  }

  #tailTaken(): boolean {
    return this.#halfClosed && this.#tail === undefined && this.#out.bytes === 0;
  }

  /**
   * DATA arrived: `data` without padding, `flowBytes` as counted by flow control.
   * @throws {H2Error} a stream error when the peer overran the window or sent DATA too early
   */
  onData(data: Uint8Array, flowBytes: number, endStream: boolean): void {
    this.#in.charge(this.id, flowBytes);
    if (!this.#gotHeaders) throw new H2Error(ErrorCode.PROTOCOL_ERROR, this.id, "DATA first");
    try {
      this.#in.accept(data, flowBytes, this.#ended);
    } catch (err) {
      const status = err instanceof MessageError ? err.status : GrpcStatus.INTERNAL;
      this.#closed = true;
      this.#cancel(ErrorCode.CANCEL);
      this.#end(statusError(status, errorMessage(err)));
      return;
    }
    if (endStream) this.#trailers([]);
    else this.#pump();
  }

  /** The server's WINDOW_UPDATE. @throws {H2Error} when the window would pass 2^31-1 */
  onWindowUpdate(increment: number): void {
    this.sendWindow += increment;
    if (this.sendWindow > MAX_WINDOW) {
      throw new H2Error(ErrorCode.FLOW_CONTROL_ERROR, this.id, "stream window above 2^31-1");
    }
    if (this.#out.bytes > 0 && this.sendWindow > 0) this.#owner?.activate(this);
  }

  /** The server reset the stream with HTTP/2 error `code`. */
  onPeerReset(code: number): void {
    this.#dropQueue();
    this.#owner?.deactivate(this);
    this.#finish();
    // Our native server resets with NO_ERROR after its trailers: the call already ended.
    if (this.#remoteEnded) return;
    this.#remoteEnded = true;
    this.#end(statusError(statusOfReset(code), `Received RST_STREAM with code ${code}`));
  }

  /** The stream ended with `error` without a word from the server (connection lost, refused). */
  onLost(error: Error): void {
    this.#dropQueue();
    this.#owner?.deactivate(this);
    this.#finish();
    if (this.#remoteEnded) return;
    this.#remoteEnded = true;
    this.#end(error);
  }

  /** Sends RST_STREAM `code` (none when undefined) and forgets the stream. */
  #cancel(code: number | undefined): void {
    this.#dropQueue();
    const owner = this.#owner;
    if (owner && !this.#finished) {
      owner.deactivate(this);
      if (code !== undefined) owner.control(rstStreamFrame(this.id, code));
    }
    this.#finish();
  }

  #dropQueue(): void {
    this.#tail = undefined;
    this.#out.clear();
  }

  /** Delivers what the inbox holds while not paused; ends the call once the server ended it. */
  #pump(): void {
    if (!this.#in.handler) {
      if (this.#remoteEnded && this.#in.empty) this.#end(this.#outcome);
      return;
    }
    const held = this.#in.deliver(this);
    if (held < 0) return;
    if (held > 0 && !this.#remoteEnded && this.#owner) this.#owner.credit(this, held);
    if (this.#remoteEnded) this.#end(this.#outcome);
  }

  #finish(): void {
    if (this.#finished || !this.#owner) return;
    this.#finished = true;
    this.#owner.finished(this);
  }

  #end(error?: Error): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#out.flush();
    if (!this.#gotHeaders || error) {
      this.#headers.reject(error ?? statusError(GrpcStatus.OK, "call ended without headers"));
    }
    this.#done.settle(error);
    const handler = this.#in.handler;
    if (handler) handler.onEnd(error);
    else queueMicrotask(() => this.#in.handler?.onEnd(error));
  }
}

/** An empty DATA frame with END_STREAM: the client's half-close. */
function endStreamFrame(id: number): Uint8Array {
  return encodeFrame(FrameType.DATA, Flag.END_STREAM, id);
}
