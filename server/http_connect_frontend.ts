/**
 * The HTTP-CONNECT frontend (`--mode=http-connect`): one client socket per tunnel, seen by the
 * server core as a {@linkcode PacketStream} — the same core that serves gRPC frontends.
 *
 * - `CONNECT host:port HTTP/1.1`: the target is the request-target (the Host header is ignored,
 *   but HTTP/1.1 requires one, as Go's server does).
 * - The request head is bounded in size (`maxHeaderBytes`, 431 beyond) and time
 *   (`headerTimeoutMs`, 408 then close), so a slow or huge request never holds resources.
 * - `HTTP/1.1 200 Connection Established\r\n\r\n` is written only after the agent's successful
 *   DIAL_RSP and before any tunneled byte: agent DATA can only follow the DIAL_RSP through the core.
 * - Bytes the client pipelined after the head are kept and sent first.
 * - A failed dial is answered with the status of the error taxonomy; the reason phrase and the body
 *   carry the reason, the kind, the server ID and the agent ID (see `http_connect_errors.ts`).
 * - A client that closes its socket while the dial is pending cancels the dial.
 * - While reading is paused (the far end takes no more bytes), the socket is probed every
 *   {@linkcode PAUSED_PROBE_MS}: a client that has gone away ends its tunnel at once.
 * - A tunnel cut from the far side (CLOSE_RSP with an error: the agent disconnected, the endpoint
 *   was reset) delivers what is queued, then resets the client's socket (TCP RST, where the socket
 *   can be reset) instead of closing it cleanly.
 *
 * @module
 */

import { closeRequest, dataPacket, dialRequest, type Packet, randomDialId } from "@knp/proto";
import type { ByteSocket } from "@knp/transport/byte_socket";
import { AdaptiveReadSize, SocketWriter } from "@knp/transport/byte_socket";
import { errorMessage, KnpError } from "@knp/core/errors";
import { type Logger, nullLogger } from "@knp/core/log";
import { DoneSignal, type PacketHandler, type PacketStream } from "@knp/transport/packet_stream";
import { dialFailure, HttpError, responseBytes } from "./http_connect_errors.ts";

export { dialFailure, HttpError } from "./http_connect_errors.ts";
export { parseConnectHead, validConnectTarget } from "./http_connect_head.ts";
import { headEnd, parseConnectHead } from "./http_connect_head.ts";

/** Limits of the HTTP-CONNECT frontend. */
export interface HttpConnectLimits {
  /** Largest request head accepted. @default 65536 */
  maxHeaderBytes?: number;
  /** Time allowed to send the whole request head. @default 10000 */
  headerTimeoutMs?: number;
  /** Bytes kept from a client that sends data before the tunnel is up. @default 262144 */
  maxEarlyBytes?: number;
  /**
   * An open tunnel whose reading stays paused (the far end takes none of the client's bytes) this
   * long is closed with an error; 0 = never. Over TCP it is also what ends a tunnel whose client
   * closed cleanly behind its unsent upload: that FIN waits behind the unread bytes, and the
   * client's kernel keeps the orphaned socket alive while our window stays shut. @default 300000
   */
  pausedTimeoutMs?: number;
  /** Where the frontend logs (debug records only). */
  logger?: Logger | undefined;
}

/** Largest read from the client; an idle connection's pending read holds only 1 KiB. */
const READ_SIZE = 256 * 1024;
/** Closing waits for queued bytes while the client keeps reading; this long without progress cuts it. */
const FLUSH_IDLE_MS = 5_000;
/**
 * While reading is paused (the far end is not taking bytes), how often the socket is probed with a
 * zero-byte write: on a Unix socket it fails with EPIPE once the client has closed, which a paused
 * reader cannot see behind the bytes still queued.
 */
export const PAUSED_PROBE_MS = 1_000;
const ESTABLISHED = new TextEncoder().encode("HTTP/1.1 200 Connection Established\r\n\r\n");
/** Decodes request heads: one shared decoder (one per request cost more than the parse). */
const HEAD_DECODER = new TextDecoder();

/**
 * A client socket that can also be aborted: reset (TCP RST) instead of a clean close, so a client
 * tells a cut connection from a complete one. Unix sockets have no reset; they just close.
 */
export type AbortableSocket = ByteSocket & { abort?: () => void };

type Phase = "head" | "dialing" | "open" | "closed";

