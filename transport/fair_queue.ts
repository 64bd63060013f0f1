/**
 * {@linkcode FairQueue}: the send queue of a link that many connections share, served fairly
 * across connections instead of first come, first served, so a small message of one connection
 * never waits behind the bulk backlog of others.
 *
 * Scheduling is deficit round robin in bytes (as Linux's fq_codel, without the AQM part): every
 * flow (a connection) with queued items is in one of two rotations. A flow that becomes active
 * joins the **new** rotation, which is served before the **old** one, with a credit of one
 * `quantum`; a flow that spends its credit moves to the end of the old rotation and earns another
 * quantum each time its turn comes round again. Items are never split, so a flow that sends one
 * large item owes it back (its credit goes negative) before its next turn. A flow whose queue
 * empties while it is in the new rotation moves to the old one (so it cannot come back as new at
 * once); one whose queue is empty when its old turn comes is forgotten. The effect: a connection
 * that sends little (an echo, a dial, a window update) is served first; bulk connections share
 * what is left in proportion to bytes.
 *
 * Unlike fq_codel's packets, items here are large (a 256 KiB read of a download is one DATA
 * packet), so one pass of the old rotation over 50 downloads can be 12 MiB long; a chatty flow
 * that emptied and sends again before its old turn comes would wait that long. So an empty flow
 * that still holds credit of its current turn goes back to the **new** rotation when an item
 * arrives: it spends now what it would have spent at its turn, so shares stay byte-fair. Credit
 * earned by rotating is only spendable once the flow's old turn has come (`waiting`), so a flow
 * cannot earn its way ahead by emptying often.
 *
 * {@linkcode packetFlow} names the flow of a knp packet: everything of one connection (dial
 * answer, data, close) is one flow, so per-connection order is kept.
 *
 * @module
 */

import type { Packet } from "@knp/proto";

/** Default credit a flow earns per turn, in bytes. */
export const DEFAULT_QUANTUM = 16 * 1024;

/** Flow of the packets that belong to no connection (DRAIN, unknown types). */
const CONTROL_FLOW = 0n;

/**
 * The flow a packet belongs to: its connection (`connectId`), or for the dial exchange before a
 * connection exists its dial ID (`random`). Packets of one connection always share a flow.
 */
export function packetFlow(packet: Packet): bigint {
  switch (packet.type) {
    case "DATA":
      return packet.data.connectId;
    case "DIAL_RSP":
      return packet.dialResponse.connectId || packet.dialResponse.random;
    case "CLOSE_REQ":
      return packet.closeRequest.connectId;
    case "CLOSE_RSP":
      return packet.closeResponse.connectId;
    case "KNP_WINDOW":
      return packet.knpWindow.connectId;
    case "DIAL_REQ":
      return packet.dialRequest.random;
    case "DIAL_CLS":
      return packet.closeDial.random;
    default:
      return CONTROL_FLOW;
  }
}

/** One flow's queue (items with their sizes) and its place in a rotation. */
class Flow<T> {
  readonly key: bigint;
  items: T[] = [];
  sizes: number[] = [];
  head = 0;
  deficit = 0;
  /** In the new rotation (else the old one). */
  isNew = true;
  /** Its credit was topped up at the end of the old rotation and its turn there has not come. */
  waiting = false;
  /** In a rotation; else idle, kept in the map only to be reused. */
  live = true;
  /** Next flow in the same rotation. */
  next: Flow<T> | undefined;
  /** Previous flow in the same rotation. */
  prev: Flow<T> | undefined;

  constructor(key: bigint) {
    this.key = key;
  }

  get empty(): boolean {
    return this.head === this.items.length;
  }

  push(item: T, bytes: number): void {
    this.items.push(item);
    this.sizes.push(bytes);
  }

  shift(): [T, number] {
    const i = this.head++;
    const item = this.items[i]!;
    const size = this.sizes[i]!;
    if (this.head === this.items.length) {
      this.items.length = 0;
      this.sizes.length = 0;
      this.head = 0;
    } else if (this.head >= 64 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head);
      this.sizes = this.sizes.slice(this.head);
      this.head = 0;
    }
    return [item, size];
  }
}

/** A singly linked rotation of flows. */
class Rotation<T> {
  first: Flow<T> | undefined;
  last: Flow<T> | undefined;

  append(flow: Flow<T>): void {
    flow.next = undefined;
    flow.prev = this.last;
    if (this.last) this.last.next = flow;
    else this.first = flow;
    this.last = flow;
  }

  /** Takes `flow` (a member) out. */
  remove(flow: Flow<T>): void {
    if (flow.prev) flow.prev.next = flow.next;
    else this.first = flow.next;
    if (flow.next) flow.next.prev = flow.prev;
    else this.last = flow.prev;
    flow.next = flow.prev = undefined;
  }
}

/** Idle flows kept for reuse before a sweep drops them (also while they are fewer than live). */
const MAX_IDLE_FLOWS = 256;

