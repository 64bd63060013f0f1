/**
 * `TunnelConn`: one dial over one frontend stream, as the client sees it — a state machine that
 * sends DIAL_REQ, waits (bounded) for DIAL_RSP, then exposes the connection with `Deno.Conn`'s
 * shape: `readable`, `writable`, `close()`, `[Symbol.asyncDispose]`.
 *
 * Backpressure: `readable` holds at most `readHighWater` bytes before the stream is paused (the
 * transport's flow control then pushes back on the sender); `writable` waits for the stream to
 * drain before accepting more.
 *
 * The protocol has no half-close: closing `writable` only ends local writes; `close()` ends the
 * connection (CLOSE_REQ, then CLOSE_RSP within `closeTimeoutMs`).
 *
 * A connection cut from the far side — a CLOSE_RSP with an error, such as `agent <id>
 * disconnected` when the agent dies mid-transfer — errors `readable` with a `KnpError`
 * (`TUNNEL_CLOSED`) naming the cause, so a short read never looks like a complete one.
 *
 * @module
 */

import {
  closeDial,
  closeRequest,
  dataPacket,
  type DecodedPacket,
  dialRequest,
  randomDialId,
} from "@knp/proto";
import { DialError, errorMessage, KnpError } from "@knp/core/errors";
import { parseDialError } from "@knp/core/dial_errors";
import { startDialSpan } from "@knp/transport/dial_trace";
import type { PacketStream } from "@knp/transport/packet_stream";

/** Upstream client's hard backstop for a dial. */
export const DIAL_BACKSTOP_MS = 30_000;
/** Upstream client's wait for CLOSE_RSP. */
export const CLOSE_TIMEOUT_MS = 10_000;
/** Largest DATA payload this client sends. */
export const MAX_WRITE_CHUNK = 64 * 1024;

/** Options of a single dial. */
export interface DialOptions {
  /** Cancels a pending dial (sends DIAL_CLS). */
  signal?: AbortSignal;
  /** Dial deadline. @default 30000 */
  timeoutMs?: number;
  /** Bytes buffered in `readable` before the stream is paused. @default 1 MiB */
  readHighWater?: number;
  /** How long `close()` waits for the CLOSE_RSP before giving up. @default 10000 */
  closeTimeoutMs?: number;
}

type State = "dialing" | "open" | "closing" | "closed";

/** A connection through the tunnel. */
export class TunnelConn implements AsyncDisposable {
  /** The "host:port" that was dialed. */
  readonly address: string;
  /** The dial's id (the DIAL_REQ's `random`). */
  readonly dialId: bigint;
  /** Bytes from the remote end; ends when the connection closes. */
  readonly readable: ReadableStream<Uint8Array>;
  /** Bytes to the remote end. The protocol has no half-close: `close()` ends the connection. */
  readonly writable: WritableStream<Uint8Array>;
  /** Resolves when the connection is fully closed (CLOSE_RSP, timeout or tunnel end). */
  readonly closed: Promise<void>;
  #connectId = 0n;
  #stream: PacketStream;
  #state: State = "dialing";
  #controller!: ReadableStreamDefaultController<Uint8Array>;
  #dial = Promise.withResolvers<void>();
  #closedResolvers = Promise.withResolvers<void>();
  #onBytes: ((direction: "sent" | "received", count: number) => void) | undefined;
  #closeTimeoutMs: number;
  #closeTimer: ReturnType<typeof setTimeout> | undefined;
  #closeError = "";
  #onFinished: () => void;

  /** @internal Use `Tunnel.dial()`. */
  constructor(
    stream: PacketStream,
    address: string,
    options: DialOptions,
    onFinished: () => void,
    onBytes?: (direction: "sent" | "received", count: number) => void,
  ) {
    this.#stream = stream;
    this.#onBytes = onBytes;
    this.address = address;
    this.dialId = randomDialId();
    this.#closeTimeoutMs = options.closeTimeoutMs ?? CLOSE_TIMEOUT_MS;
    this.#onFinished = onFinished;
    this.closed = this.#closedResolvers.promise;
    this.#dial.promise.catch(() => {});
    this.readable = new ReadableStream<Uint8Array>({
      start: (controller) => {
        this.#controller = controller;
      },
      pull: () => stream.resume(),
      cancel: () => this.close(),
    }, new ByteLengthQueuingStrategy({ highWaterMark: options.readHighWater ?? 1 << 20 }));
    this.writable = new WritableStream<Uint8Array>({
      write: (chunk) => this.#write(chunk),
    });
  }

  /** The agent-assigned connection ID (0 until the dial succeeds). */
  get connectId(): bigint {
    return this.#connectId;
  }

  /** Error text of the agent's CLOSE_RSP, if it had one. */
  get closeError(): string {
    return this.#closeError;
  }