/** One HTTP-CONNECT client socket as a {@linkcode PacketStream}. */
export class HttpConnectFrontend implements PacketStream {
  readonly peer: string;
  #socket: AbortableSocket;
  #writer: SocketWriter;
  #handler: PacketHandler | undefined;
  #limits: Required<Omit<HttpConnectLimits, "logger">>;
  #log: Logger;
  #serverId: string;
  #phase: Phase = "head";
  #dialId = 0n;
  #connectId = 0n;
  #early: Uint8Array[] = [];
  #earlyBytes = 0;
  #paused = false;
  #resume: (() => void) | undefined;
  #ended = false;
  #closing = false;
  #done = new DoneSignal();
  #headAborted = false;
  /** The request's User-Agent, once parsed. */
  userAgent = "";

  constructor(
    socket: AbortableSocket,
    peer: string,
    serverId: string,
    limits: HttpConnectLimits = {},
  ) {
    this.#socket = socket;
    this.peer = peer;
    this.#serverId = serverId;
    this.#limits = {
      maxHeaderBytes: limits.maxHeaderBytes ?? 64 * 1024,
      headerTimeoutMs: limits.headerTimeoutMs ?? 10_000,
      maxEarlyBytes: limits.maxEarlyBytes ?? 256 * 1024,
      pausedTimeoutMs: limits.pausedTimeoutMs ?? 300_000,
    };
    this.#log = limits.logger ?? nullLogger;
    this.#writer = new SocketWriter(socket, (err) => this.#end(asError(err)));
  }

  get bufferedBytes(): number {
    return this.#writer.bufferedBytes;
  }

  get closed(): boolean {
    return this.#closing || this.#ended;
  }

  get done(): Promise<Error | undefined> {
    return this.#done.promise;
  }

  /**
   * Reads and checks the request head. Resolves true when a dial should start; on a bad request
   * it answers, closes, and resolves false.
   */
  async readHead(): Promise<boolean> {
    // Start small (most heads are a few hundred bytes) and grow up to the limit.
    const limit = this.#limits.maxHeaderBytes + 1;
    let buf = new Uint8Array(Math.min(4096, limit));
    let length = 0;
    const timer = setTimeout(() => {
      this.abortHead(new HttpError(408, "Request Timeout", "request head not received in time"));
    }, this.#limits.headerTimeoutMs);
    try {
      while (true) {
        if (length === buf.length) {
          const bigger = new Uint8Array(Math.min(buf.length * 2, limit));
          bigger.set(buf);
          buf = bigger;
        }
        const n = await this.#socket.read(buf.subarray(length));
        if (this.#headAborted) return false;
        if (n === null) {
          this.#end();
          return false;
        }
        // Scan only the new bytes (and the 3 before them): a head sent in tiny pieces stays linear.
        const end = headEnd(buf, length + n, length - 3);
        length += n;
        if (end >= 0) {
          const head = HEAD_DECODER.decode(buf.subarray(0, end - 4));
          const request = parseConnectHead(head, buf.slice(end, length));
          this.userAgent = request.userAgent;
          this.#dialId = randomDialId();
          this.#phase = "dialing";
          if (request.rest.byteLength > 0) this.#keepEarly(request.rest);
          this.#target = request.target;
          this.#traceparent = request.traceparent;
          return true;
        }
        if (length > this.#limits.maxHeaderBytes) {
          throw new HttpError(431, "Request Header Fields Too Large", "request head too large");
        }
      }
    } catch (err) {
      if (!this.#headAborted) {
        if (err instanceof HttpError) this.#respondAndClose(err);
        else this.#end(asError(err));
      }
      return false;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Answers a client still sending its head (timeout, eviction) and closes. */
  abortHead(error: HttpError): void {
    if (this.#phase !== "head" || this.#headAborted) return;
    this.#headAborted = true;
    this.#respondAndClose(error);
  }

  #target = "";
  #traceparent: string | undefined;

  /** The requested "host:port". */
  get target(): string {
    return this.#target;
  }

  start(handler: PacketHandler): void {
    this.#handler = handler;
    if (this.#ended) return handler.onEnd();
    handler.onPacket(dialRequest(this.#target, this.#dialId, "tcp", this.#traceparent));
    this.#readLoop();
  }

  /** Packets from the core, turned into HTTP answers and raw bytes. */
  send(packet: Packet, onSent?: () => void): boolean {
    if (this.closed) return false;
    switch (packet.type) {
      case "DIAL_RSP": {
        const { error, connectId } = packet.dialResponse;
        if (error !== "") {
          this.#respondAndClose(dialFailure(error, this.#serverId));
          return false;
        }
        this.#connectId = connectId;
        this.#phase = "open";
        this.#writer.write(ESTABLISHED);
        for (const chunk of this.#early) this.#handler?.onPacket(dataPacket(connectId, chunk));
        this.#early = [];
        this.#resume?.();
        return true;
      }
      case "DATA":
        return this.#writer.write(packet.data.data, onSent);
      case "CLOSE_RSP": {
        // An error (the agent disconnected, the endpoint was reset) cuts the tunnel: the client
        // gets a reset after the bytes already queued, not an end that looks complete.
        const { error } = packet.closeResponse;
        this.close(error === "" ? undefined : new KnpError("TUNNEL_CLOSED", error));
        return false;
      }
      case "DIAL_CLS":
        this.#respondAndClose(
          dialFailure("the agent cancelled the dial [knp: kind=tunnel-closed]", this.#serverId),
        );
        return false;
      default:
        return true;
    }
  }

  onDrain(callback: () => void): void {
    this.#writer.onDrain(callback);
  }

  pause(): void {
    this.#paused = true;
  }

  resume(): void {
    this.#paused = false;
    this.#resume?.();
  }

  /**
   * Closes after flushing what is queued (bounded). With an error the connection was cut: the
   * socket is then aborted (reset) rather than closed cleanly. Idempotent.
   */
  close(error?: Error): void {
    if (this.#closing || this.#ended) return;
    this.#closing = true;
    this.#writer.flushed(FLUSH_IDLE_MS).then(() => this.#end(error, error !== undefined));
  }

  /** Waits for `resume()` while probing whether the client is still there. */
  async #waitPaused(): Promise<void> {
    let probes = 0;
    const limit = this.#phase === "open" ? this.#limits.pausedTimeoutMs : 0;
    const cut = limit > 0
      ? setTimeout(() => {
        if (this.closed) return;
        this.#end(
          new KnpError(
            "STALLED",
            `tunnel stalled: the far end took none of the client's bytes for ${limit} ms`,
          ),
          true,
        );
      }, limit)
      : undefined;
    const probe = setInterval(() => {
      if (this.#writer.bufferedBytes > 0 || this.closed) return;
      this.#log.debug(
        probes++ === 0
          ? "http-connect client paused; probing whether it is still there"
          : "http-connect client still paused",
        { peer: this.peer, connectID: this.#connectId, probes },
      );
      this.#socket.write(new Uint8Array(0)).catch((err) => {
        if (this.closed) return;
        this.#end(new KnpError("TUNNEL_CLOSED", `client went away: ${errorMessage(err)}`));
      });
    }, PAUSED_PROBE_MS);
    try {
      await new Promise<void>((resolve) => (this.#resume = resolve));
    } finally {
      clearInterval(probe);
      clearTimeout(cut);
      this.#resume = undefined;
    }
  }

  async #readLoop(): Promise<void> {
    const sizes = new AdaptiveReadSize(1024, READ_SIZE);
    try {
      while (!this.closed) {
        // Before the tunnel is up, read only to keep early bytes (bounded) and to see EOF.
        const waitForOpen = this.#phase === "dialing" &&
          this.#earlyBytes >= this.#limits.maxEarlyBytes;
        if (this.#paused || waitForOpen) {
          await this.#waitPaused();
          continue;
        }
        const buffer = sizes.buffer();
        const n = await this.#socket.read(buffer);
        if (this.closed) return;
        if (n === null) {
          // Client closed: cancel a pending dial, or close the connection through the agent.
          if (this.#phase === "open") this.#handler?.onPacket(closeRequest(this.#connectId));
          else this.#end();
          return;
        }
        sizes.filled(n, buffer.byteLength);
        // A fresh buffer per read: the DATA packet takes the bytes without a copy.
        const chunk = buffer.subarray(0, n);
        if (this.#phase === "open") this.#handler?.onPacket(dataPacket(this.#connectId, chunk));
        else this.#keepEarly(chunk);
      }
    } catch (err) {
      if (!this.closed) this.#end(asError(err));
    }
  }

  #keepEarly(chunk: Uint8Array): void {
    this.#early.push(chunk);
    this.#earlyBytes += chunk.byteLength;
  }

  #respondAndClose(error: HttpError): void {
    if (this.closed) return;
    this.#phase = "closed";
    this.#writer.write(responseBytes(error, this.#serverId));
    this.close();
  }

  #end(error?: Error, abort = false): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#phase = "closed";
    this.#resume?.();
    try {
      if (abort && this.#socket.abort) this.#socket.abort();
      else this.#socket.close();
    } catch { /* already closed */ }
    this.#done.settle(error);
    this.#handler?.onEnd(error);
  }
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new KnpError("TUNNEL_CLOSED", errorMessage(err));
}
