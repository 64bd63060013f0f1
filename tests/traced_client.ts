/**
 * A client process for the tracing test: inside a root span `test.request`, dials `address`
 * through the server's UDS with the client library (`dialThroughProxy`), sends `ping`, reads the
 * echo, closes, and prints `{"traceId","spanId"}` of the root span on stdout. Run it with
 * `OTEL_DENO=true` and an OTLP endpoint; its spans are exported when it exits.
 *
 * Usage: `deno run --allow-net --allow-read --allow-write --allow-env tests/traced_client.ts <uds path> <host:port>`
 *
 * @module
 */

import { trace } from "@opentelemetry/api";
import { dialThroughProxy } from "@knp/client";

const [udsPath, address] = Deno.args;
if (udsPath === undefined || address === undefined) throw new Error("usage: <uds> <host:port>");

const tracer = trace.getTracer("knp-test");
await tracer.startActiveSpan("test.request", async (root) => {
  const conn = await dialThroughProxy({ udsPath }, address);
  const writer = conn.writable.getWriter();
  await writer.write(new TextEncoder().encode("ping"));
  const reader = conn.readable.getReader();
  let echoed = "";
  while (echoed.length < 4) {
    const { value, done } = await reader.read();
    if (done) break;
    echoed += new TextDecoder().decode(value);
  }
  reader.releaseLock();
  writer.releaseLock();
  await conn[Symbol.asyncDispose]();
  root.end();
  if (echoed !== "ping") throw new Error(`echo was ${JSON.stringify(echoed)}`);
  const { traceId, spanId } = root.spanContext();
  // deno-lint-ignore no-console -- the test reads the root span's ids from stdout
  console.log(JSON.stringify({ traceId, spanId }));
});
