/**
 * Registry helpers of the server's metrics: `newRegistry` (from `@knp/cli/process_metrics`: a
 * fresh prom-client `Registry` sharing the process metrics) and upstream's lease-controller
 * metrics.
 *
 * ```ts
 * const registry = newRegistry(false);
 * serverLeaseMetrics(registry, "konnectivity_network_proxy_server");
 * console.log((await registry.metrics()).includes("culled_leases_count")); // true
 * ```
 *
 * @module
 */

import { Counter, Histogram, type Registry } from "prom-client";

export { newRegistry } from "@knp/cli/process_metrics";

/**
 * Registers upstream's lease garbage-collection metrics (names, labels and HELP texts as upstream,
 * typos included). knp's lease controller logs its calls; these stay at zero samples.
 */
export function serverLeaseMetrics(registry: Registry, ns: string): void {
  const registers = [registry];
  new Counter({
    name: `${ns}_culled_leases_count`,
    help: "Count of expired leases that the lease garbage collection controller has culled.",
    registers,
  });
  new Histogram({
    name: `${ns}_lease_delete_latency_seconds`,
    help: "Latency of lease deletion calls by the garbage collection controller in seconds.",
    labelNames: ["http_status_code"],
    registers,
  });
  new Counter({
    name: `${ns}_lease_delete_total`,
    help:
      "Count of lease delection calls by the garbage collection controller. Labeled by HTTP status code and reason.",
    labelNames: ["http_status_code", "reason"],
    registers,
  });
  new Histogram({
    name: `${ns}_lease_list_latency_seconds`,
    help: "Latency of lease list calls by the garbage collection controller in seconds.",
    labelNames: ["http_status_code"],
    registers,
  });
  new Counter({
    name: `${ns}_lease_list_total`,
    help:
      "Count of lease deletion calls by the garbage collection controller. Labeled by HTTP status code and reason.",
    labelNames: ["http_status_code", "reason"],
    registers,
  });
}
