/**
 * The server's Lease flags: upstream's `--enable-lease-controller`, `--lease-namespace` and
 * `--lease-label` (in `server_flags.ts`), knp's `--knp-lease-duration`,
 * `--knp-lease-renew-interval` and `--knp-lease-gc-interval` (upstream's fixed 30 s, 15 s, 15 s
 * by default), their checks, and the {@linkcode LeaseController} they configure, talking to the
 * API through `@kubernetes/client-node` with `--kubeconfig` or the in-cluster configuration —
 * whether or not token authentication is on (upstream's controller needs it).
 *
 * @module
 */

import type { FlagSpec } from "@knp/cli/flags";
import { invalidFlag } from "@knp/cli/flags";
import { showDuration } from "@knp/cli/flag_checks";
import {
  apiStatusOf,
  type LoadedKubeConfig,
  loadKubeConfig,
  withSignal,
} from "@knp/cli/kube_client";
import { leaseName } from "@knp/cli/kube_leases";
import type { Logger } from "@knp/core/log";
import {
  type LeaseApi,
  leaseBody,
  LeaseController,
  type LeaseWrite,
  requireLease,
} from "./lease_controller.ts";
import type { ProxyServerHandle } from "./server.ts";

/** knp's Lease timing flags, merged into the server's flag table. */
export const LEASE_FLAGS: readonly FlagSpec[] = [
  {
    name: "knp-lease-duration",
    type: "duration",
    default: 30_000,
    help: "knp only: leaseDurationSeconds of the server's Lease (whole seconds; upstream: 30s).",
    implemented: true,
  },
  {
    name: "knp-lease-renew-interval",
    type: "duration",
    default: 15_000,
    help: "knp only: how often the server renews its Lease (upstream: 15s); below the duration.",
    implemented: true,
  },
  {
    name: "knp-lease-gc-interval",
    type: "duration",
    default: 15_000,
    help: "knp only: how often expired server Leases are garbage-collected (upstream: 15s).",
    implemented: true,
  },
];

/** The Lease fields of the server's options (durations in ms). */
export interface LeaseControllerOptions {
  /** `--enable-lease-controller`: publish the server's Lease, cull expired ones. @default false */
  enableLeaseController: boolean;
  /** `--lease-namespace`. @default "kube-system" */
  leaseNamespace: string;
  /** `--lease-label`: `k=v,...`. @default "k8s-app=konnectivity-server" */
  leaseLabel: string;
  /** `--kubeconfig`: empty means in-cluster. */
  kubeconfig: string;
  /** `--server-id`: the Lease's holder and name suffix. */
  serverId: string;
  /** `--knp-lease-duration`. @default 30000 */
  knpLeaseDuration: number;
  /** `--knp-lease-renew-interval`. @default 15000 */
  knpLeaseRenewInterval: number;
  /** `--knp-lease-gc-interval`. @default 15000 */
  knpLeaseGcInterval: number;
}

const LABEL_NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** What the API would refuse in `--lease-label` (`k=v,...`), if anything. */
export function leaseLabelProblem(text: string): string | undefined {
  for (const pair of text.split(",")) {
    const [key = "", value = ""] = pair.split("=").map((p) => p.trim());
    const slash = key.lastIndexOf("/");
    const prefix = slash >= 0 ? key.slice(0, slash) : undefined;
    const name = key.slice(slash + 1);
    if (prefix !== undefined && (prefix.length > 253 || !DNS_SUBDOMAIN.test(prefix))) {
      return `invalid label key "${key}": the prefix must be a DNS subdomain`;
    }
    if (name.length > 63 || !LABEL_NAME.test(name)) {
      return `invalid label key "${key}": the name must be 1-63 alphanumerics, '-', '_' or '.'`;
    }
    if (value !== "" && (value.length > 63 || !LABEL_NAME.test(value))) {
      return `invalid label value "${value}": at most 63 alphanumerics, '-', '_' or '.'`;
    }
  }
  return undefined;
}

/**
 * Checks the Lease flags (when the controller is on; `--lease-label` is checked by
 * `validateServerOptions`).
 *
 * @throws {KnpError} `INVALID_FLAG` naming the flag
 */
