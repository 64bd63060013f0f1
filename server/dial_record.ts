/**
 * What the dial explainer keeps of one dial and its connection ({@linkcode DialRecord}: who asked,
 * the policy decision, the agent chosen and why, the agent's answer, first bytes, bytes, the close
 * and its reason, with a timeline), its JSON form ({@linkcode dialJson}), and the bounded ring
 * they live in ({@linkcode Ring}: the newest `capacity` entries, oldest evicted first).
 *
 * ```ts
 * const ring = new Ring<number>(2);
 * ring.push(1); ring.push(2); ring.push(3);
 * console.log(ring.newestFirst()); // [3, 2]
 * ```
 *
 * @module
 */

/** A fixed-capacity ring: `push` evicts (and returns) the oldest entry once full. */
export class Ring<T> {
  readonly #items: (T | undefined)[];
  #next = 0;
  #size = 0;
  #pushed = 0;

  /** A ring of `capacity` (at least 1) entries. */
  constructor(readonly capacity: number) {
    this.#items = new Array(Math.max(1, capacity));
  }

  /** Entries held. */
  get size(): number {
    return this.#size;
  }

  /** Adds `item`; returns the entry it evicted, if the ring was full. */
  push(item: T): T | undefined {
    const evicted = this.#size === this.#items.length ? this.#items[this.#next] : undefined;
    this.#items[this.#next] = item;
    this.#next = (this.#next + 1) % this.#items.length;
    this.#size = Math.min(this.#size + 1, this.#items.length);
    this.#pushed++;
    return evicted;
  }

  /** Entries pushed so far: the number the next `push` gives its entry is this plus one. */
  get pushed(): number {
    return this.#pushed;
  }

  /** The `n`-th entry pushed (from 1), while the ring still holds it. */
  nth(n: number): T | undefined {
    if (!Number.isInteger(n) || n > this.#pushed || n <= this.#pushed - this.#size) {
      return undefined;
    }
    return this.#items[(n - 1) % this.#items.length];
  }

  /** The entries, newest first (at most `limit`). */
  newestFirst(limit = Infinity): T[] {
    const out: T[] = [];
    const n = this.#items.length;
    for (let i = 1; i <= this.#size && out.length < limit; i++) {
      out.push(this.#items[(this.#next - i + n) % n]!);
    }
    return out;
  }
}

/** Where a dial is in its life, as the explainer saw it. */
export type DialPhase = "requested" | "pending" | "established" | "failed" | "closed";

/** One step of a dial's timeline: milliseconds since its DIAL_REQ arrived, a name, details. */
export interface TimelineStep {
  /** Milliseconds since the DIAL_REQ arrived. */
  ms: number;
  /** What happened, e.g. `dial-requested`, `agent-chosen`, `dial-response`, `closed`. */
  event: string;
  /** What the step knows (strings and numbers). */
  detail?: Record<string, unknown>;
}

/** The most timeline steps a record keeps (a dial has about ten). */
const MAX_STEPS = 32;

/** What the explainer keeps of one dial (mutable while the dial lives). */
export class DialRecord {
  /** The frontend's dial ID (`random`). */
  readonly dialId: bigint;
  /** The address dialed. */
  readonly address: string;
  /** The frontend's peer (address or `uds`). */
  readonly peer: string;
  /** The frontend's `user-agent`. */
  readonly userAgent: string;
  /** Wall clock of the DIAL_REQ (ms since the epoch). */
  readonly startedAt: number;
  /** Monotonic clock of the DIAL_REQ (ms). */
  readonly t0: number;
  /** Its number in its explainer's ring ({@linkcode Ring.nth}); 0 when kept in none. */
  seq = 0;
  phase: DialPhase = "requested";
  policy: Record<string, string> = { decision: "allowed" };
  route: Record<string, unknown> | undefined;
  /** upstream's `dial_failure_count` reason, when the dial failed. */
  failure: string | undefined;
  response: Record<string, unknown> | undefined;
  agentId: string | undefined;
  connectId: bigint | undefined;
  firstByteToAgentMs: number | undefined;
  firstByteToFrontendMs: number | undefined;
  bytesToAgent = 0;
  bytesToFrontend = 0;
  closeReason: string | undefined;
  /** When the dial was established, ms since the DIAL_REQ. */
  establishedMs: number | undefined;
  /** When the frontend stream ended, ms since the DIAL_REQ. */
  endedMs: number | undefined;
  readonly timeline: TimelineStep[] = [];

  /** A record of a DIAL_REQ that arrived at `t0` (monotonic) / `startedAt` (wall). */
  constructor(
    init: { dialId: bigint; address: string; peer: string; userAgent: string },
    t0: number,
    startedAt: number,
  ) {
    this.dialId = init.dialId;
    this.address = init.address;
    this.peer = init.peer;
    this.userAgent = init.userAgent;
    this.t0 = t0;
    this.startedAt = startedAt;
  }

  /** Milliseconds from the DIAL_REQ to `now` (monotonic), rounded to µs. */
  since(now: number): number {
    return Math.round((now - this.t0) * 1000) / 1000;
  }

  /** Appends a timeline step at `now` (monotonic); steps beyond the bound are dropped. */
  step(now: number, event: string, detail?: Record<string, unknown>): void {
    if (this.timeline.length >= MAX_STEPS) return;
    this.timeline.push({ ms: this.since(now), event, ...(detail ? { detail } : {}) });
  }
}

/** The JSON form of a record (bigints as decimal strings, times in ms since the DIAL_REQ). */
export function dialJson(r: DialRecord): Record<string, unknown> {
  const dialMs = r.response?.ms;
  return {
    dialId: String(r.dialId),
    address: r.address,
    frontend: { peer: r.peer, userAgent: r.userAgent },
    startedAt: new Date(r.startedAt).toISOString(),
    phase: r.phase,
    policy: r.policy,
    route: r.route ?? null,
    agentId: r.agentId ?? null,
    connectId: r.connectId === undefined ? null : String(r.connectId),
    failure: r.failure ?? null,
    dialResponse: r.response ?? null,
    firstByte: {
      toAgentMs: r.firstByteToAgentMs ?? null,
      toFrontendMs: r.firstByteToFrontendMs ?? null,
    },
    bytes: { toAgent: r.bytesToAgent, toFrontend: r.bytesToFrontend },
    close: r.closeReason === undefined ? null : { reason: r.closeReason },
    durations: {
      dialMs: dialMs ?? null,
      connectionMs: r.establishedMs !== undefined && r.endedMs !== undefined
        ? Math.round((r.endedMs - r.establishedMs) * 1000) / 1000
        : null,
      totalMs: r.endedMs ?? null,
    },
    timeline: r.timeline,
  };
}
