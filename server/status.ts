/**
 * The admin port's pages beyond `/metrics`: the live status page (`/status`, HTML refreshing from
 * `/status.json`), the dial explainer (`/debug/dials`, `/debug/dials/<dialID>`) and a drain action
 * for an agent (`POST /status/agents/<agentID>/drain`). The admin port binds 127.0.0.1 by default.
 *
 * The drain action marks every stream of that agent on this server as draining, as the agent's
 * own DRAIN packet does: the proxy strategies stop choosing it while another agent can serve, and
 * its open connections go on. The agent itself is not told (upstream's DRAIN goes from agent to
 * server only; there is no server-to-agent packet for it) and a reconnected stream of the agent is
 * not draining. The POST must carry the header `X-KNP-Action: drain` (a cross-site form or script
 * cannot send a custom header without a CORS preflight, which this port never grants) and, when
 * the browser sends `Origin`, it must be this port's own origin.
 *
 * @module
 */

import type { PacketStream } from "@knp/transport/packet_stream";
import { tapPacketStream } from "@knp/transport/packet_tap";
import type { Logger } from "@knp/core/log";
import type { Backend } from "./backend.ts";
import type { ProxyServer } from "./proxy_server.ts";
import { DEFAULT_EXPLAIN_DIALS, DialExplainer } from "./dial_explainer.ts";
import { serverReadiness } from "./readiness.ts";
import type { ZoneMap } from "./routing.ts";
import { STATUS_HTML } from "./status_page.ts";

/** The header a drain POST must carry (CSRF guard). */
export const ACTION_HEADER = "x-knp-action";
/** Dials the status JSON lists (the explainer keeps more; `/debug/dials` has them all). */
const STATUS_DIALS = 50;

/** The admin pages' part of the server's configuration. */
export interface AdminPagesConfig {
  /** `--knp-explain-dials`: dials the explainer keeps; 0 keeps none. @default 1000 */
  explainDials?: number;
}

/** Bytes of DATA an agent stream carried, by direction. */
interface Traffic {
  toAgent: number;
  fromAgent: number;
  since: number;
}

/** The status page, the explainer and the drain action of one server core. */
export class AdminPages {
  /** The dial explainer. */
  readonly explainer: DialExplainer;
  readonly #core: ProxyServer;
  readonly #zones: ZoneMap | undefined;
  readonly #log: Logger | undefined;
  readonly #traffic = new WeakMap<PacketStream, Traffic>();
  readonly #drainedHere = new WeakSet<Backend>();
  readonly #unsubscribe: () => void;
  #gone = { toAgent: 0, fromAgent: 0 };

  /** Subscribes to `core`'s events and taps its new streams (after any earlier tap). */
  constructor(core: ProxyServer, options: AdminPagesConfig & { zones?: ZoneMap; logger?: Logger }) {
    this.#core = core;
    this.#zones = options.zones;
    this.#log = options.logger;
    this.explainer = new DialExplainer(options.explainDials ?? DEFAULT_EXPLAIN_DIALS, {
      backends: core.backends,
    });
    this.#unsubscribe = core.events.on((event) => this.explainer.onEvent(event));
    const previous = core.events.tap;
    core.events.tap = (stream, side) => {
      const inner = previous?.(stream, side) ?? stream;
      return side === "frontend" ? this.explainer.watch(inner) : this.#countAgent(inner);
    };
  }

