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

/**
 * Trailing metadata key of a retry hint, in milliseconds (gRPC's standard server pushback key):
 * sent with a refusal whose error has a `retryAfterMs`, read back into the client's error.
 */
export const RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms";

/**
 * A grpc-js error or status as a `TUNNEL_CLOSED` {@linkcode KnpError}; a retry hint in its
 * trailers ({@linkcode RETRY_PUSHBACK_KEY}) becomes the error's `retryAfterMs`.
 */
export function grpcError(err: Partial<grpc.ServiceError>): KnpError {
  const code = err.code ?? grpc.status.UNKNOWN;
  const details = err.details || err.message || "stream error";
  const error: KnpError & { retryAfterMs?: number } = new KnpError(
    "TUNNEL_CLOSED",
    `${grpc.status[code] ?? code}: ${details}`,
    { cause: err },
  );
  const hint = err.metadata instanceof grpc.Metadata
    ? Number(metadataValues(err.metadata, RETRY_PUSHBACK_KEY)[0])
    : NaN;
  if (Number.isFinite(hint) && hint >= 0) error.retryAfterMs = hint;
  return error;
}

/** Trailers carrying the retry hint of `error` (its `retryAfterMs`), when it has one. */
export function retryTrailers(error: Error): grpc.Metadata | undefined {
  const ms = (error as Error & { retryAfterMs?: unknown }).retryAfterMs;
  if (typeof ms !== "number" || !(ms >= 0) || !Number.isFinite(ms)) return undefined;
  const md = new grpc.Metadata();
  md.set(RETRY_PUSHBACK_KEY, String(Math.ceil(ms)));
  return md;
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
