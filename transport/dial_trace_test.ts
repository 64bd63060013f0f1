/**
 * Tests of the dial-tracing helpers in a process without OpenTelemetry (the default): W3C
 * `traceparent` parsing and formatting, and no-op spans that pass a received context on.
 * Recorded spans across real processes are tested in `tests/tracing_test.ts`.
 *
 * @module
 */

import assert from "node:assert/strict";
import { formatTraceparent, parseTraceparent, startDialSpan } from "./dial_trace.ts";

const GIVEN = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

Deno.test("parseTraceparent() reads W3C traceparents and rejects malformed or all-zero ones", () => {
  assert.deepEqual(parseTraceparent(GIVEN), {
    traceId: "4bf92f3577b34da6a3ce929d0e0e4736",
    spanId: "00f067aa0ba902b7",
    traceFlags: 1,
  });
  assert.equal(parseTraceparent(GIVEN.toUpperCase())?.spanId, "00f067aa0ba902b7");
  for (
    const bad of [
      undefined,
      "",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
      `00-${"0".repeat(32)}-00f067aa0ba902b7-01`,
      `00-4bf92f3577b34da6a3ce929d0e0e4736-${"0".repeat(16)}-01`,
      "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
      "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
    ]
  ) assert.equal(parseTraceparent(bad), undefined, String(bad));
  assert.equal(formatTraceparent(parseTraceparent(GIVEN)!), GIVEN);
  assert.equal(
    formatTraceparent({ traceId: "a".repeat(32), spanId: "b".repeat(16), traceFlags: 0 }),
    `00-${"a".repeat(32)}-${"b".repeat(16)}-00`,
  );
});

Deno.test("without OpenTelemetry a dial span records nothing and passes the context on", () => {
  const traced = startDialSpan("knp.agent.dial", { parent: GIVEN, kind: "client" });
  assert.equal(traced.recording, false);
  assert.equal(traced.traceparent, GIVEN);
  traced.set({ "knp.connect_id": 1n });
  traced.end("refused");
  traced.end();
  const untraced = startDialSpan("knp.client.dial");
  assert.equal(untraced.recording, false);
  assert.equal(untraced.traceparent, undefined);
  untraced.end();
});
