/**
 * SETTINGS of a native HTTP/2 server connection: what it announces (large windows, its frame and
 * header list limits) and the checks and effects of the peer's SETTINGS (RFC 9113 §6.5.2).
 *
 * @module
 */

import { DEFAULT_MAX_FRAME_SIZE, ErrorCode, H2Error, MAX_MAX_FRAME_SIZE } from "./frame.ts";
import { MAX_WINDOW, Setting } from "./frame.ts";

/** Default stream window we announce: 8 MiB. */
export const DEFAULT_STREAM_WINDOW = 8 * 1024 * 1024;
/** Default connection window we open: 16 MiB. */
export const DEFAULT_CONNECTION_WINDOW = 16 * 1024 * 1024;
/** Default largest header list we accept. */
export const DEFAULT_MAX_HEADER_LIST = 64 * 1024;

/** Limits of our side of a connection. */
export interface LocalSettings {
  /** SETTINGS_INITIAL_WINDOW_SIZE we announce. */
  streamWindow: number;
  /** Connection window we open with a WINDOW_UPDATE. */
  connectionWindow: number;
  /** SETTINGS_MAX_FRAME_SIZE we announce. */
  maxFrameSize: number;
  /** SETTINGS_MAX_HEADER_LIST_SIZE we announce (and enforce). */
  maxHeaderListSize: number;
}

/** Fills defaults. @throws {RangeError} for a value HTTP/2 cannot carry */
export function localSettings(partial: Partial<LocalSettings> = {}): LocalSettings {
  const s: LocalSettings = {
    streamWindow: partial.streamWindow ?? DEFAULT_STREAM_WINDOW,
    connectionWindow: partial.connectionWindow ?? DEFAULT_CONNECTION_WINDOW,
    maxFrameSize: partial.maxFrameSize ?? DEFAULT_MAX_FRAME_SIZE,
    maxHeaderListSize: partial.maxHeaderListSize ?? DEFAULT_MAX_HEADER_LIST,
  };
  if (!(s.streamWindow >= 1 && s.streamWindow <= MAX_WINDOW)) {
    throw new RangeError(`stream window ${s.streamWindow}`);
  }
  if (!(s.connectionWindow >= 65_535 && s.connectionWindow <= MAX_WINDOW)) {
    throw new RangeError(`connection window ${s.connectionWindow}`);
  }
  if (!(s.maxFrameSize >= DEFAULT_MAX_FRAME_SIZE && s.maxFrameSize <= MAX_MAX_FRAME_SIZE)) {
    throw new RangeError(`max frame size ${s.maxFrameSize}`);
  }
  return s;
}

/** The SETTINGS we send first. */
export function announced(s: LocalSettings): Map<number, number> {
  const map = new Map<number, number>([
    [Setting.INITIAL_WINDOW_SIZE, s.streamWindow],
    [Setting.MAX_HEADER_LIST_SIZE, s.maxHeaderListSize],
  ]);
  if (s.maxFrameSize !== DEFAULT_MAX_FRAME_SIZE) map.set(Setting.MAX_FRAME_SIZE, s.maxFrameSize);
  return map;
}

/** What the peer's SETTINGS change on our sending side. */
export interface PeerSettingsEffect {
  /** New initial stream window, when announced. */
  initialWindow?: number | undefined;
  /** New largest frame we may send, when announced. */
  maxFrameSize?: number | undefined;
}

/**
 * Checks the peer's SETTINGS and returns their effects (the last value of a repeated id wins).
 * @throws {H2Error} a connection error for an invalid value
 */
export function peerSettings(pairs: [number, number][]): PeerSettingsEffect {
  const effect: PeerSettingsEffect = {};
  for (const [id, value] of pairs) {
    switch (id) {
      case Setting.ENABLE_PUSH:
        if (value > 1) throw new H2Error(ErrorCode.PROTOCOL_ERROR, 0, `ENABLE_PUSH ${value}`);
        break;
      case Setting.INITIAL_WINDOW_SIZE:
        if (value > MAX_WINDOW) {
          throw new H2Error(ErrorCode.FLOW_CONTROL_ERROR, 0, `INITIAL_WINDOW_SIZE ${value}`);
        }
        effect.initialWindow = value;
        break;
      case Setting.MAX_FRAME_SIZE:
        if (value < DEFAULT_MAX_FRAME_SIZE || value > MAX_MAX_FRAME_SIZE) {
          throw new H2Error(ErrorCode.PROTOCOL_ERROR, 0, `MAX_FRAME_SIZE ${value}`);
        }
        effect.maxFrameSize = value;
        break;
    }
  }
  return effect;
}
