/**
 * The agent's Prometheus metrics: upstream's names, labels, HELP texts and buckets
 * (`konnectivity_network_proxy_agent_*`) in a per-agent prom-client `Registry`, with the process
 * metrics (`process_*`, `nodejs_*`, see `@knp/cli/process_metrics`) as upstream has Go's. Gauges
 * read the {@linkcode ClientSet} when scraped; counters and the dial histogram are fed by the
 * agent's dial events and by its server streams, which {@linkcode AgentMetrics.connector} taps.
 *
 * ```ts
 * const metrics = new AgentMetrics({ processMetrics: false });
 * metrics.onDial({ ok: false, address: "10.0.0.1:443", ms: 5000, kind: "dial-timeout" });
 * const text = await metrics.render();
 * console.log(text.includes('endpoint_dial_failure_total{reason="timeout"} 1')); // true
 * ```
 *
 * @module
 */

import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import { newRegistry } from "@knp/cli/process_metrics";
import { certificateExpiryMetrics, type CertificateSource } from "@knp/cli/certificate_metrics";
import type { DialErrorKind } from "@knp/core/dial_errors";
import { grpcCodeName, tapPacketStream } from "@knp/transport/packet_tap";
import { CounterBatch } from "@knp/transport/counter_batch";
import type { ServerConnector } from "./client_set.ts";

const NS = "konnectivity_network_proxy_agent";
/** Upstream's agent latency buckets (seconds). */
const LATENCY_BUCKETS = [0.005, 0.025, 0.1, 0.5, 2.5, 10, 30];

/** What the gauges read at scrape time (a `ClientSet`). */
export interface AgentMetricsSource {
  /** Connected servers. */
  readonly size: number;
  /** Servers the agent tries to hold. */
  readonly serverCount: number;
  /** Open endpoint connections. */
  readonly connections: number;
}

/** One endpoint dial's outcome (the `onDial` event of `AgentClient`). */
export interface AgentDialEvent {
  /** Whether the endpoint answered. */
  ok: boolean;
  /** The dialed address. */
  address: string;
  /** The error text of a failed dial. */
  error?: string;
  /** Dial duration. */
  ms: number;
  /** The failure's kind (`dial-timeout` is upstream's `timeout`; the rest `unknown`). */
  kind?: DialErrorKind;
}

/** Options of {@linkcode AgentMetrics}. */
export interface AgentMetricsOptions {
  /** Include the process metrics (`process_*`, `nodejs_*`). @default true */
  processMetrics?: boolean;
  /** TLS files whose certificates' expiry `knp_certificate_expiry_seconds` reports. */
  certificates?: readonly CertificateSource[];
}

/** The agent's metric set. */
export class AgentMetrics {
  readonly #registry: Registry;
  #source: AgentMetricsSource | undefined;
  #dialDuration: Histogram;
  #dialFailures: Counter<"reason">;
  #serverFailures: Counter<"direction">;
  /** Per-packet counts, handed to `stream_packets_total` on scrape. */
  readonly #packetCounts = new CounterBatch();
  #streamErrors: Counter<"segment" | "code" | "packet_type">;

