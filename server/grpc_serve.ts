/**
 * The function that serves a gRPC listener (frontend or agent port) under the server's
 * `--knp-grpc-transport`: grpc-js's `serveGrpc` or the native HTTP/2 transport's `serveH2Grpc`
 * (the same options and `IncomingStream` shape).
 *
 * @module
 */

import {
  type GrpcServerHandle,
  serveGrpc,
  type ServeGrpcOptions,
} from "@knp/transport/grpc_server";
import { serveH2Grpc } from "@knp/transport/h2/serve";
import type { GrpcTransportConfig } from "./grpc_transport_flags.ts";

/** The function that serves a gRPC listener under `config`. */
export function grpcServeFunction(
  config: GrpcTransportConfig,
): (options: ServeGrpcOptions) => Promise<GrpcServerHandle> {
  return config.grpcTransport === "grpc-js" ? serveGrpc : serveH2Grpc;
}
