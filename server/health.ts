/**
 * The server's health endpoints as a plain `(Request) => Response` handler: `/healthz` (always
 * ok), `/readyz` and `/ready` (200 once every routing class has an agent, else 500 with the
 * missing ones; see `readiness.ts`).
 *
 * @module
 */

import type { Readiness } from "./readiness.ts";

/** What the handler needs to know. */
export interface ServerHealthSource {
  readonly ready: boolean;
  /** The routing classes' verdict and check lines (see `readiness.ts`); else `ready` alone. */
  readiness?: () => Readiness;
  /** The Prometheus text exposition of `/metrics`. */
  metrics?: () => string | Promise<string>;
}

/** Builds the health handler. */
export function serverHealthHandler(source: ServerHealthSource): (req: Request) => Response {
  return (req) => {
    const url = new URL(req.url);
    switch (url.pathname) {
      case "/healthz":
        return text(200, "ok");
      case "/readyz":
      case "/ready":
        return readyz(source, url.searchParams.has("verbose"));
      case "/metrics":
        return new Response(exposition(source.metrics?.() ?? ""), {
          headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
        });
      default:
        return text(404, "404 page not found\n");
    }
  };
}

/**
 * 200 `ok` when ready (with `?verbose` the check lines and `check passed`); else 500: upstream's
 * sentence alone when no agent is connected at all (with `?verbose`, followed by the check lines),
 * otherwise the check lines.
 */
function readyz(source: ServerHealthSource, verbose: boolean): Response {
  const r: Readiness = source.readiness?.() ?? { ready: source.ready, lines: [] };
  const lines = r.lines.map((line) => `${line}\n`).join("");
  if (r.ready) return text(200, verbose ? `${lines}check passed\n` : "ok");
  if (r.lines.length === 0) return text(500, NOT_READY);
  const none = (r.agents ?? 0) === 0;
  // Exactly upstream's body when no agent is connected (scripts match it); the lines on ?verbose.
  if (none && !verbose) return text(500, NOT_READY);
  return text(500, `${none ? `${NOT_READY}\n` : ""}${lines}check failed\n`);
}

/** upstream's text of a server with no agent. */
const NOT_READY = "no connection to any proxy agent";

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
