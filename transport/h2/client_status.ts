/**
 * How the native gRPC client reports a call's end: a gRPC status (from trailers, a non-200 HTTP
 * status, an RST_STREAM or a lost connection) becomes the same `TUNNEL_CLOSED` {@linkcode
 * KnpError} the grpc-js adapter makes of it (`grpcError` in `grpc_internal.ts`): the message is
 * `"<STATUS_NAME>: <details>"`, a retry hint in the trailers becomes `retryAfterMs`, and the cause
 * carries `code`, `details` and the trailers as `metadata` (where `linkSwitchInError` looks).
 * Written apart from `grpc_internal.ts` so the native client never loads grpc-js.
 *
 * @module
 */

import { KnpError } from "@knp/core/errors";
import { ErrorCode } from "./frame.ts";
import { GrpcStatus } from "./grpc_message.ts";

/** gRPC status names by code, as grpc-js's `status` enum spells them. */
const STATUS_NAMES = [
  "OK",
  "CANCELLED",
  "UNKNOWN",
  "INVALID_ARGUMENT",
  "DEADLINE_EXCEEDED",
  "NOT_FOUND",
  "ALREADY_EXISTS",
  "PERMISSION_DENIED",
  "RESOURCE_EXHAUSTED",
  "FAILED_PRECONDITION",
  "ABORTED",
  "OUT_OF_RANGE",
  "UNIMPLEMENTED",
  "INTERNAL",
  "UNAVAILABLE",
  "DATA_LOSS",
  "UNAUTHENTICATED",
];

/** Trailer key of a retry hint in ms. */
const RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms";

/** Response headers or trailers by (lowercase) name. */
export interface HeaderLookup {
  /** Every value of `key`, in order. */
  get(key: string): string[];
}

/** A header lookup over received fields (pseudo-headers included). */
export function lookupOf(fields: [string, string][]): HeaderLookup {
  return {
    get: (key) => fields.filter(([name]) => name === key).map(([, value]) => value),
  };
}

/** What the grpc-js adapter puts in a status error's cause. */
export interface StatusCause {
  code: number;
  details: string;
  metadata: HeaderLookup;
}

/** A call that ended with gRPC status `code` (not OK), as the grpc-js adapter reports it. */
export function statusError(
  code: number,
  details: string,
  metadata: HeaderLookup = lookupOf([]),
): KnpError {
  const cause: StatusCause = { code, details, metadata };
  const name = STATUS_NAMES[code] ?? String(code);
  const error: KnpError & { retryAfterMs?: number } = new KnpError(
    "TUNNEL_CLOSED",
    `${name}: ${details || "stream error"}`,
    { cause },
  );
  const hint = Number(metadata.get(RETRY_PUSHBACK_KEY)[0]);
  if (metadata.get(RETRY_PUSHBACK_KEY).length > 0 && Number.isFinite(hint) && hint >= 0) {
    error.retryAfterMs = hint;
  }
  return error;
}

/** The gRPC status of a response whose HTTP `:status` is not 200 (gRPC's HTTP mapping). */
export function statusOfHttp(status: string): number {
  switch (status) {
    case "400":
      return GrpcStatus.INTERNAL;
    case "401":
      return GrpcStatus.UNAUTHENTICATED;
    case "403":
      return GrpcStatus.PERMISSION_DENIED;
    case "404":
      return GrpcStatus.UNIMPLEMENTED;
    case "429":
    case "502":
    case "503":
    case "504":
      return GrpcStatus.UNAVAILABLE;
  }
  return GrpcStatus.UNKNOWN;
}

/** The gRPC status of a stream the server reset with HTTP/2 error `code` (as grpc-js maps it). */
export function statusOfReset(code: number): number {
  switch (code) {
    case ErrorCode.REFUSED_STREAM:
      return GrpcStatus.UNAVAILABLE;
    case ErrorCode.CANCEL:
      return GrpcStatus.CANCELLED;
    case ErrorCode.ENHANCE_YOUR_CALM:
      return GrpcStatus.RESOURCE_EXHAUSTED;
    case ErrorCode.INADEQUATE_SECURITY:
      return GrpcStatus.PERMISSION_DENIED;
  }
  return GrpcStatus.INTERNAL;
}
