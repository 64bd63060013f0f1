/**
 * `@knp/client`: the client library of knp, a Deno-native Kubernetes apiserver-network-proxy
 * (Konnectivity).
 *
 * The client library dials TCP connections through a proxy server's gRPC frontend, over a Unix
 * domain socket or TCP with mTLS, speaking upstream's wire protocol.
 *
 * @example Dial through a server's UDS
 * ```ts ignore
 * import { createSingleUseTunnel } from "@knp/client";
 * const tunnel = createSingleUseTunnel({ udsPath: "/run/konnectivity/konnectivity-server.socket" });
 * await using conn = await tunnel.dial("tcp", "10.0.0.7:10250");
 * await conn.readable.pipeTo(Deno.stdout.writable);
 * ```
 *
 * @module
 */

export {
  createSingleUseTunnel,
  createTunnel,
  dialThroughProxy,
  type Tunnel,
  type TunnelOptions,
} from "./tunnel.ts";
export { type DialOptions, TunnelConn } from "./tunnel_conn.ts";
export type { TunnelMetrics } from "./tunnel_metrics.ts";
export {
  DialError,
  type DialErrorDetails,
  type DialFailureReason,
  KnpError,
  type KnpErrorCode,
} from "@knp/core/errors";
export type { DialErrorKind } from "@knp/core/dial_errors";