export function validateLeaseOptions(o: LeaseControllerOptions): void {
  if (!o.enableLeaseController) return;
  if (o.leaseNamespace === "") throw invalidFlag("--lease-namespace: must not be empty");
  const problem = leaseLabelProblem(o.leaseLabel);
  if (problem !== undefined) throw invalidFlag(`--lease-label: ${problem}`);
  const d = o.knpLeaseDuration;
  if (!(d >= 1000) || d % 1000 !== 0) {
    throw invalidFlag(`--knp-lease-duration: must be whole seconds >= 1s, got ${showDuration(d)}`);
  }
  if (!(o.knpLeaseRenewInterval > 0) || o.knpLeaseRenewInterval >= d) {
    throw invalidFlag(
      `--knp-lease-renew-interval: must be > 0 and below --knp-lease-duration (${
        showDuration(d)
      }), got ${showDuration(o.knpLeaseRenewInterval)}`,
    );
  }
  if (!(o.knpLeaseGcInterval > 0)) {
    throw invalidFlag(
      `--knp-lease-gc-interval: must be > 0, got ${showDuration(o.knpLeaseGcInterval)}`,
    );
  }
}

/** The Lease calls in `namespace` through client-node's `CoordinationV1Api`. */
export function kubeLeaseApi(loaded: LoadedKubeConfig, namespace: string): LeaseApi {
  const api = loaded.kc.makeApiClient(loaded.k8s.CoordinationV1Api);
  // deno-lint-ignore no-explicit-any -- MicroTime fields are sent as text (see leaseBody)
  const body = (w: LeaseWrite) => leaseBody(namespace, w) as any;
  const notFound = (err: unknown) => {
    if (apiStatusOf(err) === 404) return undefined;
    throw err;
  };
  return {
    server: loaded.server,
    get: (name, signal) =>
      api.readNamespacedLease({ name, namespace }, withSignal(signal)).then(requireLease, notFound),
    create: (w, signal) =>
      api.createNamespacedLease({ namespace, body: body(w) }, withSignal(signal)).then(
        requireLease,
      ),
    replace: (w, signal) =>
      api.replaceNamespacedLease({ name: w.name, namespace, body: body(w) }, withSignal(signal))
        .then(requireLease),
    list: async (labelSelector, signal) =>
      (await api.listNamespacedLease({ namespace, labelSelector }, withSignal(signal))).items.map(
        requireLease,
      ),
    delete: (name, resourceVersion, signal) =>
      api.deleteNamespacedLease({
        name,
        namespace,
        ...(resourceVersion !== undefined ? { body: { preconditions: { resourceVersion } } } : {}),
      }, withSignal(signal)).then(() => true, (err) => notFound(err) ?? false),
  };
}

/**
 * The Lease controller the flags configure (not started), or undefined when
 * `--enable-lease-controller` is off.
 *
 * @param labels `--lease-label`, parsed.
 * @throws {KnpError} `CONFIG` naming the flag when the Kubernetes configuration cannot be loaded
 */
export async function leaseControllerFromOptions(
  o: LeaseControllerOptions,
  labels: Record<string, string>,
  logger: Logger,
): Promise<LeaseController | undefined> {
  if (!o.enableLeaseController) return undefined;
  const loaded = await loadKubeConfig(o.kubeconfig, {
    flag: "--enable-lease-controller",
    what: "the lease controller",
  });
  return new LeaseController({
    api: kubeLeaseApi(loaded, o.leaseNamespace),
    serverId: o.serverId,
    leaseName: leaseName(o.serverId),
    labels,
    durationSeconds: o.knpLeaseDuration / 1000,
    renewIntervalMs: o.knpLeaseRenewInterval,
    gcIntervalMs: o.knpLeaseGcInterval,
    logger: logger.with({ component: "lease-controller", namespace: o.leaseNamespace }),
  });
}

/**
 * `handle` whose `close` also stops `leases` and deletes the server's Lease, as upstream: at once
 * when closing without grace, after the servers have shut down with it.
 */
export function closingLeases(
  handle: ProxyServerHandle,
  leases: LeaseController | undefined,
): ProxyServerHandle {
  if (leases === undefined) return handle;
  const close = async (graceful?: boolean) => {
    if (!graceful) void leases.stop();
    await handle.close(graceful);
    await leases.stop();
  };
  return { ...handle, close, [Symbol.asyncDispose]: () => close() };
}
