/**
 * {@linkcode LivenessStream}: the agent's own liveness check of one server stream, so a server
 * that vanished without closing its connections (node loss, a black-holed route, a stopped
 * process) is noticed in seconds rather than after the 1 h `--keepalive-time`.
 *
 * The probe is a packet both knp and upstream servers answer, so it works on every server and
 * link without a protocol change: an empty DATA for a connectID the agent never assigns
 * ({@linkcode PROBE_CONNECT_ID}) makes the server answer CLOSE_REQ for it ("missing frontend").
 * The answer is consumed here; the agent never sees it. Only a stream that received nothing for
 * `idleMs` is probed, and anything received after a probe counts as its answer.
 *
 * The probe rides the stream behind queued data, so a probe that goes unanswered while the send
 * queue moved (the peer is reading) or while the agent itself paused delivery counts as alive.
 *
 * @module
 */

import { dataPacket, type DecodedPacket, type Packet } from "@knp/proto";
import { KnpError } from "@knp/core/errors";
import { type Logger, nullLogger } from "@knp/core/log";
import { realTimers, type Timers } from "@knp/core/timers";
import type { PacketHandler, PacketStream } from "@knp/transport/packet_stream";

/** The connectID of liveness probes: the largest int64, never assigned by the agent. */
export const PROBE_CONNECT_ID = 0x7fff_ffff_ffff_ffffn;

/** When and how long to probe. */
export interface LivenessOptions {
  /** A stream that received nothing for this long is probed, in ms. */
  idleMs: number;
  /** A probe unanswered for this long ends the stream, in ms. */
  timeoutMs: number;
  /** How often the stream's state is checked (`--probe-interval`), in ms. */
  checkMs: number;
}

/** knp's defaults: probe after 10 s of silence, give up 5 s later, check every second. */
export const DEFAULT_LIVENESS: LivenessOptions = {
  idleMs: 10_000,
  timeoutMs: 5_000,
  checkMs: 1_000,
};

/** Whether `packet` is a server's answer to a liveness probe. */
export function isProbeAnswer(packet: DecodedPacket): boolean {
  return (packet.type === "CLOSE_REQ" && packet.closeRequest.connectId === PROBE_CONNECT_ID) ||
    (packet.type === "CLOSE_RSP" && packet.closeResponse.connectId === PROBE_CONNECT_ID);
}

/** A probe in flight: when it went out and what was queued then. */
interface Probe {
  sentAt: number;
  buffered: number;
  waiters: ((alive: boolean) => void)[];
}

/**
 * A {@linkcode PacketStream} that forwards to `inner` and watches it: it probes an idle server and
 * closes the stream with a `TIMEOUT` error (and calls `onDead`) when the server does not answer.
 */
export class LivenessStream implements PacketStream {
  readonly #inner: PacketStream;
  readonly #options: LivenessOptions | undefined;
  readonly #timers: Timers;
  readonly #onDead: (error: KnpError) => void;
  readonly #log: Logger;
  #lastReceived: number;
  #probe: Probe | undefined;
  #paused = false;
  #timer: number | undefined;
  #ended = false;

  /**
   * Watches `inner` with `options` (none: never probes by itself, {@linkcode probe} still works);
   * `logger` gets a debug record per answered probe.
   */
  constructor(
    inner: PacketStream,
    options: LivenessOptions | undefined,
    onDead: (error: KnpError) => void,
    timers: Timers = realTimers,
    logger: Logger = nullLogger,
  ) {
    this.#log = logger;
    this.#inner = inner;
    this.#options = options;
    this.#onDead = onDead;
    this.#timers = timers;
    this.#lastReceived = timers.now();
  }

