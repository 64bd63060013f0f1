/**
 * The server's Prometheus metrics: upstream's names, labels, HELP texts and buckets
 * (`konnectivity_network_proxy_server_*`) in a per-server prom-client `Registry` (several servers
 * share a test process), with the process metrics (`process_*`, `nodejs_*`) as upstream has Go's,
 * plus knp's own (`knp_server_*`: agent refusals, policy denials, proxied bytes, close reasons).
 * Counters and histograms are fed by the core's events ({@linkcode ServerEvent}) and by its packet
 * streams (tapped through `ServerEvents.tap`); gauges read the core when scraped.
 *
 * ```ts
 * import { ProxyServer } from "./proxy_server.ts";
 *
 * const core = new ProxyServer({ serverId: "s1" });
 * const metrics = new ServerMetrics(core, { processMetrics: false });
 * const text = await metrics.render();
 * console.log(readSample(text, "konnectivity_network_proxy_server_pending_backend_dials")); // 0
 * metrics.dispose();
 * ```
 *
 * @module
 */

import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import { certificateExpiryMetrics, type CertificateSource } from "@knp/cli/certificate_metrics";
import type { PacketStream } from "@knp/transport/packet_stream";
import { grpcCodeName, type PacketTap, tapPacketStream } from "@knp/transport/packet_tap";
import { CounterBatch } from "@knp/transport/counter_batch";
import type { ProxyServer } from "./proxy_server.ts";
import type { ServerEvent } from "./server_events.ts";
import { newRegistry, serverLeaseMetrics } from "./metrics_registry.ts";

const NS = "konnectivity_network_proxy_server";
/** Upstream's dial and frontend-write latency buckets (seconds). */
const LATENCY_BUCKETS = [0.000001, 0.00001, 0.0001, 0.005, 0.025, 0.1, 0.5, 2.5, 12.5];
/** Upstream's connection duration buckets (seconds). */
const DURATION_BUCKETS = [1, 5, 15, 30, 60, 300, 900, 1800, 3600, 14400, 43200, 86400];

/** Options of {@linkcode ServerMetrics}. */
export interface ServerMetricsOptions {
  /** Open HTTP-CONNECT client connections (upstream's `http_connections`). @default () => 0 */
  httpConnections?: () => number;
  /** The frontend mode: HTTP-CONNECT tunnels are not `grpc_connections{Proxy}`. @default grpc */
  mode?: "grpc" | "http-connect";
  /** Include the process metrics (`process_*`, `nodejs_*`). @default true */
  processMetrics?: boolean;
  /** TLS files whose certificates' expiry `knp_certificate_expiry_seconds` reports. */
  certificates?: readonly CertificateSource[];
}

type Tally = Counter<string>;

/** The server's metric set, bound to one core. */
export class ServerMetrics {
  readonly #registry: Registry;
  readonly #core: ProxyServer;
  readonly #unsubscribe: () => void;
  readonly #c: Record<string, Tally> = {};
  readonly #h: Record<string, Histogram> = {};
  /** Per-packet counts (packets by segment and type; bytes by direction), handed over on scrape. */
  readonly #packetCounts = new CounterBatch();
  readonly #byteCounts = new CounterBatch();
  /**
   * Establishment time of open connections by agent and connection ID, for
   * `connection_duration_seconds` (nested maps: no key string per connection).
   */
  readonly #opened = new Map<string, Map<bigint, number>>();

