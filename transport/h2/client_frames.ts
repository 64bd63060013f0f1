/**
 * {@linkcode ClientFrameRules}: what a native client connection does with each frame the server
 * sends (RFC 9113 §5, §6): the server's SETTINGS first, header blocks across CONTINUATION (always
 * decoded, so the HPACK table stays in step even for a stream we already forgot), response headers
 * and trailers, DATA within our windows, RST_STREAM, PING, GOAWAY (streams above its last id are
 * refused, the others finish), WINDOW_UPDATE; PUSH_PROMISE is refused (we announce no push).
 * A stream error resets that stream here; a connection error is thrown to the connection.
 *
 * The server's rules (`frame_rules.ts`) act on a server connection's states; the client's are
 * fewer (it opens the streams) and are kept apart so neither side's checks leak into the other.
 *
 * @module
 */

import type { Frame } from "./frame.ts";
import { ErrorCode, Flag, FrameType, H2Error, MAX_WINDOW } from "./frame.ts";
import {
  parseSettings,
  pingFrame,
  readU32,
  settingsFrame,
  unpadded,
  validateFrame,
} from "./frame.ts";
import type { HeaderField } from "./hpack.ts";
import { peerSettings } from "./settings.ts";
import type { H2ClientStream } from "./client_stream.ts";

/** What the rules act on: the client connection's state. */
export interface ClientRulesTarget {
  /** Open streams by id. */
  readonly streams: Map<number, H2ClientStream>;
  /** The next stream id we would use (ids below it were ours). */
  readonly nextStreamId: number;
  /** The server's SETTINGS_INITIAL_WINDOW_SIZE. */
  peerInitialWindow: number;
  /** The write side: windows, frame size, control frames and acks. */
  readonly writer: {
    connWindow: number;
    maxFrameSize: number;
    control(frames: Uint8Array): void;
    ack(frame: Uint8Array): void;
    schedule(): void;
    activate(stream: H2ClientStream): void;
  };
  /** Largest header block we accept (twice our header list limit, compressed). */
  readonly maxHeaderBlock: number;
  /** Decodes a header block. */
  decode(block: Uint8Array): HeaderField[];
  /** Received DATA of `bytes`: credit the connection window. */
  connectionData(bytes: number): void;
  /** Resets stream `id` with `code` after a stream error. */
  resetStream(id: number, code: number, error: Error): void;
  /** The server's GOAWAY. */
  onGoaway(lastStreamId: number, code: number, debug: string): void;
}

/** A header block being assembled from HEADERS and CONTINUATION frames. */
interface PendingBlock {
  streamId: number;
  chunks: Uint8Array[];
  size: number;
  endStream: boolean;
}

/** Applies the server's frames to a client connection. */
export class ClientFrameRules {
  #conn: ClientRulesTarget;
  #block: PendingBlock | undefined;
  #settingsSeen = false;

  /** Rules acting on `conn`. */
  constructor(conn: ClientRulesTarget) {
    this.#conn = conn;
  }

  /** Handles one frame. @throws {Error} a connection error */
  onFrame(frame: Frame): void {
    try {
      this.#dispatch(frame);
    } catch (err) {
      if (!(err instanceof H2Error) || err.streamId === 0) throw err;
      this.#conn.resetStream(err.streamId, err.h2Code, err);
    }
  }