/**
 * A queue of items of many flows, served by deficit round robin in bytes.
 *
 * A flow that leaves the rotations stays in the queue's map, idle, until a sweep: a connection
 * that sends one message at a time (an echo, a request) would otherwise add and delete its map
 * entry per message, and V8 links each replaced hash table to its successor, so once one of them
 * is in the old generation every later table and the flows it holds survive young collections
 * and are promoted (measured on the server's agent link: ~120 KB per scavenge, every scavenge,
 * and scavenges 3–6× longer). Sweeps come once idle flows outnumber both the bound and the live
 * ones, so their cost per flow stays constant.
 */
export class FairQueue<T> {
  readonly #quantum: number;
  readonly #flows = new Map<bigint, Flow<T>>();
  readonly #new = new Rotation<T>();
  readonly #old = new Rotation<T>();
  #bytes = 0;
  #length = 0;
  /** Flows in the map and in no rotation. */
  #idle = 0;

  /** A queue whose flows earn `quantum` bytes of credit per turn. */
  constructor(quantum: number = DEFAULT_QUANTUM) {
    this.#quantum = quantum;
  }

  /** Bytes queued (the sizes given to {@linkcode push}). */
  get bytes(): number {
    return this.#bytes;
  }

  /** Items queued. */
  get length(): number {
    return this.#length;
  }

  /** Flows in a rotation (with items queued, or just emptied). */
  get flows(): number {
    return this.#flows.size - this.#idle;
  }

  /** Flows held: those in a rotation and the idle ones kept for reuse. */
  get held(): number {
    return this.#flows.size;
  }

  /** Queues `item` of `bytes` bytes in flow `key` (after the flow's earlier items). */
  push(key: bigint, item: T, bytes: number): void {
    let flow = this.#flows.get(key);
    if (!flow) {
      flow = new Flow<T>(key);
      this.#flows.set(key, flow);
      this.#join(flow);
    } else if (!flow.live) {
      this.#idle--;
      this.#join(flow);
    } else if (flow.empty && !flow.isNew && !flow.waiting && flow.deficit > 0) {
      // Credit of its current turn left: spend it now rather than after a whole pass.
      this.#old.remove(flow);
      flow.isNew = true;
      this.#new.append(flow);
    }
    flow.push(item, bytes);
    this.#bytes += bytes;
    this.#length++;
  }

  /** The next item by the schedule, or undefined when nothing is queued. */
  shift(): T | undefined {
    if (this.#length === 0) return undefined;
    for (;;) {
      const fromNew = this.#new.first !== undefined;
      const flow = fromNew ? this.#new.first! : this.#old.first!;
      if (!fromNew) flow.waiting = false;
      if (flow.deficit <= 0) {
        // Credit spent: another quantum, at the end of the old rotation, for its next turn.
        flow.deficit += this.#quantum;
        this.#rotate(flow, fromNew);
        flow.waiting = true;
        continue;
      }
      if (flow.empty) {
        // An emptied new flow waits one old turn before it can come back as new (fq_codel).
        if (fromNew && this.#old.first !== undefined) this.#rotate(flow, true);
        else {
          (fromNew ? this.#new : this.#old).remove(flow);
          this.#retire(flow);
        }
        continue;
      }
      const [item, size] = flow.shift();
      flow.deficit -= size;
      this.#bytes -= size;
      // Nothing left to be unfair to: forget the (all empty) flows.
      if (--this.#length === 0) this.#forget();
      return item;
    }
  }

  /** Takes every item out (in no particular order across flows) and forgets every flow. */
  clear(): T[] {
    const out: T[] = [];
    for (const flow of this.#flows.values()) {
      for (let i = flow.head; i < flow.items.length; i++) out.push(flow.items[i]!);
    }
    // Every flow goes with the map: no retiring (and sweeping) them one by one first.
    this.#flows.clear();
    this.#idle = 0;
    this.#new.first = this.#new.last = undefined;
    this.#old.first = this.#old.last = undefined;
    this.#bytes = 0;
    this.#length = 0;
    return out;
  }

  /** A flow (new, or idle) joins the new rotation with a quantum of credit. */
  #join(flow: Flow<T>): void {
    flow.live = true;
    flow.isNew = true;
    flow.waiting = false;
    flow.deficit = this.#quantum;
    this.#new.append(flow);
  }

  /** A flow out of its rotation becomes idle; a sweep drops idle flows once there are many. */
  #retire(flow: Flow<T>): void {
    flow.live = false;
    flow.next = flow.prev = undefined;
    this.#idle++;
    if (this.#idle > MAX_IDLE_FLOWS && this.#idle * 2 > this.#flows.size) {
      for (const [key, f] of this.#flows) if (!f.live) this.#flows.delete(key);
      this.#idle = 0;
    }
  }

  /** Every flow (all empty) leaves its rotation. */
  #forget(): void {
    this.#retireAll(this.#new);
    this.#retireAll(this.#old);
    this.#bytes = 0;
    this.#length = 0;
  }

  #retireAll(rotation: Rotation<T>): void {
    for (let flow = rotation.first; flow !== undefined;) {
      const next = flow.next;
      this.#retire(flow);
      flow = next;
    }
    rotation.first = rotation.last = undefined;
  }

  /** Moves the first flow of its rotation to the end of the old rotation. */
  #rotate(flow: Flow<T>, fromNew: boolean): void {
    (fromNew ? this.#new : this.#old).remove(flow);
    flow.isNew = false;
    this.#old.append(flow);
  }
}
