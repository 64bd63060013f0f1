/**
 * The server's health endpoints as a plain `(Request) => Response` handler: `/healthz` (always
 * ok), `/readyz` and `/ready` (ok once an agent is connected, else 500 as upstream).
 *
 * @module
 */

/** What the handler needs to know. */
export interface ServerHealthSource {
  readonly ready: boolean;
  /** Extra `/metrics` text (Prometheus exposition); empty until the metrics work lands. */
  metrics?: () => string;
}

/** Builds the health handler. */
export function serverHealthHandler(source: ServerHealthSource): (req: Request) => Response {
  return (req) => {
    const { pathname } = new URL(req.url);
    switch (pathname) {
      case "/healthz":
        return text(200, "ok");
      case "/readyz":
      case "/ready":
        return source.ready ? text(200, "ok") : text(500, "no connection to any proxy agent");
      case "/metrics":
        return new Response(source.metrics?.() ?? "", {
          headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
        });
      default:
        return text(404, "404 page not found\n");
    }
  };
}

function text(status: number, body: string): Response {
  return new Response(body, { status, headers: { "content-type": "text/plain; charset=utf-8" } });
}
