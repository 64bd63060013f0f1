/**
 * The process metrics of both binaries: prom-client's default metrics (`process_*` under the
 * names Go's process collector uses upstream, plus `nodejs_*`), collected once per process and
 * shared by every registry {@linkcode newRegistry} makes (several servers or agents may run in one
 * test process, each with its own registry).
 *
 * prom-client reads `/proc/self` for memory and file-descriptor counts. The binaries run with
 * least-privilege permissions that do not grant it (and Deno 2.9.6 serves `/proc` only to
 * `--allow-all`); then those series are left out rather than reported as 0, and
 * `process_resident_memory_bytes` comes from `Deno.memoryUsage()` instead.
 *
 * ```ts
 * const registry = newRegistry(true);
 * console.log((await registry.metrics()).includes("process_cpu_seconds_total")); // true
 * ```
 *
 * @module
 */

import { collectDefaultMetrics, Gauge, type Metric, Registry } from "prom-client";

/** Series prom-client computes from `/proc/self` files. */
const PROC_SERIES = [
  "process_resident_memory_bytes",
  "process_virtual_memory_bytes",
  "process_heap_bytes",
  "process_open_fds",
  "process_max_fds",
];

let shared: Registry | undefined;

/**
 * Whether prom-client can read the `/proc/self` files: granted (asked first, so nothing prompts)
 * and readable. Deno 2.9.6 refuses `/proc` to anything less than `--allow-all` even where
 * `--allow-read` covers the path, so a grant alone does not tell.
 */
function procReadable(): boolean {
  if (Deno.build.os !== "linux") return false;
  const granted = (path: string) => Deno.permissions.querySync({ name: "read", path }).state;
  const files = ["/proc/self/status", "/proc/self/fd", "/proc/self/limits"];
  if (!files.every((path) => granted(path) === "granted")) return false;
  try {
    Deno.readTextFileSync("/proc/self/status");
    return true;
  } catch {
    return false;
  }
}

/** The process-wide registry of the default metrics, made on first use. */
function processMetrics(): Registry {
  if (shared !== undefined) return shared;
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  if (!procReadable()) {
    for (const name of PROC_SERIES) registry.removeSingleMetric(name);
    new Gauge({
      name: "process_resident_memory_bytes",
      help: "Resident memory size in bytes.",
      registers: [registry],
      collect() {
        this.set(Deno.memoryUsage().rss);
      },
    });
  }
  shared = registry;
  return registry;
}

/**
 * A fresh registry; with `withProcess`, holding the shared process metrics.
 *
 * @internal For the server and agent packages; the type is prom-client's `Registry`.
 */
export function newRegistry(withProcess: boolean): Registry {
  const registry = new Registry();
  if (!withProcess) return registry;
  // getMetricsAsArray() returns the metric objects themselves (typed as their JSON shape).
  for (const metric of processMetrics().getMetricsAsArray()) {
    registry.registerMetric(metric as unknown as Metric);
  }
  return registry;
}