  /** @internal Sends DIAL_REQ and resolves when the dial succeeds. */
  async dial(protocol: string, options: DialOptions): Promise<void> {
    const timeoutMs = options.timeoutMs ?? DIAL_BACKSTOP_MS;
    const timer = setTimeout(
      () => this.#failDial(new DialError("dial timeout, backstop", "timeout"), true),
      timeoutMs,
    );
    const onAbort = () =>
      this.#failDial(
        new DialError("dial timeout, context", "context", { cause: options.signal?.reason }),
        true,
      );
    if (options.signal?.aborted) onAbort();
    else options.signal?.addEventListener("abort", onAbort, { once: true });
    this.#stream.start({
      onPacket: (p) => this.#onPacket(p),
      onEnd: (error) => this.#onEnd(error),
    });
    // Traced when OpenTelemetry is on (OTEL_DENO=true): the child of the caller's active span.
    const span = startDialSpan("knp.client.dial", {
      kind: "client",
      attributes: { "knp.address": this.address, "knp.dial_id": this.dialId },
    });
    this.#stream.send(dialRequest(this.address, this.dialId, protocol, span.traceparent));
    try {
      await this.#dial.promise;
      span.set({ "knp.connect_id": this.#connectId });
      span.end();
    } catch (err) {
      span.end(errorMessage(err));
      throw err;
    } finally {
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
    }
  }

  #failDial(error: Error, cancel: boolean): void {
    if (this.#state !== "dialing") return;
    if (cancel) this.#stream.send(closeDial(this.dialId));
    this.#dial.reject(error);
    this.#finish(error);
  }

  #onPacket(packet: DecodedPacket): void {
    switch (packet.type) {
      case "DIAL_RSP": {
        const { random, error, connectId } = packet.dialResponse;
        if (this.#state !== "dialing" || random !== this.dialId) {
          // Upstream closes the tunnel on an unknown dial response.
          return this.#finish(new KnpError("PROTOCOL", `unexpected DIAL_RSP for dial ${random}`));
        }
        if (error !== "") {
          const info = parseDialError(error);
          const where = [
            info.agentId && `agent ${info.agentId}`,
            info.serverId && `server ${info.serverId}`,
          ]
            .filter(Boolean).join(", ");
          const message = where ? `${info.message} (${where})` : info.message;
          return this.#failDial(new DialError(message, "endpoint", info), false);
        }
        this.#connectId = connectId;
        this.#state = "open";
        this.#dial.resolve();
        return;
      }
      case "DIAL_CLS":
        if (this.#state === "dialing") {
          return this.#failDial(new DialError("dial closed", "dialclosed"), false);
        }
        return this.#finish(new KnpError("PROTOCOL", "DIAL_CLS after dial finished"));
      case "DATA": {
        const id = packet.data.connectId;
        if (id === 0n) return;
        if (id !== this.#connectId) {
          this.#stream.send(closeRequest(id));
          return;
        }
        if (this.#state !== "open" && this.#state !== "closing") return;
        try {
          this.#controller.enqueue(packet.data.data);
        } catch {
          return; // the reader cancelled; bytes are dropped
        }
        this.#onBytes?.("received", packet.data.data.byteLength);
        if ((this.#controller.desiredSize ?? 1) <= 0) this.#stream.pause();
        return;
      }
      case "CLOSE_RSP": {
        if (packet.closeResponse.connectId !== this.#connectId) return;
        const { error } = packet.closeResponse;
        this.#closeError = error;
        // Closed from the far side with an error (agent gone, endpoint reset): the bytes read so
        // far are not the whole stream, so `readable` errors instead of ending.
        if (error === "" || this.#state === "closing") return this.#finish();
        return this.#finish(
          new KnpError("TUNNEL_CLOSED", `connection to ${this.address} was cut: ${error}`),
        );
      }
    }
  }

  #onEnd(error?: Error): void {
    if (this.#state === "dialing") {
      return this.#failDial(
        new DialError(
          error ? `tunnel closed: ${errorMessage(error)}` : "tunnel closed",
          "tunnelclosed",
          {
            cause: error,
          },
        ),
        false,
      );
    }
    if (this.#state === "closed") return;
    this.#finish(
      this.#state === "closing" ? undefined : new KnpError(
        "TUNNEL_CLOSED",
        error
          ? `tunnel closed: ${errorMessage(error)}`
          : "tunnel closed before the connection was closed",
        { cause: error },
      ),
    );
  }

  async #write(chunk: Uint8Array): Promise<void> {
    for (let off = 0; off < chunk.byteLength; off += MAX_WRITE_CHUNK) {
      if (this.#state !== "open") {
        throw new KnpError("TUNNEL_CLOSED", `connection to ${this.address} is closed`);
      }
      // Copy: the caller may reuse its buffer once write() resolves.
      const piece = chunk.slice(off, off + MAX_WRITE_CHUNK);
      const queued = this.#stream.send(dataPacket(this.#connectId, piece));
      this.#onBytes?.("sent", piece.byteLength);
      if (!queued) await new Promise<void>((resolve) => this.#stream.onDrain(resolve));
    }
  }

  /** Closes the connection: CLOSE_REQ, then wait for CLOSE_RSP (bounded). Idempotent. */
  close(): void {
    if (this.#state === "open") {
      this.#state = "closing";
      this.#stream.send(closeRequest(this.#connectId));
      this.#closeTimer = setTimeout(() => this.#finish(), this.#closeTimeoutMs);
    } else if (this.#state === "dialing") {
      this.#failDial(new DialError("dial cancelled by close", "context"), true);
    }
  }

  /** The single teardown path. */
  #finish(error?: Error): void {
    if (this.#state === "closed") return;
    const wasDialing = this.#state === "dialing";
    this.#state = "closed";
    if (this.#closeTimer !== undefined) clearTimeout(this.#closeTimer);
    if (wasDialing) this.#dial.reject(error ?? new DialError("tunnel closed", "tunnelclosed"));
    try {
      if (error) this.#controller.error(error);
      else this.#controller.close();
    } catch { /* already closed */ }
    this.#stream.close();
    this.#onFinished();
    this.#closedResolvers.resolve();
  }

  /** Closes the connection and waits until it is closed. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
    await this.closed;
  }
}
