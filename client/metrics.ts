/**
 * `@knp/client/metrics`: opt-in Prometheus metrics of the client library, in a prom-client
 * `Registry` the caller passes (or a fresh one). Importing this module loads prom-client;
 * `@knp/client` alone does not.
 *
 * Upstream's `konnectivity_network_proxy_client_dial_failure_total{reason}` (name, label and HELP
 * as upstream) and knp's own: `knp_client_dials_total{result,kind}`,
 * `knp_client_dial_duration_seconds`, `knp_client_open_tunnels`, `knp_client_open_connections`
 * and `knp_client_bytes_total{direction}`.
 *
 * @example Count the dials of a tunnel
 * ```ts ignore
 * import { createTunnel } from "@knp/client";
 * import { clientMetrics } from "@knp/client/metrics";
 * const metrics = clientMetrics();
 * const tunnel = createTunnel({ udsPath: "/run/konnectivity/konnectivity-server.socket", metrics });
 * await using conn = await tunnel.dial("tcp", "10.0.0.7:10250");
 * console.log(await metrics.registry.metrics());
 * ```
 *
 * @module
 */

import { Counter, Gauge, Histogram, Registry } from "prom-client";
import { DialError } from "@knp/core/errors";
import type { TunnelMetrics } from "./tunnel_metrics.ts";

export type { TunnelMetrics } from "./tunnel_metrics.ts";

/**
 * A prom-client (15.x) `Registry`, as this module sees it: any `Registry` of the caller's
 * prom-client fits (the metrics are registered in it).
 */
export interface MetricsRegistry {
  /** The Prometheus text exposition of every metric in the registry. */
  metrics(): Promise<string>;
  /** The content type of {@linkcode MetricsRegistry.metrics}. */
  readonly contentType: string;
}

/** Dial latency buckets (seconds), as the server's `dial_duration_seconds`. */
const DIAL_BUCKETS = [0.005, 0.025, 0.1, 0.5, 2.5, 12.5];

/** The client's metric set: pass it as `TunnelOptions.metrics` to every tunnel to count. */
export interface ClientMetrics extends TunnelMetrics {
  /** The prom-client registry the metrics are in (`await registry.metrics()` renders them). */
  readonly registry: MetricsRegistry;
}

class PromClientMetrics implements ClientMetrics {
  readonly registry: MetricsRegistry;
  #dialFailures: Counter<"reason">;
  #dials: Counter<"result" | "kind">;
  #dialDuration: Histogram;
  #tunnels: Gauge;
  #connections: Gauge;
  #bytes: Counter<"direction">;

  constructor(registry: Registry) {
    this.registry = registry;
    const registers = [registry];
    this.#dialFailures = new Counter({
      name: "konnectivity_network_proxy_client_dial_failure_total",
      help: "Number of dial failures observed, by reason (example: remote endpoint error)",
      labelNames: ["reason"] as const,
      registers,
    });
    this.#dials = new Counter({
      name: "knp_client_dials_total",
      help: "Dials through the proxy, by result (success, failure) and failure kind.",
      labelNames: ["result", "kind"] as const,
      registers,
    });
    this.#dialDuration = new Histogram({
      name: "knp_client_dial_duration_seconds",
      help: "Latency of successful dials through the proxy in seconds.",
      buckets: DIAL_BUCKETS,
      registers,
    });
    this.#tunnels = new Gauge({
      name: "knp_client_open_tunnels",
      help: "Open tunnels (gRPC connections to a proxy server).",
      registers,
    });
    this.#connections = new Gauge({
      name: "knp_client_open_connections",
      help: "Open connections dialed through the proxy.",
      registers,
    });
    this.#bytes = new Counter({
      name: "knp_client_bytes_total",
      help: "Payload bytes sent to and received from remote ends, by direction.",
      labelNames: ["direction"] as const,
      registers,
    });
  }

  tunnelOpened(): void {
    this.#tunnels.inc();
  }

  tunnelClosed(): void {
    this.#tunnels.dec();
  }

  dialEnded(ms: number, error?: unknown): void {
    if (error === undefined) {
      this.#dials.inc({ result: "success", kind: "none" });
      this.#dialDuration.observe(ms / 1000);
      this.#connections.inc();
      return;
    }
    const dialError = error instanceof DialError ? error : undefined;
    this.#dialFailures.inc({ reason: dialError?.reason ?? "unknown" });
    this.#dials.inc({ result: "failure", kind: dialError?.kind ?? "unknown" });
  }

  connectionClosed(): void {
    this.#connections.dec();
  }

  bytes(direction: "sent" | "received", count: number): void {
    this.#bytes.inc({ direction }, count);
  }
}

/**
 * The client's metrics in `registry`, a prom-client `Registry` (a fresh one if none is given).
 * Call it once per registry: registering the same names twice throws.
 */
export function clientMetrics(registry?: MetricsRegistry): ClientMetrics {
  // A prom-client Registry is more than the structural view the public API names.
  return new PromClientMetrics((registry as Registry | undefined) ?? new Registry());
}
