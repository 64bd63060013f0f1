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
 * What both ends do alike (SETTINGS, WINDOW_UPDATE, PING, header blocks) is `frame_common.ts`.
 *
 * @module
 */

import type { Frame } from "./frame.ts";
import { ErrorCode, Flag, FrameType, H2Error, MAX_WINDOW } from "./frame.ts";
import { readU32, unpadded } from "./frame.ts";
import type { HeaderField } from "./hpack.ts";
import type { H2ClientStream } from "./client_stream.ts";
import { answerPing, applyPeerSettings, beginBlock, blockBytes } from "./frame_common.ts";
import { checkFrame, resetOrThrow } from "./frame_common.ts";
import { continueBlock, creditConnectionWindow, type HeaderBlock } from "./frame_common.ts";
import { type RulesWriter, windowIncrement } from "./frame_common.ts";

/** What the rules act on: the client connection's state. */
export interface ClientRulesTarget {
  /** Open streams by id. */
  readonly streams: Map<number, H2ClientStream>;
  /** The next stream id we would use (ids below it were ours). */
  readonly nextStreamId: number;
  /** The server's SETTINGS_INITIAL_WINDOW_SIZE. */
  peerInitialWindow: number;
  /** The write side: windows, frame size, control frames and acks. */
  readonly writer: RulesWriter & { activate(stream: H2ClientStream): void };
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

/** Applies the server's frames to a client connection. */
export class ClientFrameRules {
  #conn: ClientRulesTarget;
  #block: HeaderBlock | undefined;
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
      resetOrThrow(err, this.#conn);
    }
  }

  #dispatch(frame: Frame): void {
    checkFrame(frame, this.#block !== undefined, this.#settingsSeen);
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
        return answerPing(frame, this.#conn.writer);
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
    const writer = this.#conn.writer;
    applyPeerSettings(frame, this.#conn, (stream) => writer.activate(stream));
  }

  #onWindowUpdate(frame: Frame): void {
    const increment = windowIncrement(frame);
    const id = frame.streamId;
    if (id === 0) return creditConnectionWindow(this.#conn.writer, increment);
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
    const block = beginBlock(frame);
    if (frame.flags & Flag.END_HEADERS) this.#complete(block);
    else this.#block = block;
  }

  #onContinuation(frame: Frame): void {
    const block = continueBlock(this.#block, frame, this.#conn.maxHeaderBlock);
    if (!block) return;
    this.#block = undefined;
    this.#complete(block);
  }

  #complete(block: HeaderBlock): void {
    // Decoded even for a forgotten stream: the HPACK table must follow every block.
    const fields = this.#conn.decode(blockBytes(block));
    this.#conn.streams.get(block.streamId)?.onHeaders(fields, block.endStream);
  }
}

function connError(message: string): H2Error {
  return new H2Error(ErrorCode.PROTOCOL_ERROR, 0, message);
}
