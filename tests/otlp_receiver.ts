/**
 * An in-process OTLP/HTTP receiver for tests: accepts `POST /v1/traces` in OTLP JSON (Deno's
 * exporter with `OTEL_EXPORTER_OTLP_PROTOCOL=http/json`), keeps every span, and resolves waiters
 * as spans arrive (no polling). `/v1/logs` and `/v1/metrics` are accepted and dropped.
 *
 * @module
 */

/** One received span, flattened from OTLP JSON. */
export interface ReceivedSpan {
  service: string;
  name: string;
  traceId: string;
  spanId: string;
  /** "" for a root span. */
  parentSpanId: string;
  /** OTLP SpanKind: 1 internal, 2 server, 3 client. */
  kind: number;
  attributes: Record<string, string | number | boolean>;
  /** OTLP status code: 0 unset, 1 ok, 2 error. */
  status: number;
}

interface OtlpValue {
  stringValue?: string;
  intValue?: string | number;
  boolValue?: boolean;
  doubleValue?: number;
}
interface OtlpKeyValue {
  key: string;
  value: OtlpValue;
}
interface OtlpSpan {
  name: string;
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  kind?: number;
  attributes?: OtlpKeyValue[];
  status?: { code?: number };
}
interface OtlpTraces {
  resourceSpans?: {
    resource?: { attributes?: OtlpKeyValue[] };
    scopeSpans?: { spans?: OtlpSpan[] }[];
  }[];
}

function valueOf(v: OtlpValue): string | number | boolean {
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.intValue !== undefined) return Number(v.intValue);
  if (v.boolValue !== undefined) return v.boolValue;
  return v.doubleValue ?? "";
}

function attributesOf(list: OtlpKeyValue[] = []): Record<string, string | number | boolean> {
  return Object.fromEntries(list.map((kv) => [kv.key, valueOf(kv.value)]));
}

function spansOf(body: OtlpTraces): ReceivedSpan[] {
  const out: ReceivedSpan[] = [];
  for (const rs of body.resourceSpans ?? []) {
    const service = String(attributesOf(rs.resource?.attributes)["service.name"] ?? "");
    for (const ss of rs.scopeSpans ?? []) {
      for (const s of ss.spans ?? []) {
        out.push({
          service,
          name: s.name,
          traceId: s.traceId,
          spanId: s.spanId,
          parentSpanId: s.parentSpanId ?? "",
          kind: s.kind ?? 0,
          attributes: attributesOf(s.attributes),
          status: s.status?.code ?? 0,
        });
      }
    }
  }
  return out;
}

/** A running receiver. */
export interface OtlpReceiver extends AsyncDisposable {
  /** `http://127.0.0.1:<port>`, for `OTEL_EXPORTER_OTLP_ENDPOINT`. */
  endpoint: string;
  /** Every span received so far. */
  readonly spans: readonly ReceivedSpan[];
  /** Resolves with the first span `match` accepts, at once if one already arrived. */
  waitForSpan(match: (span: ReceivedSpan) => boolean, what: string): Promise<ReceivedSpan>;
  /** The environment that makes a Deno process export its spans here, as `service`. */
  env(service: string): Record<string, string>;
}

/** Starts a receiver on a loopback port. */
export function startOtlpReceiver(): OtlpReceiver {
  const spans: ReceivedSpan[] = [];
  const waiters = new Set<
    { match: (s: ReceivedSpan) => boolean; resolve: (s: ReceivedSpan) => void }
  >();
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const path = new URL(req.url).pathname;
    const text = await req.text();
    if (req.method === "POST" && path === "/v1/traces") {
      for (const span of spansOf(JSON.parse(text) as OtlpTraces)) {
        spans.push(span);
        for (const w of waiters) {
          if (!w.match(span)) continue;
          waiters.delete(w);
          w.resolve(span);
        }
      }
    }
    return Response.json({});
  });
  const endpoint = `http://127.0.0.1:${server.addr.port}`;
  return {
    endpoint,
    spans,
    waitForSpan(match, what) {
      const found = spans.find(match);
      if (found) return Promise.resolve(found);
      const { promise, resolve, reject } = Promise.withResolvers<ReceivedSpan>();
      const waiter = { match, resolve };
      waiters.add(waiter);
      const timer = setTimeout(() => {
        waiters.delete(waiter);
        reject(
          new Error(`no span ${what} within 30 s; got ${JSON.stringify(spans.map((s) => s.name))}`),
        );
      }, 30_000);
      return promise.finally(() => clearTimeout(timer));
    },
    env: (service) => ({
      OTEL_DENO: "true",
      OTEL_EXPORTER_OTLP_ENDPOINT: endpoint,
      OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
      OTEL_SERVICE_NAME: service,
      // Export each batch within milliseconds instead of at exit (the binaries are killed).
      OTEL_BSP_SCHEDULE_DELAY: "20",
    }),
    async [Symbol.asyncDispose]() {
      await server.shutdown();
    },
  };
}