  #countAgent(stream: PacketStream): PacketStream {
    const traffic: Traffic = { toAgent: 0, fromAgent: 0, since: Date.now() };
    const tapped = tapPacketStream(stream, {
      sent: (type, bytes) => {
        if (type === "DATA") traffic.toAgent += bytes;
      },
      received: (type, bytes) => {
        if (type === "DATA") traffic.fromAgent += bytes;
      },
      ended: () => {
        this.#gone.toAgent += traffic.toAgent;
        this.#gone.fromAgent += traffic.fromAgent;
        traffic.toAgent = traffic.fromAgent = 0;
      },
    });
    this.#traffic.set(tapped, traffic);
    return tapped;
  }

  /** Stops listening to the core. */
  dispose(): void {
    this.#unsubscribe();
  }

  /** The agents (one entry per agent stream), ordered by agent ID. */
  agents(): Record<string, unknown>[] {
    const list = [...this.#core.backends.agents].sort((a, b) =>
      a.agentId < b.agentId ? -1 : a.agentId > b.agentId ? 1 : a.seq - b.seq
    );
    return list.map((b) => {
      const t = this.#traffic.get(b.stream);
      const { host, ipv4, ipv6, cidr, defaultRoute, zone } = b.identifiers;
      return {
        agentId: b.agentId,
        stream: b.seq,
        peer: b.stream.peer,
        identifiers: { host, ipv4, ipv6, cidr, defaultRoute },
        zone: zone ?? null,
        draining: b.draining,
        drainedBy: !b.draining ? null : this.#drainedHere.has(b) ? "status-page" : "agent",
        flowControl: b.flow !== undefined,
        openConnections: b.openConnections,
        bytes: { toAgent: t?.toAgent ?? 0, fromAgent: t?.fromAgent ?? 0 },
        connectedAt: t ? new Date(t.since).toISOString() : null,
      };
    });
  }

  /** Everything the status page shows. */
  snapshot(): Record<string, unknown> {
    const core = this.#core;
    const readiness = serverReadiness(core.backends, this.#zones);
    const agents = this.agents();
    const bytes = { ...this.#gone };
    for (const a of agents) {
      const b = a.bytes as { toAgent: number; fromAgent: number };
      bytes.toAgent += b.toAgent;
      bytes.fromAgent += b.fromAgent;
    }
    return {
      serverId: core.serverId,
      serverCount: core.serverCount,
      time: new Date().toISOString(),
      ready: readiness.ready,
      readiness: readiness.lines,
      strategies: core.backends.storages.map((s) => ({ strategy: s.strategy, size: s.size })),
      counts: {
        agentStreams: core.backendStreams,
        pendingDials: core.pendingDials,
        establishedConnections: core.establishedConnections,
        frontendStreams: core.frontends.size,
      },
      bytes,
      agents,
      recentErrors: this.explainer.recentErrors(),
      explainDials: this.explainer.capacity,
      dials: this.explainer.list(STATUS_DIALS),
    };
  }

  /**
   * Marks every stream of `agentId` draining; the number of streams, 0 when none is connected.
   */
  drain(agentId: string): number {
    let n = 0;
    for (const b of this.#core.backends.agents) {
      if (b.agentId !== agentId) continue;
      if (!b.draining) this.#drainedHere.add(b);
      b.setDraining();
      n++;
    }
    if (n > 0) this.#log?.info("agent marked draining from the status page", { agentID: agentId });
    return n;
  }

  /**
   * The admin handler: the pages above, everything else to `fallback` (the health handler's
   * `/metrics`, `/healthz`, `/readyz`).
   */
  handler(fallback: (req: Request) => Response): (req: Request) => Response {
    return (req) => {
      const url = new URL(req.url);
      const path = url.pathname;
      if (path === "/status") return page();
      if (path === "/status.json") return json(200, this.snapshot());
      if (path === "/debug/dials") return json(200, { dials: this.explainer.list() });
      if (path.startsWith("/debug/dials/")) {
        const found = this.explainer.get(decodeURIComponent(path.slice("/debug/dials/".length)));
        return found ? json(200, found) : json(404, { error: "dial not kept (or never seen)" });
      }
      const drain = /^\/status\/agents\/([^/]+)\/drain$/.exec(path);
      if (drain) return this.#drainRequest(req, url, decodeURIComponent(drain[1]!));
      return fallback(req);
    };
  }

  #drainRequest(req: Request, url: URL, agentId: string): Response {
    if (req.method !== "POST") return json(405, { error: "use POST" });
    if (req.headers.get(ACTION_HEADER) !== "drain") {
      return json(403, { error: `the ${ACTION_HEADER}: drain header is required` });
    }
    const origin = req.headers.get("origin");
    const host = req.headers.get("host") ?? url.host;
    if (origin !== null && origin !== `http://${host}`) {
      return json(403, { error: `origin ${origin} is not this page's` });
    }
    const streams = this.drain(agentId);
    if (streams === 0) return json(404, { error: `no agent ${agentId} is connected` });
    return json(200, {
      agentId,
      streams,
      draining: true,
      note: "marked draining on this server only: new dials go to other agents while any can " +
        "serve; open connections go on; the agent is not told (DRAIN is agent-to-server)",
    });
  }
}

function page(): Response {
  return new Response(STATUS_HTML, {
    headers: {
      "content-type": "text/html; charset=utf-8",
      "content-security-policy": "default-src 'self'; script-src 'unsafe-inline'; " +
        "style-src 'unsafe-inline'; frame-ancestors 'none'",
      "x-frame-options": "DENY",
    },
  });
}

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body, null, 1), {
    status,
    headers: { "content-type": "application/json; charset=utf-8", "cache-control": "no-store" },
  });
}