  /** Starts delivery and the periodic check. */
  start(handler: PacketHandler): void {
    this.#inner.start({
      onPacket: (packet) => {
        const probe = this.#probe;
        this.#received();
        if (!isProbeAnswer(packet)) return handler.onPacket(packet);
        if (probe) {
          this.#log.debug("liveness probe answered", {
            ms: Math.round(this.#timers.now() - probe.sentAt),
          });
        }
      },
      onEnd: (error) => {
        this.#end();
        handler.onEnd(error);
      },
    });
    this.#schedule();
  }

  /**
   * Probes now (or joins the probe in flight): resolves `true` once anything arrives from the
   * server, `false` when nothing did within `timeoutMs` or the stream ended.
   */
  probe(timeoutMs: number): Promise<boolean> {
    if (this.#ended || this.#inner.closed) return Promise.resolve(false);
    const { promise, resolve } = Promise.withResolvers<boolean>();
    const probe = this.#sendProbe();
    probe.waiters.push(resolve);
    const timer = this.#timers.setTimeout(() => {
      const i = probe.waiters.indexOf(resolve);
      if (i < 0) return;
      probe.waiters.splice(i, 1);
      resolve(this.#progressed(probe));
    }, timeoutMs);
    return promise.finally(() => this.#timers.clearTimeout(timer));
  }

  send(packet: Packet, onSent?: () => void): boolean {
    return this.#inner.send(packet, onSent);
  }

  get bufferedBytes(): number {
    return this.#inner.bufferedBytes;
  }

  onDrain(callback: () => void): void {
    this.#inner.onDrain(callback);
  }

  pause(): void {
    this.#paused = true;
    this.#inner.pause();
  }

  resume(): void {
    this.#paused = false;
    this.#lastReceived = this.#timers.now();
    this.#inner.resume();
  }

  close(error?: Error): void {
    this.#end();
    this.#inner.close(error);
  }

  get closed(): boolean {
    return this.#inner.closed;
  }

  get done(): Promise<Error | undefined> {
    return this.#inner.done;
  }

  get peer(): string {
    return this.#inner.peer;
  }

  #received(): void {
    this.#lastReceived = this.#timers.now();
    const probe = this.#probe;
    this.#probe = undefined;
    for (const resolve of probe?.waiters ?? []) resolve(true);
  }

  /** Whether the stream showed life other than an answer since `probe` went out. */
  #progressed(probe: Probe): boolean {
    return this.#paused || this.#inner.bufferedBytes !== probe.buffered;
  }

  #sendProbe(): Probe {
    if (this.#probe) return this.#probe;
    const probe: Probe = {
      sentAt: this.#timers.now(),
      buffered: this.#inner.bufferedBytes,
      waiters: [],
    };
    this.#probe = probe;
    this.#inner.send(dataPacket(PROBE_CONNECT_ID, new Uint8Array(0)));
    return probe;
  }

  #schedule(): void {
    if (this.#options === undefined || this.#ended) return;
    this.#timer = this.#timers.setTimeout(() => this.#check(), this.#options.checkMs);
  }

  #check(): void {
    this.#timer = undefined;
    const options = this.#options;
    if (options === undefined || this.#ended) return;
    const now = this.#timers.now();
    const probe = this.#probe;
    if (probe === undefined) {
      if (!this.#paused && now - this.#lastReceived >= options.idleMs) this.#sendProbe();
    } else if (now - probe.sentAt >= options.timeoutMs) {
      if (this.#progressed(probe)) {
        // Alive but busy: start over with a fresh probe.
        this.#probe = undefined;
        this.#sendProbe();
      } else {
        const silentMs = Math.round(now - this.#lastReceived);
        const error = new KnpError(
          "TIMEOUT",
          `server ${this.#inner.peer} answered no liveness probe within ${options.timeoutMs} ms ` +
            `(silent for ${silentMs} ms)`,
        );
        this.#onDead(error);
        this.close(error);
        return;
      }
    }
    this.#schedule();
  }

  #end(): void {
    if (this.#ended) return;
    this.#ended = true;
    if (this.#timer !== undefined) this.#timers.clearTimeout(this.#timer);
    this.#timer = undefined;
    const probe = this.#probe;
    this.#probe = undefined;
    for (const resolve of probe?.waiters ?? []) resolve(false);
  }
}