  /** A fresh registry with every upstream agent metric. */
  constructor(options: AgentMetricsOptions = {}) {
    const registers = [this.#registry = newRegistry(options.processMetrics ?? true)];
    this.#dialDuration = new Histogram({
      name: `${NS}_dial_duration_seconds`,
      help: "Latency of dial to the remote endpoint in seconds",
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.#serverFailures = new Counter({
      name: `${NS}_server_connection_failure_count`,
      help:
        "Count of failures to send to or receive from the proxy server, labeled by the direction (from_server or to_server). DEPRECATED, please use stream_events_error_total",
      labelNames: ["direction"] as const,
      registers,
    });
    this.#dialFailures = new Counter({
      name: `${NS}_endpoint_dial_failure_total`,
      help: "Number of failures dialing the remote endpoint, by reason (example: timeout).",
      labelNames: ["reason"] as const,
      registers,
    });
    this.#gauges(registers);
    const packetCounts = this.#packetCounts;
    new Counter({
      name: `${NS}_stream_packets_total`,
      help:
        "Count of packets processed, by segment and packet type (example: from_client, DIAL_REQ)",
      labelNames: ["segment", "packet_type"] as const,
      registers,
      collect() {
        packetCounts.drain((segment, type, n) => this.inc({ segment, packet_type: type }, n));
      },
    });
    this.#streamErrors = new Counter({
      name: `${NS}_stream_errors_total`,
      help:
        "Count of gRPC stream errors, by segment, grpc Code, packet type. (example: from_agent, Code.Unavailable, DIAL_RSP)",
      labelNames: ["segment", "code", "packet_type"] as const,
      registers,
    });
    this.#leaseMetrics(registers);
    certificateExpiryMetrics(this.#registry, options.certificates ?? []);
  }

  /** The gauges, read from the source when scraped. */
  #gauges(registers: Registry[]): void {
    const source = () => this.#source;
    const gauge = (name: string, help: string, pick: (s: AgentMetricsSource) => number) => {
      new Gauge({
        name: `${NS}_${name}`,
        help,
        registers,
        collect() {
          const from = source();
          this.set(from === undefined ? 0 : pick(from));
        },
      });
    };
    gauge("open_server_connections", "Current number of open server connections.", (s) => s.size);
    gauge(
      "known_server_count",
      "Current number of servers agent is trying to connect to.",
      (s) => s.serverCount,
    );
    gauge(
      "open_endpoint_connections",
      "Current number of open endpoint connections.",
      (s) => s.connections,
    );
    this.#knpGauges(registers);
  }

  /** knp's own server gauges: how many servers the agent aims for, how many it holds. */
  #knpGauges(registers: Registry[]): void {
    const source = () => this.#source;
    new Gauge({
      name: "knp_agent_servers_known",
      help: "Servers the agent aims to hold a connection to (the server count it learned).",
      registers,
      collect() {
        this.set(source()?.serverCount ?? 0);
      },
    });
    new Gauge({
      name: "knp_agent_servers_connected",
      help: "Servers the agent holds a connection to.",
      registers,
      collect() {
        this.set(source()?.size ?? 0);
      },
    });
  }

  /** Upstream's lease metrics (registered for their names; knp's Lease counter logs instead). */
  #leaseMetrics(registers: Registry[]): void {
    const codeReason = ["http_response_code", "reason"] as const;
    new Counter({
      name: `${NS}_lease_lists_total`,
      help:
        "Count of server lease list calls made by the agent to the k8s apiserver, labeled by HTTP response code and reason",
      labelNames: codeReason,
      registers,
    });
    new Counter({
      name: `${NS}_lease_watches_total`,
      help:
        "Count of server lease watch calls made by the agent to the k8s apiserver, labeled by HTTP response code and reason",
      labelNames: codeReason,
      registers,
    });
    new Histogram({
      name: `${NS}_lease_list_latency_seconds`,
      help: "Latency of server lease listing in seconds",
      labelNames: ["http_response_code"] as const,
      buckets: LATENCY_BUCKETS,
      registers,
    });
  }

  /** Sets what the gauges read (the agent's `ClientSet`). */
  watch(source: AgentMetricsSource): void {
    this.#source = source;
  }

  /** Counts one endpoint dial (pass as the agent's `onDial`). */
  onDial(event: AgentDialEvent): void {
    if (event.ok) {
      this.#dialDuration.observe(event.ms / 1000);
    } else {
      this.#dialFailures.inc({ reason: event.kind === "dial-timeout" ? "timeout" : "unknown" });
    }
  }

  /** Wraps a connector so that every server stream it opens is counted. */
  connector(connect: ServerConnector): ServerConnector {
    return async (address) => {
      const connection = await connect(address);
      const stream = tapPacketStream(connection.stream, {
        sent: (type) => this.#packetCounts.add("from_agent", type),
        received: (type) => this.#packetCounts.add("to_agent", type),
        ended: (error) => {
          if (error === undefined) return;
          this.#serverFailures.inc({ direction: "from_server" });
          this.#streamErrors.inc({
            segment: "to_agent",
            code: grpcCodeName(error),
            packet_type: "Unknown",
          });
        },
      });
      return { ...connection, stream, close: () => connection.close() };
    };
  }

  /** The Prometheus text exposition. */
  render(): Promise<string> {
    return this.#registry.metrics();
  }
}
