/**
 * One dial traced across knp's components with OpenTelemetry (`npm:@opentelemetry/api`): the
 * client's dial span, the server's (frontend → agent) and the agent's (endpoint dial), each the
 * child of the one before. The trace context travels as a W3C `traceparent` in the DIAL_REQ's
 * knp extension field (upstream peers skip it; an upstream server passes it on to agents) and in
 * the HTTP-CONNECT request's `traceparent` header.
 *
 * Off by default: spans are recorded and exported only when the process runs with Deno's
 * built-in OpenTelemetry (`OTEL_DENO=true`, OTLP export set by the `OTEL_EXPORTER_OTLP_*`
 * variables), which registers itself with the API. Otherwise every span is a no-op and an
 * incoming `traceparent` is passed on unchanged, so a process without tracing does not break
 * the chain of those around it. Deno's exporter reads the `OTEL_*` variables and posts to the
 * collector from the runtime itself, outside the permission checks: the binaries' computed
 * permission sets need nothing more (the tracing test runs them with exactly those). Deno also
 * makes a span of every `node:http2` stream when it is on, one more reason it is off by default
 * (`OTEL_TRACES_SAMPLER` can thin it).
 *
 * ```ts
 * const span = startDialSpan("knp.agent.dial", {
 *   parent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
 *   attributes: { "knp.dial_id": "42" },
 * });
 * span.end(); // or span.end("connection refused")
 * ```
 *
 * @module
 */

import {
  type Context,
  context,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
} from "@opentelemetry/api";

/** A W3C trace context: what a `traceparent` carries. */
export interface TraceContext {
  /** 32 lower-case hex digits. */
  traceId: string;
  /** 16 lower-case hex digits: the parent span. */
  spanId: string;
  /** Bit 0: sampled. */
  traceFlags: number;
}

/** The role of a dial span: the client library's, the server's, the agent's endpoint dial. */
export type DialSpanKind = "client" | "server" | "internal";

const KINDS: Readonly<Record<DialSpanKind, SpanKind>> = {
  client: SpanKind.CLIENT,
  server: SpanKind.SERVER,
  internal: SpanKind.INTERNAL,
};

/** Attribute values a dial span takes (bigints are written as decimal strings). */
export type DialAttributes = Record<string, string | number | boolean | bigint | undefined>;

/** A started dial span. */
export interface DialSpan {
  /**
   * The `traceparent` to send to the next hop: this span's, or the incoming one unchanged when
   * this process does not trace; undefined when there is neither.
   */
  readonly traceparent: string | undefined;
  /** Whether the span is recorded (and will be exported). */
  readonly recording: boolean;
  /** Adds attributes. */
  set(attributes: DialAttributes): void;
  /** Ends the span; an `error` text marks it failed. Later calls do nothing. */
  end(error?: string): void;
}

/** Options of {@linkcode startDialSpan}. */
export interface DialSpanOptions {
  /**
   * The W3C `traceparent` the dial arrived with. Without one the span's parent is the active
   * context (the client library's caller's span).
   */
  parent?: string | undefined;
  /** The span's role. @default "internal" */
  kind?: DialSpanKind;
  /** Initial attributes. */
  attributes?: DialAttributes;
}

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;
const ZERO_TRACE = "0".repeat(32);
const ZERO_SPAN = "0".repeat(16);

/** Parses a W3C `traceparent` (version 00 and later); undefined when malformed or all-zero. */
export function parseTraceparent(value: string | undefined): TraceContext | undefined {
  const m = value === undefined ? null : TRACEPARENT.exec(value.trim().toLowerCase());
  if (m === null || m[1] === "ff" || m[2] === ZERO_TRACE || m[3] === ZERO_SPAN) return undefined;
  return { traceId: m[2]!, spanId: m[3]!, traceFlags: parseInt(m[4]!, 16) & 1 };
}

/** Formats a span context as a version-00 W3C `traceparent`. */
export function formatTraceparent(span: TraceContext): string {
  const flags = (span.traceFlags & 0xff).toString(16).padStart(2, "0");
  return `00-${span.traceId}-${span.spanId}-${flags}`;
}

function cleaned(attributes: DialAttributes): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {};
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined) continue;
    out[key] = typeof value === "bigint" ? value.toString() : value;
  }
  return out;
}

function parentContext(parent: string | undefined): Context {
  const remote = parseTraceparent(parent);
  if (remote === undefined) return context.active();
  return trace.setSpanContext(ROOT_CONTEXT, { ...remote, isRemote: true });
}

/**
 * Starts the span of one dial hop (`knp.client.dial`, `knp.server.dial`, `knp.agent.dial`) as
 * the child of `options.parent`. A no-op unless OpenTelemetry is on in this process.
 */
export function startDialSpan(name: string, options: DialSpanOptions = {}): DialSpan {
  const span = trace.getTracer("knp").startSpan(name, {
    kind: KINDS[options.kind ?? "internal"],
    attributes: cleaned(options.attributes ?? {}),
  }, parentContext(options.parent));
  const recording = span.isRecording();
  const own = span.spanContext();
  const traceparent = recording && trace.isSpanContextValid(own)
    ? formatTraceparent(own)
    : options.parent;
  let ended = false;
  return {
    traceparent,
    recording,
    set(attributes) {
      if (recording) span.setAttributes(cleaned(attributes));
    },
    end(error) {
      if (ended) return;
      ended = true;
      if (error !== undefined) span.setStatus({ code: SpanStatusCode.ERROR, message: error });
      span.end();
    },
  };
}
