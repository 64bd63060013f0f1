import assert from "node:assert/strict";
import {
  formatGoDuration,
  formatGoDurationNs,
  parseGoDuration,
  parseGoDurationNs,
} from "./duration.ts";

// Expected values below were produced by Go 1.26 time.ParseDuration / Duration.String.

Deno.test("parseGoDurationNs() matches Go for valid durations", () => {
  const cases: [string, bigint][] = [
    ["0", 0n],
    ["-0", 0n],
    ["+0", 0n],
    ["0.0s", 0n],
    ["1h0m0s", 3_600_000_000_000n],
    ["100ms", 100_000_000n],
    ["1.5s", 1_500_000_000n],
    [".5s", 500_000_000n],
    ["5.s", 5_000_000_000n],
    ["2h45m", 9_900_000_000_000n],
    ["300us", 300_000n],
    ["300\u00b5s", 300_000n],
    ["300\u03bcs", 300_000n],
    ["10ns", 10n],
    ["-1s", -1_000_000_000n],
    ["+2m", 120_000_000_000n],
    ["1h2m3.5s", 3_723_500_000_000n],
    ["1h1h", 7_200_000_000_000n],
    ["1.5ns", 1n],
    ["0.1ns", 0n],
    ["1.0000000001s", 1_000_000_000n],
    ["1.000000001s", 1_000_000_001n],
    ["0.3ms", 300_000n],
    ["2562047h47m16.854775807s", 9_223_372_036_854_775_807n],
    ["-2562047h47m16.854775808s", -9_223_372_036_854_775_808n],
  ];
  for (const [text, ns] of cases) {
    assert.equal(parseGoDurationNs(text), ns, text);
  }
});

Deno.test("parseGoDurationNs() rejects what Go rejects, with Go's reason", () => {
  const cases: [string, RegExp][] = [
    ["", /^Invalid duration ""$/],
    ["1", /^Missing unit in duration "1"$/],
    ["00", /^Missing unit/],
    ["-", /^Invalid duration/],
    ["+", /^Invalid duration/],
    [".", /^Invalid duration/],
    ["s", /^Invalid duration/],
    [" 1s", /^Invalid duration/],
    ["1x", /^Unknown unit "x" in duration "1x"$/],
    ["1S", /^Unknown unit "S"/],
    ["1e3s", /^Unknown unit "e"/],
    ["1.5.s", /^Missing unit/],
    ["1s2", /^Missing unit/],
    ["2562047h47m16.854775808s", /^Invalid duration/],
  ];
  for (const [text, message] of cases) {
    assert.throws(() => parseGoDurationNs(text), (err: unknown) => {
      assert.ok(err instanceof SyntaxError, text);
      assert.match(err.message, message, text);
      return true;
    });
  }
});

Deno.test("parseGoDuration() returns milliseconds, fractional below 1ms", () => {
  assert.equal(parseGoDuration("0"), 0);
  assert.equal(parseGoDuration("1h0m0s"), 3_600_000);
  assert.equal(parseGoDuration("100ms"), 100);
  assert.equal(parseGoDuration("1.5s"), 1_500);
  assert.equal(parseGoDuration("2h45m"), 9_900_000);
  assert.equal(parseGoDuration("300us"), 0.3);
  assert.equal(parseGoDuration("10ns"), 0.00001);
  assert.equal(parseGoDuration("-1s"), -1_000);
  assert.throws(() => parseGoDuration("5"), SyntaxError);
});

Deno.test("formatGoDurationNs() matches Go's Duration.String()", () => {
  const cases: [bigint, string][] = [
    [0n, "0s"],
    [1n, "1ns"],
    [999n, "999ns"],
    [1_000n, "1\u00b5s"],
    [1_500n, "1.5\u00b5s"],
    [300_000n, "300\u00b5s"],
    [1_000_000n, "1ms"],
    [1_500_000n, "1.5ms"],
    [100_000_000n, "100ms"],
    [999_999_999n, "999.999999ms"],
    [1_000_000_000n, "1s"],
    [1_500_000_000n, "1.5s"],
    [60_000_000_000n, "1m0s"],
    [90_000_000_000n, "1m30s"],
    [3_600_000_000_000n, "1h0m0s"],
    [3_600_000_000_001n, "1h0m0.000000001s"],
    [-1_000_000_000n, "-1s"],
    [9_223_372_036_854_775_807n, "2562047h47m16.854775807s"],
    [-9_223_372_036_854_775_808n, "-2562047h47m16.854775808s"],
  ];
  for (const [ns, text] of cases) {
    assert.equal(formatGoDurationNs(ns), text, String(ns));
  }
});

Deno.test("formatGoDuration() formats milliseconds in Go form", () => {
  assert.equal(formatGoDuration(3_600_000), "1h0m0s");
  assert.equal(formatGoDuration(1_000), "1s");
  assert.equal(formatGoDuration(100), "100ms");
  assert.equal(formatGoDuration(0), "0s");
  assert.equal(formatGoDuration(1_500), "1.5s");
  assert.equal(formatGoDuration(10_000), "10s");
  assert.equal(formatGoDuration(0.3), "300\u00b5s");
  assert.equal(formatGoDuration(-250), "-250ms");
  assert.throws(() => formatGoDuration(NaN), RangeError);
  assert.throws(() => formatGoDuration(Infinity), RangeError);
});

Deno.test("formatGoDuration() round-trips through parseGoDuration()", () => {
  for (const text of ["1h0m0s", "1m30s", "1.5s", "100ms", "300\u00b5s", "10ns", "0s", "-1s"]) {
    assert.equal(formatGoDuration(parseGoDuration(text)), text);
  }
});
