/**
 * The server's gRPC transport flag (knp only): `--knp-grpc-transport` picks what serves the gRPC
 * frontend and the gRPC agent port — knp's native HTTP/2 transport (`native`, the binary's default,
 * `@knp/transport/h2/serve`) or grpc-js (`grpc-js`, the fallback) — with its option field,
 * validation and core configuration. The binary defaults to `native`: under Deno 2.9.6, grpc-js's
 * server runs on node:http2, whose nghttp2 aborted the process (assertion in
 * `find_stream_on_goaway_func`) under a dial storm, and it is slower. `startProxyServer`'s own
 * default stays grpc-js. The serve function it selects is in `grpc_serve.ts` (this module is loaded with
 * the flag table, before permissions are narrowed, so it must not load grpc-js).
 *
 * @module
 */

import type { FlagSpec } from "@knp/cli/flags";
import { invalidFlag } from "@knp/cli/flags";

/** The values `--knp-grpc-transport` accepts. */
export const GRPC_TRANSPORTS = ["grpc-js", "native"] as const;

/** A gRPC transport. */
export type GrpcTransport = (typeof GRPC_TRANSPORTS)[number];

/** The transport flags, spread into `SERVER_FLAGS`. */
export const GRPC_TRANSPORT_FLAGS: readonly FlagSpec[] = [
  {
    name: "knp-grpc-transport",
    type: "string",
    default: "native",
    help: "knp only: what serves the gRPC frontend and agent port: native (knp's own HTTP/2 " +
      "transport: large windows, coalesced writes, fair scheduling) or grpc-js (@grpc/grpc-js, " +
      "the fallback).",
    implemented: true,
  },
];

/** Option fields of {@linkcode GRPC_TRANSPORT_FLAGS}; `ServerOptions` extends it. */
export interface GrpcTransportServerOptions {
  /** `--knp-grpc-transport` (knp only): `native` or `grpc-js`. @default "native" */
  knpGrpcTransport: string;
}

/** The core configuration field; `ProxyServerConfig` extends it. */
export interface GrpcTransportConfig {
  /** What serves the gRPC listeners. @default "native" */
  grpcTransport?: GrpcTransport | undefined;
}

/** Checks `--knp-grpc-transport`. @throws {KnpError} `INVALID_FLAG` for another value */
export function validateGrpcTransportOptions(o: GrpcTransportServerOptions): void {
  if (!(GRPC_TRANSPORTS as readonly string[]).includes(o.knpGrpcTransport)) {
    throw invalidFlag(
      `--knp-grpc-transport: must be one of ${
        GRPC_TRANSPORTS.join(", ")
      }, got "${o.knpGrpcTransport}"`,
    );
  }
}

/** The core's configuration from the options. */
export function grpcTransportConfig(o: GrpcTransportServerOptions): GrpcTransportConfig {
  validateGrpcTransportOptions(o);
  return { grpcTransport: o.knpGrpcTransport as GrpcTransport };
}
