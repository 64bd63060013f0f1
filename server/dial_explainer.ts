/**
 * The dial explainer (`--knp-explain-dials`, admin port `/debug/dials`): the server keeps its last
 * N dials with what happened to each — who asked (frontend peer, user agent, address), the policy
 * decision, the agent chosen and why (strategy, number of candidates, zone, the agent's load), the
 * agent's DIAL_RSP (error text and kind), the first byte each way, bytes each way, the close and
 * its reason, durations, and a timeline of all of it — so "why did this webhook call fail" is
 * answered from one server. It is fed by the core's events ({@linkcode ServerEvent}) and by
 * watching each frontend stream's packets ({@linkcode DialExplainer.watch}); it keeps the last
 * errors (failed dials, refused agents, connections closed with an error) too.
 *
 * ```ts
 * const explainer = new DialExplainer(100);
 * explainer.onEvent({ kind: "dial-requested", dialId: 7n, address: "10.0.0.1:443", peer: "uds", userAgent: "kube" });
 * explainer.onEvent({ kind: "dial-failure", reason: "no_agent", dialId: 7n });
 * console.log(explainer.get("7")?.failure); // "no_agent"
 * ```
 *
 * @module
 */

import type { DecodedPacket, Packet } from "@knp/proto";
import { parseDialError } from "@knp/core/dial_errors";
import type { PacketStream } from "@knp/transport/packet_stream";
import { observePackets, type PacketObserver } from "@knp/transport/packet_tap";
import type { Backend } from "./backend.ts";
import type { BackendManager } from "./backend_manager.ts";
import { dialJson, DialRecord, Ring } from "./dial_record.ts";
import type { ServerEvent } from "./server_events.ts";

/** Default of `--knp-explain-dials`. */
export const DEFAULT_EXPLAIN_DIALS = 1000;
/** How many recent errors the explainer keeps. */
const ERROR_CAPACITY = 50;

/** One recent error: when, what kind, about which dial or agent, and its text. */
export interface RecentError {
  /** Wall clock, ISO 8601. */
  at: string;
  /** `dial-failed`, `connection-error` or `agent-refused`. */
  kind: string;
  /** The dial it concerns, as a decimal string. */
  dialId?: string;
  /** The agent it concerns. */
  agentId?: string;
  /** What went wrong. */
  text: string;
}

/** Options of {@linkcode DialExplainer}. */
export interface DialExplainerOptions {
  /** The core's strategies: how many candidates a strategy had is counted from them. */
  backends?: BackendManager;
  /** Monotonic clock (ms). @default performance.now */
  now?: () => number;
  /** Wall clock (ms since the epoch). @default Date.now */
  wallNow?: () => number;
}

/** The explainer; `capacity` 0 keeps no dials (recent errors are still kept). */
export class DialExplainer {
  readonly #ring: Ring<DialRecord> | undefined;
  readonly #byDial = new Map<bigint, DialRecord>();
  readonly #byConn = new Map<string, DialRecord>();
  readonly #policyDone = new WeakSet<DialRecord>();
  readonly #errors = new Ring<RecentError>(ERROR_CAPACITY);
  readonly #backends: BackendManager | undefined;
  readonly #now: () => number;
  readonly #wallNow: () => number;

  /** Keeps the last `capacity` dials. */
  constructor(readonly capacity: number, options: DialExplainerOptions = {}) {
    this.#ring = capacity > 0 ? new Ring(capacity) : undefined;
    this.#backends = options.backends;
    this.#now = options.now ?? (() => performance.now());
    this.#wallNow = options.wallNow ?? Date.now;
  }