  /** Subscribes to `core`'s events and taps its streams; the gauges read `core` when rendered. */
  constructor(core: ProxyServer, options: ServerMetricsOptions = {}) {
    this.#core = core;
    this.#registry = newRegistry(options.processMetrics ?? true);
    this.#histograms();
    this.#gauges(options);
    this.#counters();
    serverLeaseMetrics(this.#registry, NS);
    certificateExpiryMetrics(this.#registry, options.certificates ?? []);
    this.#pressureGauges();
    this.#unsubscribe = core.events.on((event) => this.#onEvent(event));
    core.events.tap = (stream, side) => this.#tap(stream, side);
  }

  /** knp's queue pressure, read when scraped: frontend send queues holding agent streams paused. */
  #pressureGauges(): void {
    const agents = () => this.#core.backends.agents;
    const registers = [this.#registry];
    new Gauge({
      name: "knp_server_backpressured_connections",
      help: "Connections whose frontend send queue is over its high-water mark, holding their " +
        "agent stream paused.",
      registers,
      collect() {
        let n = 0;
        for (const backend of agents()) n += backend.pause.holders;
        this.set(n);
      },
    });
    const frontends = () => this.#core.frontends;
    new Gauge({
      name: "knp_server_connections_waiting_for_credit",
      help: "Established connections whose frontend is not read because the agent has granted " +
        "no flow-control credit (the far end is not taking the bytes).",
      registers,
      collect() {
        let n = 0;
        for (const conn of frontends()) if (conn.held("credit")) n++;
        this.set(n);
      },
    });
    new Gauge({
      name: "knp_server_paused_agent_streams",
      help: "Agent streams paused because a connection's frontend send queue is full.",
      registers,
      collect() {
        let n = 0;
        for (const backend of agents()) if (backend.pause.holders > 0) n++;
        this.set(n);
      },
    });
  }

  #histograms(): void {
    const registers = [this.#registry];
    const histogram = (key: string, name: string, help: string, buckets: number[]) => {
      this.#h[key] = new Histogram({ name: `${NS}_${name}`, help, buckets, registers });
    };
    histogram(
      "dial",
      "dial_duration_seconds",
      "Latency of dial to the remote endpoint in seconds",
      LATENCY_BUCKETS,
    );
    histogram(
      "write",
      "frontend_write_duration_seconds",
      "Latency of write to the frontend in seconds",
      LATENCY_BUCKETS,
    );
    histogram(
      "duration",
      "connection_duration_seconds",
      "Duration in seconds a proxied end-to-end connection was established (post-dial) before being closed.",
      DURATION_BUCKETS,
    );
  }

  #gauges(options: ServerMetricsOptions): void {
    const core = this.#core;
    const registers = [this.#registry];
    const http = options.httpConnections ?? (() => 0);
    const grpcFrontends = (options.mode ?? "grpc") === "grpc";
    const gauge = (name: string, help: string, read?: (g: Gauge) => void, labels?: string[]) => {
      new Gauge({
        name: `${NS}_${name}`,
        help,
        registers,
        ...(labels ? { labelNames: labels } : {}),
        ...(read
          ? {
            collect() {
              read(this);
            },
          }
          : {}),
      });
    };
    gauge(
      "grpc_connections",
      "Number of current grpc connections, partitioned by service method.",
      (g) => {
        g.set({ service_method: "Connect" }, core.backendStreams);
        g.set({ service_method: "Proxy" }, grpcFrontends ? core.frontends.size : 0);
      },
      ["service_method"],
    );
    gauge("http_connections", "Number of current HTTP CONNECT connections", (g) => g.set(http()));
    gauge(
      "ready_backend_connections",
      "Number of konnectivity agent connected to the proxy server. DEPRECATED, please use ready_backends",
      (g) => g.set(core.backends.storages[0]?.size ?? 0),
    );
    gauge(
      "ready_backends",
      "Number of konnectivity agent connected to the proxy server",
      (g) => {
        for (const s of core.backends.storages) g.set({ proxy_strategy: s.strategy }, s.size);
      },
      ["proxy_strategy"],
    );
    gauge(
      "pending_backend_dials",
      "Current number of pending backend dial requests",
      (g) => g.set(core.pendingDials),
    );
    gauge(
      "established_connections",
      "Current number of established end-to-end connections (post-dial).",
      (g) => g.set(core.establishedConnections),
    );
    gauge(
      "full_receive_channels",
      "Number of current connections blocked by a full receive channel, partitioned by service method.",
      undefined,
      ["service_method"],
    );
  }

  #counter(
    key: string,
    name: string,
    help: string,
    labelNames: string[] = [],
    collect?: (this: Tally) => void,
  ): void {
    const registers = [this.#registry];
    this.#c[key] = new Counter({ name, help, labelNames, registers, ...(collect && { collect }) });
  }

  #counters(): void {
    const counter = this.#counter.bind(this);
    counter(
      "dialFailures",
      `${NS}_dial_failure_count`,
      "Number of dial failures observed. Multiple failures can occur for a single dial request.",
      ["reason"],
    );
    counter(
      "streamErrors",
      `${NS}_stream_errors_total`,
      "Count of gRPC stream errors, by segment, grpc Code, packet type. (example: from_agent, Code.Unavailable, DIAL_RSP)",
      ["segment", "code", "packet_type"],
    );
    counter(
      "refusals",
      "knp_server_agent_refusals_total",
      "Agents refused at their handshake (knp only), by reason and link.",
      ["reason", "link"],
    );
    counter(
      "denials",
      "knp_server_policy_denials_total",
      "Dials denied by the destination policy (knp only), by the deciding rule's source.",
      ["source"],
    );
    counter(
      "closed",
      "knp_server_connections_closed_total",
      "End-to-end connections closed (knp only), by reason.",
      ["reason"],
    );
    this.#packetCounters();
  }

  /** The per-packet counters: counted in batches, handed to prom-client when scraped. */
  #packetCounters(): void {
    const packetCounts = this.#packetCounts;
    const byteCounts = this.#byteCounts;
    this.#counter(
      "packets",
      `${NS}_stream_packets_total`,
      "Count of packets processed, by segment and packet type (example: from_client, DIAL_REQ)",
      ["segment", "packet_type"],
      function () {
        packetCounts.drain((segment, type, n) => this.inc({ segment, packet_type: type }, n));
      },
    );
    this.#counter(
      "bytes",
      "knp_server_proxied_bytes_total",
      "Payload bytes of DATA packets proxied (knp only), by direction (client_to_agent, agent_to_client).",
      ["direction"],
      function () {
        byteCounts.drain((direction, _, n) => this.inc({ direction }, n));
      },
    );
  }

  #onEvent(event: ServerEvent): void {
    switch (event.kind) {
      case "dial-failure":
        return this.#c.dialFailures!.inc({ reason: event.reason });
      case "agent-refused":
        return this.#c.refusals!.inc({ reason: event.reason, link: event.link });
      case "dial-denied":
        return this.#c.denials!.inc({ source: event.source });
      case "dial-success":
        this.#h.dial!.observe(event.ms / 1000);
        this.#openedOf(event.agentId).set(event.connectId, performance.now());
        return;
      case "connection-closed": {
        const byId = this.#opened.get(event.agentId);
        const opened = byId?.get(event.connectId);
        byId?.delete(event.connectId);
        if (byId?.size === 0) this.#opened.delete(event.agentId);
        if (opened !== undefined) this.#h.duration!.observe((performance.now() - opened) / 1000);
        this.#c.closed!.inc({ reason: event.reason ?? "unknown" });
        return;
      }
    }
  }

  #openedOf(agentId: string): Map<bigint, number> {
    let byId = this.#opened.get(agentId);
    if (byId === undefined) this.#opened.set(agentId, byId = new Map());
    return byId;
  }

  /** Counts a core stream's packets, bytes and end error (upstream's segments). */
  #tap(stream: PacketStream, side: "frontend" | "agent"): PacketStream {
    // One tap per side, shared by every stream of that side: nothing per connection.
    const tap = side === "frontend"
      ? (this.#taps.frontend ??= this.#sideTap(side))
      : (this.#taps.agent ??= this.#sideTap(side));
    return tapPacketStream(stream, tap);
  }

  readonly #taps: { frontend?: PacketTap; agent?: PacketTap } = {};

  #sideTap(side: "frontend" | "agent"): PacketTap {
    const [out, inn] = side === "frontend"
      ? ["to_client", "from_client"]
      : ["to_agent", "from_agent"];
    const direction = side === "frontend" ? "client_to_agent" : "agent_to_client";
    const packets = this.#packetCounts;
    const bytesIn = this.#byteCounts;
    const write = this.#h.write!;
    return {
      ...(side === "frontend" ? { written: (ms: number) => write.observe(ms / 1000) } : {}),
      sent: (type) => packets.add(out!, type),
      received: (type, bytes) => {
        packets.add(inn!, type);
        if (bytes > 0) bytesIn.add(direction, "", bytes);
      },
      ended: (error) => {
        if (error === undefined) return;
        this.#c.streamErrors!.inc({
          segment: inn!,
          code: grpcCodeName(error),
          packet_type: "Unknown",
        });
      },
    };
  }

  /** Stops counting the core's events and tapping its new streams. */
  dispose(): void {
    this.#unsubscribe();
    this.#core.events.tap = undefined;
  }

  /** Prometheus text exposition. */
  render(): Promise<string> {
    return this.#registry.metrics();
  }
}

/** Reads one sample (`name{labels}`) from an exposition text; undefined when absent. */
export function readSample(text: string, series: string): number | undefined {
  for (const line of text.split("\n")) {
    if (line.startsWith(series + " ")) return Number(line.slice(series.length + 1));
  }
  return undefined;
}
