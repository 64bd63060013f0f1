/**
 * Helpers that turn grpc-js values into knp's (errors, metadata, keepalive options), shared by the
 * gRPC client and server adapters. Not exported from the package: their signatures name grpc-js
 * types, which are not part of knp's public API.
 *
 * @module
 */

import * as grpc from "@grpc/grpc-js";
import { KnpError } from "@knp/core/errors";
import type { KeepaliveOptions } from "./packet_stream.ts";

/** A grpc-js error or status as a `TUNNEL_CLOSED` {@linkcode KnpError}. */
export function grpcError(err: Partial<grpc.ServiceError>): KnpError {
  const code = err.code ?? grpc.status.UNKNOWN;
  const details = err.details || err.message || "stream error";
  return new KnpError("TUNNEL_CLOSED", `${grpc.status[code] ?? code}: ${details}`, { cause: err });
}

/** Metadata values for a key, as strings. */
export function metadataValues(md: grpc.Metadata, key: string): string[] {
  return md.get(key).map((v) => (typeof v === "string" ? v : new TextDecoder().decode(v)));
}

/**
 * grpc-js channel options for {@linkcode KeepaliveOptions}: HTTP/2 pings every `intervalMs`, the
 * connection (and so every stream on it) failing when one is unanswered for `timeoutMs`.
 */
export function grpcKeepaliveOptions(keepalive: KeepaliveOptions): grpc.ChannelOptions {
  return {
    "grpc.keepalive_time_ms": keepalive.intervalMs,
    "grpc.keepalive_timeout_ms": keepalive.timeoutMs,
    "grpc.keepalive_permit_without_calls": 1,
  };
}
