/**
 * The server's gRPC transport flag (knp only): `--knp-grpc-transport` picks what serves the gRPC
 * frontend and the gRPC agent port — grpc-js (`grpc-js`, the default) or knp's native HTTP/2
 * transport (`native`, `@knp/transport/h2/serve`) — with its option field, validation and core
 * configuration. The serve function it selects is in `grpc_serve.ts` (this module is loaded with
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
    default: "grpc-js",
    help: "knp only: what serves the gRPC frontend and agent port: grpc-js (@grpc/grpc-js) or " +
      "native (knp's own HTTP/2 transport: large windows, coalesced writes, fair scheduling).",
    implemented: true,
  },
];

/** Option fields of {@linkcode GRPC_TRANSPORT_FLAGS}; `ServerOptions` extends it. */
export interface GrpcTransportServerOptions {
  /** `--knp-grpc-transport` (knp only): `grpc-js` or `native`. @default "grpc-js" */
  knpGrpcTransport: string;
}

/** The core configuration field; `ProxyServerConfig` extends it. */
export interface GrpcTransportConfig {
  /** What serves the gRPC listeners. @default "grpc-js" */
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
