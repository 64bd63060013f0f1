/**
 * Tests of `logPackets`: one trace record per packet each way with its IDs and byte count, and
 * the stream itself when the logger does not trace.
 *
 * @module
 */

import assert from "node:assert/strict";
import { dataPacket, dialRequest } from "@knp/proto";
import { type LogFields, type Logger, nullLogger } from "@knp/core/log";
import { logPackets } from "./packet_log.ts";
import { memoryPipe } from "./packet_stream.ts";

function tracingLogger(records: [string, LogFields][]): Logger {
  const log: Logger = {
    ...nullLogger,
    with: () => log,
    trace: (message, fields = {}) => void records.push([message, fields]),
  };
  return log;
}

Deno.test("logPackets() writes a trace record per packet sent and received", async () => {
  const records: [string, LogFields][] = [];
  const [a, b] = memoryPipe();
  const logged = logPackets(a, tracingLogger(records));
  const got = Promise.withResolvers<void>();
  logged.start({ onPacket: () => got.resolve(), onEnd: () => {} });
  b.start({ onPacket: () => {}, onEnd: () => {} });
  logged.send(
    dialRequest("10.0.0.1:443", 5n, "tcp", "00-" + "a".repeat(32) + "-" + "b".repeat(16) + "-01"),
  );
  b.send(dataPacket(3n, new Uint8Array(7)));
  await got.promise;
  assert.deepEqual(records, [
    ["packet sent", {
      peer: "memory:a",
      type: "DIAL_REQ",
      dialID: 5n,
      address: "10.0.0.1:443",
      traceparent: "00-" + "a".repeat(32) + "-" + "b".repeat(16) + "-01",
    }],
    ["packet received", { peer: "memory:a", type: "DATA", connectID: 3n, bytes: 7 }],
  ]);
  logged.close();
  b.close();
});

Deno.test("logPackets() returns the stream itself for a logger without trace", () => {
  const [a, b] = memoryPipe();
  assert.equal(logPackets(a, nullLogger), a);
  a.close();
  b.close();
});
