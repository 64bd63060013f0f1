import assert from "node:assert/strict";
import { KnpError } from "@knp/core/errors";
import { parseServerOptions } from "./options.ts";
import { explainConfig, validateExplainOptions } from "./explain_flags.ts";

Deno.test("--knp-explain-dials: default 1000, 0 turns it off, bounded", () => {
  const parse = (args: string[]) => {
    const parsed = parseServerOptions(args, {});
    assert.ok(!("help" in parsed));
    return parsed.options;
  };
  assert.equal(parse(["--knp-explain-dials=0"]).knpExplainDials, 0);
  assert.deepEqual(explainConfig(parse(["--knp-explain-dials=0"])), { explainDials: 0 });
  assert.equal(parse([]).knpExplainDials, 1000);
  validateExplainOptions({ knpExplainDials: 100_000 });
  for (const bad of [-1, 100_001, 1.5]) {
    assert.throws(() => validateExplainOptions({ knpExplainDials: bad }), (err) => {
      assert.ok(err instanceof KnpError);
      assert.equal(err.code, "INVALID_FLAG");
      assert.match(err.message, /^--knp-explain-dials: must be 0 to 100000, got /);
      return true;
    });
  }
});
