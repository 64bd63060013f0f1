/**
 * Tests of the binaries' LogTape logging: record fields and level names tests parse, categories,
 * klog's `-v` and the text format.
 *
 * @module
 */

import assert from "node:assert/strict";
import { resetSync } from "@logtape/logtape";
import { childLogger } from "@knp/core/log";
import { configureBinaryLogging, levelForVerbosity } from "./log_tape.ts";

function capture(v: number, format: "json" | "text" = "json") {
  const lines: string[] = [];
  const decoder = new TextDecoder();
  const log = configureBinaryLogging({
    binary: "agent",
    v,
    format,
    write: (bytes) => lines.push(decoder.decode(bytes)),
  });
  return { log, lines, records: () => lines.map((l) => JSON.parse(l)) };
}

Deno.test("JSON records keep time, level, msg and fields, and carry the category", () => {
  try {
    const { log, records } = capture(4);
    const dialer = childLogger(log.with({ agentID: "a1" }), "dialer");
    dialer.with({ dialID: 7n }).warn("dial failed", { error: new Error("refused") });
    log.error("operator must act");
    const [first, second] = records();
    assert.equal(typeof first.time, "string");
    assert.ok(!Number.isNaN(Date.parse(first.time)));
    assert.deepEqual({ ...first, time: "" }, {
      time: "",
      level: "warn",
      msg: "dial failed",
      logger: "knp.agent.dialer",
      agentID: "a1",
      dialID: "7",
      error: "refused",
    });
    assert.equal(second.level, "error");
    assert.equal(second.logger, "knp.agent");
  } finally {
    resetSync();
  }
});

Deno.test("below -v=5 only info and above; at 5 debug and per-packet trace records too", () => {
  try {
    const quiet = capture(4);
    assert.equal(quiet.log.trace, undefined);
    quiet.log.debug("lifecycle detail");
    quiet.log.info("lifecycle");
    assert.deepEqual(quiet.records().map((r) => r.msg), ["lifecycle"]);
    const loud = capture(5);
    loud.log.debug("lifecycle detail");
    loud.log.trace?.("packet", { type: "DATA" });
    childLogger(loud.log, "client").trace?.("packet", { type: "DIAL_REQ" });
    assert.deepEqual(loud.records().map((r) => [r.level, r.msg]), [
      ["debug", "lifecycle detail"],
      ["trace", "packet"],
      ["trace", "packet"],
    ]);
  } finally {
    resetSync();
  }
  assert.equal(levelForVerbosity(0), "info");
  assert.equal(levelForVerbosity(10), "trace");
});

Deno.test("the text format writes time LEVEL [category] message key=value", () => {
  try {
    const { log, lines } = capture(4, "text");
    log.with({ serverID: "s1" }).info("a {brace} stays", { n: 1n });
    assert.match(lines[0]!, /^\S+Z INFO \[knp\.agent\] a \{brace\} stays serverID="s1" n="1"\n$/);
  } finally {
    resetSync();
  }
});