  /** Records what an event says about its dial. */
  onEvent(event: ServerEvent): void {
    if (event.kind === "dial-requested") return this.#requested(event);
    if (event.kind === "agent-refused") {
      const agent = event.agentId === undefined ? {} : { agentId: event.agentId };
      return this.#error(
        "agent-refused",
        `${event.reason} on ${event.link} from ${event.peer}`,
        agent,
      );
    }
    if (event.kind === "connection-closed") return this.#closed(event);
    const rec = this.#byDial.get(event.dialId);
    if (rec === undefined) return;
    const now = this.#now();
    switch (event.kind) {
      case "dial-denied":
        this.#policyDone.add(rec);
        rec.policy = { decision: "denied", rule: event.rule, source: event.source };
        return rec.step(now, "policy-denied", { rule: event.rule, source: event.source });
      case "dial-routed":
        return this.#routed(rec, event, now);
      case "dial-failure":
        // A denial counts as `error_response` before its `dial-denied` event.
        if (event.reason !== "error_response") this.#policyAllowed(rec, now);
        rec.failure ??= event.reason;
        rec.phase = "failed";
        return rec.step(now, "dial-failed", { reason: event.reason });
      case "dial-success":
        rec.phase = "established";
        rec.connectId = event.connectId;
        rec.establishedMs = rec.since(now);
        this.#byConn.set(`${event.agentId}/${event.connectId}`, rec);
        return rec.step(now, "dial-established", { connectId: String(event.connectId) });
    }
  }

  #requested(event: ServerEvent & { kind: "dial-requested" }): void {
    if (this.#ring === undefined) return;
    const rec = new DialRecord(event, this.#now(), this.#wallNow());
    rec.seq = this.#ring.pushed + 1;
    const evicted = this.#ring.push(rec);
    if (evicted !== undefined) this.#forget(evicted);
    this.#byDial.set(rec.dialId, rec);
    rec.step(rec.t0, "dial-requested", {
      address: event.address,
      peer: event.peer,
      userAgent: event.userAgent,
    });
  }

  #forget(rec: DialRecord): void {
    if (this.#byDial.get(rec.dialId) === rec) this.#byDial.delete(rec.dialId);
    const key = `${rec.agentId}/${rec.connectId}`;
    if (this.#byConn.get(key) === rec) this.#byConn.delete(key);
  }

  #policyAllowed(rec: DialRecord, now: number): void {
    if (this.#policyDone.has(rec)) return;
    this.#policyDone.add(rec);
    rec.step(now, "policy-allowed");
  }

  #routed(rec: DialRecord, event: ServerEvent & { kind: "dial-routed" }, now: number): void {
    this.#policyAllowed(rec, now);
    const counted = this.#candidates(event.strategy, rec.address);
    rec.agentId = event.agentId;
    rec.phase = "pending";
    rec.route = {
      agentId: event.agentId,
      strategy: event.strategy,
      zone: event.zone ?? null,
      load: event.load,
      ...counted,
    };
    rec.step(now, "agent-chosen", rec.route);
  }

  /** How many agents `strategy` could have used for `address`, and how many were draining. */
  #candidates(strategy: string, address: string): { candidates?: number; draining?: number } {
    const storage = this.#backends?.storages.find((s) => s.strategy === strategy);
    if (storage === undefined) return {};
    const seen = new Set<Backend>();
    // Every candidate passes through `accept`; rejecting all of them visits each once.
    storage.pick(address, { accept: (b) => (seen.add(b), false), random: () => 0 });
    let draining = 0;
    for (const b of seen) if (b.draining) draining++;
    return { candidates: seen.size, draining };
  }

  #closed(event: ServerEvent & { kind: "connection-closed" }): void {
    const key = `${event.agentId}/${event.connectId}`;
    const rec = this.#byConn.get(key);
    if (rec === undefined) return;
    this.#byConn.delete(key);
    rec.phase = "closed";
    rec.closeReason = event.reason ?? "unknown";
    rec.step(this.#now(), "connection-closed", { reason: rec.closeReason });
  }

  #error(kind: string, text: string, about: { dialId?: bigint; agentId?: string }): void {
    this.#errors.push({
      at: new Date(this.#wallNow()).toISOString(),
      kind,
      ...(about.dialId === undefined ? {} : { dialId: String(about.dialId) }),
      ...(about.agentId === undefined ? {} : { agentId: about.agentId }),
      text,
    });
  }

  /**
   * Wraps a frontend stream so that its DIAL_RSP, first bytes, byte counts, CLOSE_RSP and end are
   * recorded on its dial. Adds nothing on the wire.
   */
  watch(stream: PacketStream): PacketStream {
    return observePackets(stream, new DialWatch(this.#hooks));
  }

  /** What every {@linkcode DialWatch} calls: one set of closures per explainer. */
  readonly #hooks: WatchHooks = {
    find: (seq) => this.#ring?.nth(seq),
    seqOf: (dialId) => this.#byDial.get(dialId)?.seq,
    fromFrontend: (r, packet) => this.#fromFrontend(r, packet),
    toFrontend: (r, packet) => this.#toFrontend(r, packet),
    ended: (r, error) => {
      const now = this.#now();
      r.endedMs = r.since(now);
      r.step(now, "frontend-ended", error ? { error: error.message } : undefined);
    },
  };

  #fromFrontend(r: DialRecord, packet: DecodedPacket): void {
    if (packet.type === "DATA") {
      const n = packet.data.data.byteLength;
      if (r.bytesToAgent === 0 && n > 0) {
        const now = this.#now();
        r.firstByteToAgentMs = r.since(now);
        r.step(now, "first-byte-to-agent");
      }
      r.bytesToAgent += n;
    } else if (packet.type === "CLOSE_REQ") r.step(this.#now(), "frontend-close-request");
    else if (packet.type === "DIAL_CLS") r.step(this.#now(), "frontend-cancelled-dial");
  }

  #toFrontend(r: DialRecord, packet: Packet): void {
    if (packet.type === "DATA") {
      const n = packet.data.data.byteLength;
      if (r.bytesToFrontend === 0 && n > 0) {
        const now = this.#now();
        r.firstByteToFrontendMs = r.since(now);
        r.step(now, "first-byte-to-frontend");
      }
      r.bytesToFrontend += n;
    } else if (packet.type === "DIAL_RSP") this.#response(r, packet.dialResponse);
    else if (packet.type === "CLOSE_RSP") {
      const error = packet.closeResponse.error;
      r.step(this.#now(), "close-response", error ? { error } : undefined);
      if (error) this.#error("connection-error", error, { dialId: r.dialId, ...agentOf(r) });
    }
  }

  #response(r: DialRecord, rsp: { connectId: bigint; error: string }): void {
    const now = this.#now();
    const ok = rsp.error === "";
    const { message, kind } = ok ? { message: "", kind: undefined } : parseDialError(rsp.error);
    r.response = {
      ok,
      ms: r.since(now),
      ...(ok ? { connectId: String(rsp.connectId) } : { error: message, kind: kind ?? null }),
    };
    r.step(now, "dial-response", r.response);
    if (!ok) {
      this.#error("dial-failed", `${r.address}: ${message}`, { dialId: r.dialId, ...agentOf(r) });
    }
  }

  /** The kept dials, newest first, as JSON (at most `limit`). */
  list(limit?: number): Record<string, unknown>[] {
    return (this.#ring?.newestFirst(limit) ?? []).map(dialJson);
  }

  /** One kept dial by its decimal dial ID, as JSON; undefined when not kept. */
  get(dialId: string): Record<string, unknown> | undefined {
    const found = this.#ring?.newestFirst().find((r) => String(r.dialId) === dialId);
    return found === undefined ? undefined : dialJson(found);
  }

  /** The recent errors, newest first. */
  recentErrors(): RecentError[] {
    return this.#errors.newestFirst();
  }
}

function agentOf(r: DialRecord): { agentId?: string } {
  return r.agentId === undefined ? {} : { agentId: r.agentId };
}

/** What a {@linkcode DialWatch} needs of its explainer. */
interface WatchHooks {
  /** The record numbered `seq`, while the explainer keeps it. */
  find(seq: number): DialRecord | undefined;
  /** The number of the record of dial `dialId`, while the explainer keeps one. */
  seqOf(dialId: bigint): number | undefined;
  fromFrontend(r: DialRecord, packet: DecodedPacket): void;
  toFrontend(r: DialRecord, packet: Packet): void;
  ended(r: DialRecord, error: Error | undefined): void;
}

/**
 * Records one frontend stream's packets on its dial. It keeps the record's number in the ring, not
 * the record: an open connection does not hold its record once the ring has evicted it (10,000
 * idle tunnels would otherwise hold 10,000 records whatever the ring's capacity). The record is
 * found by the dial ID once (on the DIAL_REQ), then by number, so a later dial reusing the ID is
 * not credited with this stream's packets.
 */
class DialWatch implements PacketObserver {
  readonly #hooks: WatchHooks;
  #dialId: bigint | undefined;
  #seq: number | undefined;

  constructor(hooks: WatchHooks) {
    this.#hooks = hooks;
  }

  received(packet: DecodedPacket): void {
    if (packet.type === "DIAL_REQ" && this.#dialId === undefined) {
      this.#dialId = packet.dialRequest.random;
    }
  }

  delivered(packet: DecodedPacket): void {
    const r = this.#record();
    if (r !== undefined) this.#hooks.fromFrontend(r, packet);
  }

  sent(packet: Packet, onSent: (() => void) | undefined): (() => void) | undefined {
    const r = this.#record();
    if (r !== undefined) this.#hooks.toFrontend(r, packet);
    return onSent;
  }

  ended(error: Error | undefined): void {
    const r = this.#record();
    if (r !== undefined) this.#hooks.ended(r, error);
  }

  /** The record, found by ID on first use (the DIAL_REQ's delivery creates it), then by number. */
  #record(): DialRecord | undefined {
    if (this.#dialId === undefined) return undefined;
    this.#seq ??= this.#hooks.seqOf(this.#dialId);
    return this.#seq === undefined ? undefined : this.#hooks.find(this.#seq);
  }
}
