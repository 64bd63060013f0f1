/**
 * The agent's health endpoints as a plain handler: `/healthz` always ok; `/readyz` and `/ready`
 * check `ping` and `server-connected` in upstream's format (503 when no server is connected).
 *
 * @module
 */

/** What the handler needs to know. */
export interface AgentHealthSource {
  /** Whether a server stream is up. */
  readonly ready: boolean;
  /** The Prometheus text exposition of `/metrics`. */
  metrics?: () => string | Promise<string>;
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
        const extra = details().map((line) => `${line}\n`).join("");
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
