/**
 * The workspace's dependency rule, checked on the source: each member's production files import
 * only the members below it, and nothing reaches into another member by a relative path.
 *
 * proto ← core ← transport ← cli ← server | agent; client uses proto, core and transport.
 *
 * @module
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

/** Which members each member's production code may import. */
const ALLOWED: Record<string, string[]> = {
  proto: [],
  core: ["proto"],
  transport: ["proto", "core"],
  cli: ["proto", "core", "transport"],
  server: ["proto", "core", "transport", "cli"],
  agent: ["proto", "core", "transport", "cli"],
  client: ["proto", "core", "transport"],
  testing: ["proto", "core", "transport", "cli"],
};

function isProduction(name: string): boolean {
  return name.endsWith(".ts") && !name.endsWith("_test.ts") && !name.endsWith("_bench.ts") &&
    !name.startsWith("_");
}

async function importsOf(path: string): Promise<string[]> {
  const text = await Deno.readTextFile(path);
  const specs: string[] = [];
  for (const m of text.matchAll(/^\s*(?:import|export)[^"';]*?from\s*"([^"]+)"/gm)) {
    if (m[1] !== undefined) specs.push(m[1]);
  }
  return specs;
}

/** What is wrong with `spec` imported by production file `file` of `member`. */
function problemsOf(member: string, file: string, spec: string): string[] {
  const where = `${member}/${file} imports ${spec}`;
  const problems: string[] = [];
  if (spec.startsWith("../")) problems.push(`${where}: a relative path out of its member`);
  const used = /^@knp\/([a-z]+)/.exec(spec)?.[1];
  if (used !== undefined && used !== member && !ALLOWED[member]?.includes(used)) {
    problems.push(`${where}: ${member} may not depend on ${used}`);
  }
  if (member === "proto" && /^(npm|jsr|node):/.test(spec)) problems.push(`${where}: proto is pure`);
  return problems;
}

Deno.test("workspace members import only the layers below them", async () => {
  const config = JSON.parse(await Deno.readTextFile(`${ROOT}/deno.json`));
  const members = (config.workspace as string[]).map((m) => m.replace(/^\.\//, ""));
  assert.deepEqual(new Set(members), new Set(Object.keys(ALLOWED)));
  const problems: string[] = [];
  for (const member of members) {
    for await (const entry of Deno.readDir(`${ROOT}/${member}`)) {
      if (!entry.isFile || !isProduction(entry.name)) continue;
      for (const spec of await importsOf(`${ROOT}/${member}/${entry.name}`)) {
        problems.push(...problemsOf(member, entry.name, spec));
      }
    }
  }
  assert.deepEqual(problems, []);
});

Deno.test("the layering check reports upward, relative and impure imports", () => {
  assert.equal(problemsOf("core", "x.ts", "@knp/server/lib").length, 1);
  assert.equal(problemsOf("client", "x.ts", "@knp/cli/flags").length, 1);
  assert.equal(problemsOf("server", "x.ts", "../agent/agent.ts").length, 1);
  assert.equal(problemsOf("proto", "x.ts", "node:crypto").length, 1);
  assert.deepEqual(problemsOf("server", "x.ts", "@knp/transport/grpc_stream"), []);
});
