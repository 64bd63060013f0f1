/**
 * The agent's health endpoints as a plain handler: `/healthz` always ok; `/readyz` and `/ready`
 * check `ping` and `server-connected` in upstream's format (503 when no server is connected, 200
 * with at least one, as upstream). The `?verbose` body (and a 503's) adds how many servers of how
 * many the agent holds (`[+]servers-held ok: 2 of 2 servers (s1, s2)`, `degraded` while it holds
 * fewer than the server count), whether it drains, and the caller's detail lines.
 *
 * @module
 */

/** What the handler needs to know. */
export interface AgentHealthSource {
  /** Whether a server stream is up. */
  readonly ready: boolean;
  /** The servers held, for the detail lines (cheap: read on every `/readyz`). */
  servers?: () => ServersHeld;
  /** The Prometheus text exposition of `/metrics`. */
  metrics?: () => string | Promise<string>;
}

/** The server connections an agent holds, against how many it should. */
export interface ServersHeld {
  /** Connected servers. */
  held: number;
  /** Servers to hold (server count, or the lease count). */
  wanted: number;
  /** IDs of the connected servers. */
  ids: readonly string[];
  /** Whether the agent is draining (still ready, as upstream). */
  draining: boolean;
}

/** The `/readyz` lines about the servers held (none without `servers`). */
export function serversHeldLines(s: ServersHeld | undefined): string[] {
  if (s === undefined) return [];
  const of = `${s.held} of ${s.wanted} server${s.wanted === 1 ? "" : "s"}`;
  const ids = s.ids.length > 0 ? ` (${s.ids.join(", ")})` : "";
  const lines = [
    s.held === 0
      ? `[-]servers-held failed: ${of}`
      : s.held < s.wanted
      ? `[+]servers-held degraded: ${of}${ids}; connecting to the others`
      : `[+]servers-held ok: ${of}${ids}`,
  ];
  if (s.draining) lines.push("[+]draining ok: draining, no new dials accepted");
  return lines;
}

/** Extra informational lines of `/readyz?verbose` (e.g. `[+]server-leases degraded: ...`). */
export type HealthDetails = () => string[];

/** Builds the agent's health handler. */
export function agentHealthHandler(
  source: AgentHealthSource,
  details: HealthDetails = () => [],
): (req: Request) => Response {
  return (req) => {
    const url = new URL(req.url);
    switch (url.pathname) {
      case "/healthz":
        return text(200, "ok");
      case "/readyz":
      case "/ready": {
        const lines = [...serversHeldLines(source.servers?.()), ...details()];
        const extra = lines.map((line) => `${line}\n`).join("");
        if (!source.ready) {
          return text(
            503,
            `[+]ping ok\n[-]server-connected failed: no servers connected\n${extra}`,
          );
        }
        if (url.searchParams.has("verbose")) {
          return text(200, `[+]ping ok\n[+]server-connected ok\n${extra}check passed\n`);
        }
        return text(200, "ok");
      }
      case "/metrics":
        return new Response(exposition(source.metrics?.() ?? ""), {
          headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
        });
      default:
        return text(404, "404 page not found\n");
    }
  };
}

/** The agent's admin handler: `/metrics` redirects to the health port, as upstream. */
export function agentAdminHandler(healthPort: number): (req: Request) => Response {
  return (req) => {
    const url = new URL(req.url);
    if (url.pathname === "/metrics") {
      url.port = String(healthPort);
      return new Response(null, { status: 301, headers: { location: url.toString() } });
    }
    return text(404, "404 page not found\n");
  };
}

/** A body for `text`, streamed once a pending exposition is ready. */
function exposition(text: string | Promise<string>): string | ReadableStream<Uint8Array> {
  if (typeof text === "string") return text;
  return ReadableStream.from((async function* () {
    yield new TextEncoder().encode(await text);
  })());
}

function text(status: number, body: string): Response {
  return new Response(body, { status, headers: { "content-type": "text/plain; charset=utf-8" } });
}
