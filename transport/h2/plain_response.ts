/**
 * {@linkcode PlainResponse}: the answer to a request that is not a gRPC call of the served
 * method (wrong method, content type or path): response headers, an optional short text body sent
 * through the same flow-controlled write path as gRPC data, and the end of the stream. What the
 * client sends on such a stream is read (for flow control) and dropped.
 *
 * @module
 */

import { encodeFrame, ErrorCode, Flag, FrameType, H2Error, MAX_WINDOW } from "./frame.ts";
import type { HeaderField } from "./hpack.ts";
import type { DataSource } from "./write_scheduler.ts";

/** What a plain response needs of its connection. */
export interface PlainOwner {
  /** Queues frames before any DATA. */
  control(frames: Uint8Array): void;
  /** Encodes a header list as HEADERS (+CONTINUATION) frames. */
  headerFrames(streamId: number, fields: HeaderField[], endStream: boolean): Uint8Array;
  /** The response has data or a tail to send. */
  activate(source: DataSource): void;
  /** The response stopped sending (reset). */
  deactivate(source: DataSource): void;
  /** Flow-controlled bytes read and dropped. */
  credit(source: PlainResponse, bytes: number): void;
  /** The stream is over; forget it. */
  finished(source: PlainResponse, reset: boolean): void;
}

/** A non-gRPC answer on one stream. */
export class PlainResponse implements DataSource {
  readonly id: number;
  sendWindow: number;
  /** In its connection's write round robin (the scheduler sets it). */
  inRing = false;
  #owner: PlainOwner;
  #body: Uint8Array;
  #offset = 0;
  #sentAll = false;
  #done = false;
  #remoteEnded: boolean;

  /** Answers stream `id` with `fields` and `body`; `remoteEnded` when the request is complete. */
  constructor(
    id: number,
    owner: PlainOwner,
    sendWindow: number,
    fields: HeaderField[],
    body: string,
    remoteEnded: boolean,
  ) {
    this.id = id;
    this.#owner = owner;
    this.sendWindow = sendWindow;
    this.#body = new TextEncoder().encode(body);
    this.#remoteEnded = remoteEnded;
    owner.control(owner.headerFrames(id, fields, this.#body.length === 0));
    if (this.#body.length === 0) this.#sent();
    else owner.activate(this);
  }

  /** True once the client half-closed. */
  get remoteEnded(): boolean {
    return this.#remoteEnded;
  }

  /** True once the stream is over on both sides. */
  get over(): boolean {
    return this.#done;
  }

  pendingBytes(): number {
    return this.#body.length - this.#offset;
  }

  take(limit: number, pieces: Uint8Array[]): number {
    const n = Math.min(limit, this.#body.length - this.#offset);
    pieces.push(this.#body.subarray(this.#offset, this.#offset + n));
    this.#offset += n;
    return n;
  }

  takeTail(): Uint8Array | undefined {
    if (this.#sentAll) return undefined;
    this.#sent();
    return encodeFrame(FrameType.DATA, Flag.END_STREAM, this.id);
  }

  /** DATA arrived; it is dropped. */
  onData(_data: Uint8Array, flowBytes: number, endStream: boolean): void {
    this.#owner.credit(this, flowBytes);
    if (endStream) this.onRemoteEnd();
  }

  /** The client half-closed. */
  onRemoteEnd(): void {
    this.#remoteEnded = true;
    if (this.#sentAll) this.#end();
  }

  /** The peer's WINDOW_UPDATE. @throws {H2Error} when the window would pass 2^31-1 */
  onWindowUpdate(increment: number): void {
    this.sendWindow += increment;
    if (this.sendWindow > MAX_WINDOW) {
      throw new H2Error(ErrorCode.FLOW_CONTROL_ERROR, this.id, "stream window above 2^31-1");
    }
    if (this.pendingBytes() > 0 && this.sendWindow > 0) this.#owner.activate(this);
  }

  /** The stream was reset or the connection died. */
  onReset(_error: Error): void {
    this.#owner.deactivate(this);
    if (this.#done) return;
    this.#done = true;
    this.#owner.finished(this, true);
  }

  #sent(): void {
    this.#sentAll = true;
    if (this.#remoteEnded) this.#end();
  }

  #end(): void {
    if (this.#done) return;
    this.#done = true;
    this.#owner.finished(this, false);
  }
}
