/**
 * The agent's Lease-count flags — upstream's `--count-server-leases`, `--lease-namespace`,
 * `--lease-label-selector` (old name `--lease-label`), `--server-count-source` and `--kubeconfig`
 * (in `agent_flags.ts`) — their checks, and the {@linkcode LeaseCounter} they configure: a list
 * and watch of `coordination.k8s.io/v1` Leases through `@kubernetes/client-node` with
 * `--kubeconfig` or the in-cluster configuration.
 *
 * @module
 */

import { invalidFlag } from "@knp/cli/flags";
import { type LoadedKubeConfig, loadKubeConfig, withSignal } from "@knp/cli/kube_client";
import { leaseRecord } from "@knp/cli/kube_leases";
import { KnpError } from "@knp/core/errors";
import type { Logger } from "@knp/core/log";
import { LeaseCounter, type LeaseEvent, type LeaseWatchApi } from "./lease_counter.ts";
import { type ServerCounter, serverCounter } from "./server_count.ts";

/** The Lease-count fields of the agent's options. */
export interface LeaseCountOptions {
  /** `--count-server-leases`. @default false */
  countServerLeases: boolean;
  /** `--lease-namespace`. @default "kube-system" */
  leaseNamespace: string;
  /** `--lease-label-selector`. @default "k8s-app=konnectivity-server" */
  leaseLabelSelector: string;
  /** `--server-count-source`: `''`, `default` or `max`. @default "default" */
  serverCountSource: string;
  /** `--kubeconfig`: empty means in-cluster. */
  kubeconfig: string;
}

/**
 * Checks what `validateAgentOptions` does not (the selector and source are checked there).
 *
 * @throws {KnpError} `INVALID_FLAG` naming the flag
 */
export function validateLeaseCountOptions(o: LeaseCountOptions): void {
  if (o.countServerLeases && o.leaseNamespace === "") {
    throw invalidFlag("--lease-namespace: must not be empty with --count-server-leases");
  }
}

/** A watch ends after 5-10 minutes (client-go's choice); the API closes it, we open the next. */
function watchTimeoutSeconds(): number {
  return 300 + Math.floor(Math.random() * 300);
}

/** An error carrying the HTTP status as `code` (as client-node's `ApiException`). */
function statusError(code: number, message: string): Error {
  return Object.assign(new Error(message), { code, body: { message } });
}

/** Lists and watches the Leases of `namespace` through client-node. */
export function kubeLeaseWatchApi(loaded: LoadedKubeConfig, namespace: string): LeaseWatchApi {
  const { k8s, kc } = loaded;
  const api = kc.makeApiClient(k8s.CoordinationV1Api);
  const path = `/apis/coordination.k8s.io/v1/namespaces/${encodeURIComponent(namespace)}/leases`;
  return {
    server: loaded.server,
    async list(labelSelector, signal) {
      const list = await api.listNamespacedLease({ namespace, labelSelector }, withSignal(signal));
      return {
        leases: list.items.flatMap((item) => leaseRecord(item) ?? []),
        resourceVersion: list.metadata?.resourceVersion ?? "",
      };
    },
    async watch(labelSelector, resourceVersion, onEvent, signal) {
      const url = new URL(loaded.server.replace(/\/$/, "") + path);
      url.searchParams.set("watch", "true");
      url.searchParams.set("labelSelector", labelSelector);
      url.searchParams.set("resourceVersion", resourceVersion);
      url.searchParams.set("allowWatchBookmarks", "true");
      url.searchParams.set("timeoutSeconds", String(watchTimeoutSeconds()));
      const { client, headers } = await denoFetchOptions(loaded);
      try {
        const res = await fetch(url, { client, headers, signal });
        if (res.status !== 200 || res.body === null) {
          const text = await res.text().catch(() => "");
          throw statusError(res.status, apiMessage(text) ?? `watch answered ${res.status}`);
        }
        await readEvents(res.body, onEvent);
      } finally {
        client.close();
      }
    },
  };
}

/** The `message` of a `Status` body, if it is one. */
function apiMessage(text: string): string | undefined {
  try {
    const message = JSON.parse(text)?.message;
    return typeof message === "string" ? message : undefined;
  } catch {
    return undefined;
  }
}

/** Reads watch events (one JSON object a line) until the stream ends; ERROR events throw. */
async function readEvents(
  body: ReadableStream<Uint8Array>,
  onEvent: (event: LeaseEvent) => void,
): Promise<void> {
  let rest = "";
  for await (const chunk of body.pipeThrough(new TextDecoderStream())) {
    const lines = (rest + chunk).split("\n");
    rest = lines.pop() ?? "";
    for (const line of lines) {
      if (line.trim() === "") continue;
      const { type, object } = JSON.parse(line);
      if (type === "ERROR") {
        throw statusError(Number(object?.code) || 500, String(object?.message ?? "watch error"));
      }
      onEvent({
        type,
        lease: type === "BOOKMARK" ? undefined : leaseRecord(object),
        resourceVersion: object?.metadata?.resourceVersion,
      });
    }
  }
}

/**
 * Deno `fetch` options with the kubeconfig's credentials (CA, client certificate, the
 * `Authorization` header of a token or exec plugin), read again at every watch. The watch uses
 * Deno's `fetch` rather than client-node's `Watch` because the latter's HTTP client (undici) does
 * not notice, under Deno, that the API server closed the connection: a stopped API server would
 * go unnoticed until the next Lease expiry.
 */
async function denoFetchOptions(
  loaded: LoadedKubeConfig,
): Promise<{ client: Deno.HttpClient; headers: Record<string, string> }> {
  // deno-lint-ignore no-explicit-any -- https.RequestOptions as client-node fills it
  const opts: any = {};
  await loaded.kc.applyToHTTPSOptions(opts);
  if (opts.rejectUnauthorized === false) {
    throw new KnpError("CONFIG", "--kubeconfig: insecure-skip-tls-verify is not supported");
  }
  const text = (v: unknown) => v === undefined || v === null ? undefined : String(v);
  const ca = text(opts.ca);
  const cert = text(opts.cert);
  const key = text(opts.key);
  const client = Deno.createHttpClient({
    ...(ca !== undefined ? { caCerts: [ca] } : {}),
    ...(cert !== undefined && key !== undefined ? { cert, key } : {}),
  });
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(opts.headers ?? {})) {
    if (v !== undefined) headers[k] = String(v);
  }
  return { client, headers };
}

/**
 * The Lease counter the flags configure (not started), or undefined without
 * `--count-server-leases`. Its `start()` loads the configuration and rejects with `CONFIG`
 * naming the flag when it cannot be loaded.
 */
export function leaseCounterFromOptions(
  o: LeaseCountOptions,
  logger: Logger,
): LeaseCounter | undefined {
  if (!o.countServerLeases) return undefined;
  const namespace = o.leaseNamespace;
  return new LeaseCounter({
    api: async () => {
      const loaded = await loadKubeConfig(o.kubeconfig, {
        flag: "--count-server-leases",
        what: "counting server leases",
      });
      return kubeLeaseWatchApi(loaded, namespace);
    },
    selector: o.leaseLabelSelector,
    namespace,
    logger: logger.with({ component: "lease-counter", namespace }),
  });
}

/** The counter `ClientSet` consumes: the Leases combined with the servers' count. */
export function leaseServerCounter(counter: LeaseCounter, o: LeaseCountOptions): ServerCounter {
  return serverCounter(counter, o.serverCountSource);
}
