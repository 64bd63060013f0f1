/**
 * Connection plumbing that the native client (`client_connection.ts`) and server
 * (`connection.ts`) share: crediting our receive windows back with WINDOW_UPDATE
 * ({@linkcode WindowCredit}), keepalive PINGs ({@linkcode pingKeepalive}) and a bounded wait for
 * the last writes before a teardown ({@linkcode flushWithin}) and the teardown itself
 * ({@linkcode releaseConnection}).
 *
 * @module
 */

import type { Timers } from "@knp/core/timers";
import type { ByteSocket } from "../byte_socket.ts";
import { Keepalive } from "../keepalive.ts";
import type { KeepaliveOptions } from "../packet_stream.ts";
import { pingFrame, windowUpdateFrame } from "./frame.ts";
import type { LocalSettings } from "./settings.ts";
import type { WriteScheduler } from "./write_scheduler.ts";

/** Our receive windows, credited back as data is consumed: WINDOW_UPDATE once a quarter is due. */
export class WindowCredit {
  #writer: WriteScheduler;
  #local: LocalSettings;
  #connUnacked = 0;
  #streamUnacked = new Map<number, number>();

  /** Credits for `local`'s windows, sent through `writer`. */
  constructor(writer: WriteScheduler, local: LocalSettings) {
    this.#writer = writer;
    this.#local = local;
  }

  /** Received DATA of `bytes` (flow-controlled): credits the connection window back at once. */
  connection(bytes: number): void {
    this.#connUnacked += bytes;
    if (this.#connUnacked >= this.#local.connectionWindow / 4) {
      this.#writer.control(windowUpdateFrame(0, this.#connUnacked));
      this.#connUnacked = 0;
    }
  }

  /** The application consumed `bytes` of stream `id`. */
  stream(id: number, bytes: number): void {
    const due = (this.#streamUnacked.get(id) ?? 0) + bytes;
    if (due >= this.#local.streamWindow / 4) {
      this.#writer.control(windowUpdateFrame(id, due));
      this.#streamUnacked.delete(id);
    } else this.#streamUnacked.set(id, due);
  }

  /** Forgets what stream `id` had due (it is over). */
  forget(id: number): void {
    this.#streamUnacked.delete(id);
  }
}

/** A keepalive for `peer` that PINGs through `writer` (none without `options`). */
export function pingKeepalive(
  peer: string,
  options: KeepaliveOptions | undefined,
  writer: WriteScheduler,
  timers: Timers,
  expired: (error: Error) => void,
): Keepalive | undefined {
  if (!options) return undefined;
  let pings = 0;
  return new Keepalive(peer, options, {
    ping: () => {
      const data = new Uint8Array(8);
      new DataView(data.buffer).setUint32(4, ++pings);
      writer.control(pingFrame(data, false));
    },
    expired,
  }, timers);
}

/** Settles once `writer` flushed what it holds, or after `ms`, whichever is first. */
export async function flushWithin(
  writer: WriteScheduler,
  timers: Timers,
  ms: number,
): Promise<void> {
  let timer: number | undefined;
  const limit = new Promise<void>((resolve) => {
    timer = timers.setTimeout(resolve, ms);
  });
  await Promise.race([writer.flushed(), limit]);
  if (timer !== undefined) timers.clearTimeout(timer);
}

/** What a torn-down connection lets go of. */
export interface ConnectionParts {
  keepalive: Keepalive | undefined;
  writer: WriteScheduler;
  socket: ByteSocket;
}

/** Stops the keepalive and the writer, ends every stream with `end` (the map emptied first) and
 * closes the socket. */
export function releaseConnection<S>(
  parts: ConnectionParts,
  streams: Map<number, S>,
  end: (stream: S) => void,
): void {
  parts.keepalive?.stop();
  parts.writer.close();
  const open = [...streams.values()];
  streams.clear();
  for (const s of open) end(s);
  try {
    parts.socket.close();
  } catch { /* already closed */ }
}
