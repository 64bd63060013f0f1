import assert from "node:assert/strict";
import { parseAgentOptions, validateAgentOptions } from "./options.ts";
import { livenessOf } from "./server_set_flags.ts";

function options(args: string[]) {
  const result = parseAgentOptions(args, {});
  if ("help" in result) throw new Error("help");
  return result.options;
}

Deno.test("liveness flags: defaults probe after 10 s, give up after 5 s, check every --probe-interval", () => {
  assert.deepEqual(livenessOf(options([])), { idleMs: 10_000, timeoutMs: 5_000, checkMs: 1_000 });
  assert.deepEqual(
    livenessOf(options([
      "--probe-interval=100ms",
      "--knp-server-ping-interval=2s",
      "--knp-server-ping-timeout=1s",
    ])),
    { idleMs: 2_000, timeoutMs: 1_000, checkMs: 100 },
  );
  assert.equal(livenessOf(options(["--knp-server-ping-interval=0s"])), "off");
});

Deno.test("liveness flags: invalid values name the flag", () => {
  for (
    const [arg, flag] of [
      ["--probe-interval=0s", "--probe-interval"],
      ["--knp-server-ping-interval=-1s", "--knp-server-ping-interval"],
      ["--knp-server-ping-timeout=0s", "--knp-server-ping-timeout"],
      ["--proxy-server-host= , ", "--proxy-server-host"],
    ]
  ) {
    assert.throws(
      () => validateAgentOptions(options([arg!])),
      (e: Error) => e.message.startsWith(flag!),
      arg,
    );
  }
});
