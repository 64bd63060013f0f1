/**
 * `deno doc --lint` over every published package's entry points: each exported symbol is
 * documented and no public type names a private one.
 *
 * @module
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

/** The entry points of the published packages (their deno.json `exports`). */
async function entryPoints(): Promise<string[]> {
  const root = JSON.parse(await Deno.readTextFile(`${ROOT}/deno.json`));
  const files: string[] = [];
  for (const member of root.workspace as string[]) {
    const config = JSON.parse(await Deno.readTextFile(`${ROOT}/${member}/deno.json`));
    if (config.publish === false) continue;
    const exports = typeof config.exports === "string" ? { ".": config.exports } : config.exports;
    for (const path of Object.values(exports) as string[]) files.push(`${member}/${path}`);
  }
  return files;
}

Deno.test("deno doc --lint is clean for every published package", async () => {
  const files = await entryPoints();
  assert.ok(files.length >= 7, `found only ${files.length} entry points`);
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["doc", "--lint", ...files],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stderr) + new TextDecoder().decode(out.stdout);
  assert.ok(out.success, text.split("\n").filter((l) => /error|-->/.test(l)).join("\n"));
});
