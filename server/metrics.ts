/**
 * The server's Prometheus exposition, with upstream's metric names and HELP strings. This is the
 * first slice (table gauges and dial failures); the metrics issue completes the set.
 *
 * @module
 */

import type { DialFailureLabel, ProxyServer, ServerEvent } from "./proxy_server.ts";

const NS = "konnectivity_network_proxy_server";

/** Counters fed by the core's events; gauges read from the core when scraped. */
export class ServerMetrics {
  #core: ProxyServer | undefined;
  #dialFailures = new Map<DialFailureLabel, number>();
  /** Open HTTP-CONNECT client connections (set by the listener). */
  httpConnections: () => number = () => 0;

  /** Attaches the core whose tables the gauges read. */
  attach(core: ProxyServer): void {
    this.#core = core;
  }

  /** Event listener to pass as `onEvent`. */
  readonly onEvent = (event: ServerEvent): void => {
    if (event.kind === "dial-failure") {
      this.#dialFailures.set(event.reason, (this.#dialFailures.get(event.reason) ?? 0) + 1);
    }
  };

  /** Prometheus text exposition. */
  render(): string {
    const core = this.#core;
    const lines: string[] = [];
    const gauge = (name: string, help: string, samples: [string, number][]) => {
      lines.push(`# HELP ${NS}_${name} ${help}`, `# TYPE ${NS}_${name} gauge`);
      for (const [labels, v] of samples) lines.push(`${NS}_${name}${labels} ${v}`);
    };
    gauge("pending_backend_dials", "Current number of pending backend dial requests", [
      ["", core?.pendingDials ?? 0],
    ]);
    gauge(
      "established_connections",
      "Current number of established end-to-end connections (post-dial).",
      [["", core?.establishedConnections ?? 0]],
    );
    gauge(
      "ready_backends",
      "Number of konnectivity agent connected to the proxy server",
      (core?.backends.storages ?? []).map((s) => [`{proxy_strategy="${s.strategy}"}`, s.size]),
    );
    gauge(
      "grpc_connections",
      "Number of current grpc connections, partitioned by service method.",
      [
        ['{service_method="Connect"}', core?.backendStreams ?? 0],
        ['{service_method="Proxy"}', core?.frontendStreams ?? 0],
      ],
    );
    gauge("http_connections", "Number of current HTTP CONNECT connections", [
      ["", this.httpConnections()],
    ]);
    lines.push(
      `# HELP ${NS}_dial_failure_count Number of dial failures observed. Multiple failures can occur for a single dial request.`,
      `# TYPE ${NS}_dial_failure_count counter`,
    );
    for (const [reason, n] of this.#dialFailures) {
      lines.push(`${NS}_dial_failure_count{reason="${reason}"} ${n}`);
    }
    return lines.join("\n") + "\n";
  }
}

/** Reads one sample (`name{labels}`) from an exposition text; undefined when absent. */
export function readSample(text: string, series: string): number | undefined {
  for (const line of text.split("\n")) {
    if (line.startsWith(series + " ")) return Number(line.slice(series.length + 1));
  }
  return undefined;
}
