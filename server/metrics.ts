/**
 * The server's Prometheus exposition, with upstream's metric names and HELP strings. This is the
 * first slice (table gauges and dial failures); the metrics issue completes the set.
 *
 * @module
 */

import type { ProxyServer } from "./proxy_server.ts";
import type { DialFailureLabel, ServerEvent } from "./server_events.ts";

const NS = "konnectivity_network_proxy_server";

/** Options of {@linkcode ServerMetrics}. */
export interface ServerMetricsOptions {
  /** Open HTTP-CONNECT client connections (upstream's `http_connections`). @default () => 0 */
  httpConnections?: () => number;
}

/** Counters fed by the core's events; gauges read from the core when scraped. */
export class ServerMetrics {
  readonly #core: ProxyServer;
  readonly #httpConnections: () => number;
  readonly #dialFailures = new Map<DialFailureLabel, number>();
  readonly #refusals = new Map<string, number>();
  readonly #unsubscribe: () => void;

  /** Subscribes to `core`'s events; the gauges read `core` when rendered. */
  constructor(core: ProxyServer, options: ServerMetricsOptions = {}) {
    this.#core = core;
    this.#httpConnections = options.httpConnections ?? (() => 0);
    this.#unsubscribe = core.events.on((event) => this.#onEvent(event));
  }

  #onEvent(event: ServerEvent): void {
    if (event.kind === "dial-failure") {
      this.#dialFailures.set(event.reason, (this.#dialFailures.get(event.reason) ?? 0) + 1);
    } else if (event.kind === "agent-refused") {
      const labels = `{reason="${event.reason}",link="${event.link}"}`;
      this.#refusals.set(labels, (this.#refusals.get(labels) ?? 0) + 1);
    }
  }

  /** Stops counting the core's events. */
  dispose(): void {
    this.#unsubscribe();
  }

  /** Prometheus text exposition. */
  render(): string {
    const core = this.#core;
    const lines: string[] = [];
    const gauge = (name: string, help: string, samples: [string, number][]) => {
      lines.push(`# HELP ${NS}_${name} ${help}`, `# TYPE ${NS}_${name} gauge`);
      for (const [labels, v] of samples) lines.push(`${NS}_${name}${labels} ${v}`);
    };
    gauge("pending_backend_dials", "Current number of pending backend dial requests", [
      ["", core.pendingDials],
    ]);
    gauge(
      "established_connections",
      "Current number of established end-to-end connections (post-dial).",
      [["", core.establishedConnections]],
    );
    gauge(
      "ready_backends",
      "Number of konnectivity agent connected to the proxy server",
      core.backends.storages.map((s) => [`{proxy_strategy="${s.strategy}"}`, s.size]),
    );
    gauge(
      "grpc_connections",
      "Number of current grpc connections, partitioned by service method.",
      [
        ['{service_method="Connect"}', core.backendStreams],
        ['{service_method="Proxy"}', core.frontendStreams],
      ],
    );
    gauge("http_connections", "Number of current HTTP CONNECT connections", [
      ["", this.#httpConnections()],
    ]);
    lines.push(
      `# HELP ${NS}_dial_failure_count Number of dial failures observed. Multiple failures can occur for a single dial request.`,
      `# TYPE ${NS}_dial_failure_count counter`,
    );
    for (const [reason, n] of this.#dialFailures) {
      lines.push(`${NS}_dial_failure_count{reason="${reason}"} ${n}`);
    }
    lines.push(
      "# HELP knp_server_agent_refusals_total Agents refused at their handshake (knp only), by reason and link.",
      "# TYPE knp_server_agent_refusals_total counter",
    );
    for (const [labels, n] of this.#refusals) {
      lines.push(`knp_server_agent_refusals_total${labels} ${n}`);
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
