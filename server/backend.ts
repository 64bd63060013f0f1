/**
 * `Backend`: one agent stream, as the server sees it.
 *
 * @module
 */

import type { AgentIdentifiers } from "@knp/proto";
import type { Packet } from "@knp/proto";
import { SharedPause } from "@knp/core/backpressure";
import type { PacketStream } from "@knp/transport/packet_stream";

let nextBackendSeq = 0;

/**
 * Per-connection flow control negotiated with a knp agent (`knp-flow-control`): windows in bytes.
 */
export interface FlowControl {
  /** Bytes the server may send per connection before the agent grants more. */
  sendWindow: number;
  /** Bytes the agent may send per connection before the server grants more. */
  recvWindow: number;
}

/** One connected agent stream. */
export class Backend {
  /** The agent's id. */
  readonly agentId: string;
  /** What the agent advertised it serves. */
  readonly identifiers: AgentIdentifiers;
  /** The agent's packet stream. */
  readonly stream: PacketStream;
  /** Pauses this agent stream while a slow frontend drains (see SinkGuard). */
  readonly pause: SharedPause;
  /** Distinguishes two streams of the same agent ID. */
  readonly seq = ++nextBackendSeq;
  /** Negotiated flow control; undefined for upstream agents. */
  readonly flow: FlowControl | undefined;
  #draining = false;
  #open = 0;

  /** An agent stream, with flow control when negotiated. */
  constructor(
    agentId: string,
    identifiers: AgentIdentifiers,
    stream: PacketStream,
    flow?: FlowControl,
  ) {
    this.agentId = agentId;
    this.flow = flow;
    this.identifiers = identifiers;
    this.stream = stream;
    this.pause = new SharedPause(stream);
  }

  /** The agent said it is shutting down: prefer others for new dials. */
  get draining(): boolean {
    return this.#draining;
  }

  /** Marks the agent as draining. */
  setDraining(): void {
    this.#draining = true;
  }

  /**
   * Connections this server routed to the agent that are still open (pending dials, established
   * and closing connections): the load the proxy strategies compare.
   */
  get openConnections(): number {
    return this.#open;
  }

  /** Counts a dial routed to this agent; `closed()` uncounts it when its frontend stream ends. */
  opened(): void {
    this.#open++;
  }

  /** Uncounts a connection of this agent whose frontend stream ended. */
  closed(): void {
    if (this.#open > 0) this.#open--;
  }

  /** Sends `packet` to the agent; false means the stream is full. */
  send(packet: Packet): boolean {
    return this.stream.send(packet);
  }

  /** `agentId#seq`, for logs. */
  toString(): string {
    return `${this.agentId}#${this.seq}`;
  }
}
