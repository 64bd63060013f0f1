/**
 * Frame rules that are the same for both ends of a native connection (RFC 9113 §5, §6): frame
 * order and validity ({@linkcode checkFrame}), stream errors ({@linkcode resetOrThrow}), the peer's
 * SETTINGS ({@linkcode applyPeerSettings}), WINDOW_UPDATE ({@linkcode windowIncrement},
 * {@linkcode creditConnectionWindow}), PING answers ({@linkcode answerPing}) and header blocks
 * assembled across CONTINUATION ({@linkcode beginBlock}, {@linkcode continueBlock},
 * {@linkcode blockBytes}). The role-specific rules live in `frame_rules.ts` (server) and
 * `client_frames.ts` (client).
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
import { peerSettings } from "./settings.ts";
import type { DataSource } from "./write_scheduler.ts";

/**
 * Checks a frame before its rules: nothing but CONTINUATION inside a header block (`inBlock`),
 * SETTINGS first (until `settingsSeen`), and the frame's own validity.
 * @throws {H2Error} a connection error (or a stream error from `validateFrame`)
 */
export function checkFrame(frame: Frame, inBlock: boolean, settingsSeen: boolean): void {
  if (inBlock && frame.type !== FrameType.CONTINUATION) {
    throw new H2Error(
      ErrorCode.PROTOCOL_ERROR,
      0,
      `frame type ${frame.type} inside a header block`,
    );
  }
  if (!settingsSeen && frame.type !== FrameType.SETTINGS) {
    throw new H2Error(ErrorCode.PROTOCOL_ERROR, 0, "first frame is not SETTINGS");
  }
  validateFrame(frame);
}

/** Resets the stream of a stream error through `conn`; rethrows anything else. */
export function resetOrThrow(
  err: unknown,
  conn: { resetStream(id: number, code: number, error: Error): void },
): void {
  if (!(err instanceof H2Error) || err.streamId === 0) throw err;
  conn.resetStream(err.streamId, err.h2Code, err);
}

/** The write side a rule acts on. */
export interface RulesWriter {
  connWindow: number;
  maxFrameSize: number;
  control(frames: Uint8Array): void;
  ack(frame: Uint8Array): void;
  schedule(): void;
}

/** What the peer's SETTINGS change: the write side and the send windows of the open streams. */
export interface SettingsTarget<S extends DataSource> {
  readonly streams: Map<number, S>;
  peerInitialWindow: number;
  readonly writer: RulesWriter;
}

/** Applies the peer's SETTINGS (not an ACK) and acknowledges them. @throws {H2Error} */
export function applyPeerSettings<S extends DataSource>(
  frame: Frame,
  conn: SettingsTarget<S>,
  activate: (stream: S) => void,
): void {
  const effect = peerSettings(parseSettings(frame.payload));
  if (effect.maxFrameSize !== undefined) conn.writer.maxFrameSize = effect.maxFrameSize;
  if (effect.initialWindow !== undefined) {
    const delta = effect.initialWindow - conn.peerInitialWindow;
    conn.peerInitialWindow = effect.initialWindow;
    for (const stream of conn.streams.values()) {
      stream.sendWindow += delta;
      if (stream.sendWindow > MAX_WINDOW) {
        throw new H2Error(ErrorCode.FLOW_CONTROL_ERROR, 0, "stream window above 2^31-1");
      }
      if (delta > 0 && stream.pendingBytes() > 0) activate(stream);
    }
  }
  conn.writer.control(settingsFrame());
}

/** A WINDOW_UPDATE's increment. @throws {H2Error} for 0 (a stream or connection error) */
export function windowIncrement(frame: Frame): number {
  const increment = readU32(frame.payload, 0) & MAX_WINDOW;
  if (increment === 0) {
    throw new H2Error(ErrorCode.PROTOCOL_ERROR, frame.streamId, "WINDOW_UPDATE of 0");
  }
  return increment;
}

/** Grows the connection's send window. @throws {H2Error} when it would pass 2^31-1 */
export function creditConnectionWindow(writer: RulesWriter, increment: number): void {
  writer.connWindow += increment;
  if (writer.connWindow > MAX_WINDOW) {
    throw new H2Error(ErrorCode.FLOW_CONTROL_ERROR, 0, "connection window above 2^31-1");
  }
  writer.schedule();
}

/** Answers a PING (not an ACK) ahead of queued frames. */
export function answerPing(frame: Frame, writer: RulesWriter): void {
  if (!(frame.flags & Flag.ACK)) writer.ack(pingFrame(frame.payload, true));
}

/** A header block being assembled from HEADERS and CONTINUATION frames. */
export interface HeaderBlock {
  streamId: number;
  chunks: Uint8Array[];
  size: number;
  endStream: boolean;
  /** A stream error found in the HEADERS frame, thrown once the block was decoded. */
  error: H2Error | undefined;
}

/** The block a HEADERS frame begins; complete when the frame has END_HEADERS. */
export function beginBlock(frame: Frame, error?: H2Error): HeaderBlock {
  const first = unpadded(frame);
  const block: HeaderBlock = {
    streamId: frame.streamId,
    chunks: [first],
    size: first.length,
    endStream: (frame.flags & Flag.END_STREAM) !== 0,
    error,
  };
  // Frames are views of a reused read buffer: a block kept for CONTINUATION is copied.
  if (!(frame.flags & Flag.END_HEADERS)) block.chunks[0] = first.slice();
  return block;
}

/**
 * Adds a CONTINUATION frame to `block`; returns the block once complete, else undefined.
 * @throws {H2Error} a connection error without a block of its stream, or past `maxBytes`
 */
export function continueBlock(
  block: HeaderBlock | undefined,
  frame: Frame,
  maxBytes: number,
): HeaderBlock | undefined {
  if (!block || block.streamId !== frame.streamId) {
    throw new H2Error(ErrorCode.PROTOCOL_ERROR, 0, "CONTINUATION without its HEADERS");
  }
  block.chunks.push(frame.payload.slice());
  block.size += frame.payload.length;
  if (block.size > maxBytes) {
    throw new H2Error(ErrorCode.ENHANCE_YOUR_CALM, 0, "header block too large");
  }
  return frame.flags & Flag.END_HEADERS ? block : undefined;
}

/** The bytes of a complete block. */
export function blockBytes(block: HeaderBlock): Uint8Array {
  if (block.chunks.length === 1) return block.chunks[0]!;
  const out = new Uint8Array(block.size);
  let at = 0;
  for (const c of block.chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}