  #dispatch(frame: Frame): void {
    if (this.#block && frame.type !== FrameType.CONTINUATION) {
      throw connError(`frame type ${frame.type} inside a header block`);
    }
    if (!this.#settingsSeen && frame.type !== FrameType.SETTINGS) {
      throw connError("first frame is not SETTINGS");
    }
    validateFrame(frame);
    switch (frame.type) {
      case FrameType.DATA:
        return this.#onData(frame);
      case FrameType.HEADERS:
        return this.#onHeaders(frame);
      case FrameType.CONTINUATION:
        return this.#onContinuation(frame);
      case FrameType.RST_STREAM:
        this.#known(frame.streamId, "RST_STREAM");
        this.#conn.streams.get(frame.streamId)?.onPeerReset(readU32(frame.payload, 0));
        return;
      case FrameType.SETTINGS:
        return this.#onSettings(frame);
      case FrameType.PUSH_PROMISE:
        throw connError("PUSH_PROMISE though push is disabled");
      case FrameType.PING:
        if (!(frame.flags & Flag.ACK)) this.#conn.writer.ack(pingFrame(frame.payload, true));
        return;
      case FrameType.GOAWAY:
        return this.#conn.onGoaway(
          readU32(frame.payload, 0) & MAX_WINDOW,
          readU32(frame.payload, 4),
          new TextDecoder().decode(frame.payload.subarray(8, 208)),
        );
      case FrameType.WINDOW_UPDATE:
        return this.#onWindowUpdate(frame);
    }
  }

  /** Frames naming a stream we never opened are a connection error. */
  #known(id: number, what: string): void {
    if (id % 2 === 0 || id >= this.#conn.nextStreamId) {
      throw connError(`${what} on stream ${id}, which we did not open`);
    }
  }

  #onSettings(frame: Frame): void {
    if (frame.flags & Flag.ACK) return;
    this.#settingsSeen = true;
    const effect = peerSettings(parseSettings(frame.payload));
    const conn = this.#conn;
    if (effect.maxFrameSize !== undefined) conn.writer.maxFrameSize = effect.maxFrameSize;
    if (effect.initialWindow !== undefined) {
      const delta = effect.initialWindow - conn.peerInitialWindow;
      conn.peerInitialWindow = effect.initialWindow;
      for (const stream of conn.streams.values()) {
        stream.sendWindow += delta;
        if (stream.sendWindow > MAX_WINDOW) {
          throw new H2Error(ErrorCode.FLOW_CONTROL_ERROR, 0, "stream window above 2^31-1");
        }
        if (delta > 0 && stream.pendingBytes() > 0) conn.writer.activate(stream);
      }
    }
    conn.writer.control(settingsFrame());
  }

  #onWindowUpdate(frame: Frame): void {
    const increment = readU32(frame.payload, 0) & MAX_WINDOW;
    const id = frame.streamId;
    if (increment === 0) {
      if (id === 0) throw connError("WINDOW_UPDATE of 0");
      throw new H2Error(ErrorCode.PROTOCOL_ERROR, id, "WINDOW_UPDATE of 0");
    }
    if (id === 0) {
      const writer = this.#conn.writer;
      writer.connWindow += increment;
      if (writer.connWindow > MAX_WINDOW) {
        throw new H2Error(ErrorCode.FLOW_CONTROL_ERROR, 0, "connection window above 2^31-1");
      }
      writer.schedule();
      return;
    }
    this.#known(id, "WINDOW_UPDATE");
    this.#conn.streams.get(id)?.onWindowUpdate(increment);
  }

  #onData(frame: Frame): void {
    const conn = this.#conn;
    conn.connectionData(frame.payload.length);
    const data = unpadded(frame);
    const id = frame.streamId;
    this.#known(id, "DATA");
    const stream = conn.streams.get(id);
    // A stream we reset or finished: its late DATA only counted against the connection window.
    if (!stream) return;
    stream.onData(data, frame.payload.length, (frame.flags & Flag.END_STREAM) !== 0);
  }

  #onHeaders(frame: Frame): void {
    this.#known(frame.streamId, "HEADERS");
    const block: PendingBlock = {
      streamId: frame.streamId,
      chunks: [unpadded(frame)],
      size: 0,
      endStream: (frame.flags & Flag.END_STREAM) !== 0,
    };
    block.size = block.chunks[0]!.length;
    if (frame.flags & Flag.END_HEADERS) this.#complete(block);
    else {
      // Frames are views of a reused read buffer: a block kept for CONTINUATION is copied.
      block.chunks[0] = block.chunks[0]!.slice();
      this.#block = block;
    }
  }

  #onContinuation(frame: Frame): void {
    const block = this.#block;
    if (!block || block.streamId !== frame.streamId) {
      throw connError("CONTINUATION without its HEADERS");
    }
    block.chunks.push(frame.payload.slice());
    block.size += frame.payload.length;
    if (block.size > this.#conn.maxHeaderBlock) {
      throw new H2Error(ErrorCode.ENHANCE_YOUR_CALM, 0, "header block too large");
    }
    if (frame.flags & Flag.END_HEADERS) {
      this.#block = undefined;
      this.#complete(block);
    }
  }

  #complete(block: PendingBlock): void {
    const bytes = block.chunks.length === 1 ? block.chunks[0]! : join(block.chunks, block.size);
    // Decoded even for a forgotten stream: the HPACK table must follow every block.
    const fields = this.#conn.decode(bytes);
    this.#conn.streams.get(block.streamId)?.onHeaders(fields, block.endStream);
  }
}

function connError(message: string): H2Error {
  return new H2Error(ErrorCode.PROTOCOL_ERROR, 0, message);
}

function join(chunks: Uint8Array[], size: number): Uint8Array {
  const out = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}
