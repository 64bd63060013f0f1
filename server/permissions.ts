/**
 * The Deno permissions `proxy-server` needs, computed from its command line:
 *
 * - net: each listener's `host:port` — the frontend (`--server-bind-address`:`--server-port`, or
 *   `unix:<--uds-name>`), `--agent-bind-address`:`--agent-port` (and `--knp-websocket-port`),
 *   `--health-bind-address`:`--health-port`, `--admin-bind-address`:`--admin-port`; an empty bind
 *   address means `0.0.0.0` (the admin port: `127.0.0.1`). The server dials nothing but the
 *   destinations of `--knp-direct-destinations` (`host:port` each; all of net for a CIDR,
 *   name-suffix or `*` rule, which Deno cannot name).
 * - read: the certificate, key and CA files given, `--kubeconfig`, and the `--uds-name` socket;
 * - write: only the `--uds-name` socket (it is removed, created and chmod-ed);
 * - env: the 14 variables grpc-js reads when it loads, and `PROXY_SERVER_ID` unless `--server-id`
 *   is given.
 * - token authentication (`--agent-namespace`) or the lease controller
 *   (`--enable-lease-controller`): the Kubernetes client's needs (see
 *   `kube_client.ts`): all of env (its dependencies list the environment when they load), read on
 *   `--kubeconfig` and the files it references (or the in-cluster service-account directory), and
 *   net to the API server's `host:port` (from the kubeconfig, or `KUBERNETES_SERVICE_HOST`/`_PORT`).
 *
 * `deno run jsr:@knp/server --knp-print-permissions <flags>` (or `server/main.ts`) prints them,
 * followed by the one V8 flag the server runs with ({@linkcode SERVER_V8_FLAGS}): the printed lines
 * are the whole `deno run` (or `deno compile`) flag set.
 *
 * @module
 */

import {
  fileNeeds,
  grpcJsNeeds,
  listenNeeds,
  permissionFlags,
  type PermissionNeed,
  type PermissionPlan,
  permissionPlan,
} from "@knp/cli/permissions";
import type { ServerOptions } from "./options.ts";
import { kubeClientNeeds } from "./kube_client.ts";
import { SERVER_FLAGS } from "./server_flags.ts";
import { directNeeds } from "./direct_flags.ts";

function frontendNeeds(o: ServerOptions): PermissionNeed[] {
  if (o.udsName === "") {
    return listenNeeds("--server-port", o.serverBindAddress, o.serverPort, "0.0.0.0");
  }
  return [
    { kind: "net", value: `unix:${o.udsName}`, reason: "--uds-name" },
    { kind: "read", value: o.udsName, reason: "--uds-name" },
    { kind: "write", value: o.udsName, reason: "--uds-name" },
  ];
}

/** The WebSocket agent link: its public TLS port (the link runs on the accepted sockets). */
function websocketNeeds(o: ServerOptions): PermissionNeed[] {
  return listenNeeds("--knp-websocket-port", o.agentBindAddress, o.knpWebsocketPort, "0.0.0.0");
}

/** The needs of parsed (not necessarily validated) server options. */
export function serverOptionNeeds(o: ServerOptions): PermissionNeed[] {
  return [
    ...grpcJsNeeds(),
    ...frontendNeeds(o),
    ...listenNeeds("--agent-port", o.agentBindAddress, o.agentPort, "0.0.0.0"),
    ...(o.knpWebsocketPort > 0 ? websocketNeeds(o) : []),
    ...listenNeeds("--health-port", o.healthBindAddress, o.healthPort, "0.0.0.0"),
    ...listenNeeds("--admin-port", o.adminBindAddress, o.adminPort, "127.0.0.1"),
    ...directNeeds(o),
    ...fileNeeds({
      "server-cert": o.serverCert,
      "server-key": o.serverKey,
      "server-ca-cert": o.serverCaCert,
      "cluster-cert": o.clusterCert,
      "cluster-key": o.clusterKey,
      "cluster-ca-cert": o.clusterCaCert,
      "kubeconfig": o.kubeconfig,
    }),
    ...(o.agentNamespace !== "" || o.enableLeaseController
      ? kubeClientNeeds(
        o.kubeconfig,
        o.agentNamespace !== "" ? "--agent-namespace" : "--enable-lease-controller",
      )
      : []),
  ];
}

/** The permission plan of a `proxy-server` command line (see {@linkcode permissionPlan}). */
export function serverPermissionPlan(args: readonly string[]): PermissionPlan {
  return permissionPlan<ServerOptions>(SERVER_FLAGS, args, serverOptionNeeds);
}

/**
 * The V8 flag the server runs with, printed after its permissions. Every byte the server reads
 * from an agent over node:tls arrives in a freshly allocated buffer, and V8 (as Deno 2.9.6 sets
 * it up) starts a full mark-compact each time such external memory grows by 10 % over what the
 * last one left: 66–78 of them per 2 GiB downloaded through 100 connections, nearly half of the
 * server's CPU. Letting it grow 4× first leaves the buffers to the young generation's cheap
 * collections: measured on that download, server CPU 1.65–1.71 → 0.85–0.89 s/GiB, throughput
 * 520–584 → 695–713 MB/s; peak RSS 211–216 MB in 9 runs without it, 209–224 MB in 10 of 12 with
 * it (329 and 358 MB in the other two). Not set on the agent: its peak RSS grew 365 → 636 MB with
 * it for a 12 % CPU gain.
 */
export const SERVER_V8_FLAGS = "--v8-flags=--external-memory-max-growing-factor=4";

/**
 * The whole `deno run` flag set of `proxy-server` for `args`: its permissions and
 * {@linkcode SERVER_V8_FLAGS}; `[]` if `args` do not parse.
 */
export function serverRunFlags(args: readonly string[]): string[] {
  const permissions = serverPermissionFlags(args);
  return permissions.length === 0 ? [] : [...permissions, SERVER_V8_FLAGS];
}

/**
 * The `deno run` permission flags `proxy-server` needs for `args`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * const flags = serverPermissionFlags([
 *   "--uds-name=/run/k.sock", "--server-port=0", "--cluster-cert=/pki/s.crt",
 *   "--cluster-key=/pki/s.key", "--server-id=a",
 * ]);
 * assert.deepEqual(flags.slice(1), [
 *   "--allow-net=unix:/run/k.sock,0.0.0.0:8091,0.0.0.0:8092,127.0.0.1:8095",
 *   "--allow-read=/run/k.sock,/pki/s.crt,/pki/s.key",
 *   "--allow-write=/run/k.sock",
 * ]);
 * ```
 *
 * @param args The server's arguments (without the program name).
 * @returns The flags, or `[]` if `args` do not parse.
 */
export function serverPermissionFlags(args: readonly string[]): string[] {
  const plan = serverPermissionPlan(args);
  return plan.needs === undefined ? [] : permissionFlags(plan.needs);
}

// `deno task server <flags>`: run `main.ts` with exactly the permissions the flags need.
if (import.meta.main) {
  const { launchWithPermissions } = await import("@knp/cli/binary");
  const entry = new URL("./main.ts", import.meta.url).pathname;
  await launchWithPermissions(entry, serverRunFlags(Deno.args), Deno.args);
}
