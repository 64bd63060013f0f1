/**
 * The manifests in deploy/ must use flags our binaries accept, with nothing "accepted but not
 * implemented": the args lists are parsed with the real option parsers. The Deno permissions
 * the manifests record (and `deno task compile:*` builds the images with) are exactly what the
 * binaries' permission functions compute for those args.
 */

import assert from "node:assert/strict";
import { parseServerOptions } from "../server/options.ts";
import { parseAgentOptions } from "../agent/options.ts";
import { SERVER_V8_FLAGS, serverPermissionFlags } from "../server/permissions.ts";
import { agentPermissionFlags } from "../agent/permissions.ts";

/** The `- --flag=value` lines of a manifest's container args. */
async function manifestArgs(path: string): Promise<string[]> {
  const text = await Deno.readTextFile(new URL(path, import.meta.url));
  return text.split("\n")
    .map((line) => line.trim())
    .filter((line) => line.startsWith("- --"))
    .map((line) => line.slice(2));
}

Deno.test("deploy: the server manifest's args parse, all implemented", async () => {
  const args = await manifestArgs("../deploy/kubernetes/konnectivity-server.yaml");
  assert.ok(args.length > 10);
  const result = parseServerOptions(args, {});
  assert.ok(!("help" in result));
  assert.deepEqual(result.notImplemented, []);
  assert.equal(
    result.options.udsName,
    "/etc/kubernetes/konnectivity-server/konnectivity-server.socket",
  );
  // knp agents reach the WebSocket link on the agent port (negotiated): no port of its own.
  assert.equal(result.options.knpWebsocketPort, 0);
  assert.equal(result.options.knpFastLink, true);
});

Deno.test("deploy: the agent manifest's args parse, all implemented", async () => {
  const args = await manifestArgs("../deploy/kubernetes/konnectivity-agent.yaml");
  assert.ok(args.length > 5);
  const result = parseAgentOptions(args, {});
  assert.ok(!("help" in result));
  assert.deepEqual(result.notImplemented, []);
  assert.equal(result.options.proxyServerPort, 8091);
  assert.equal(result.options.syncInterval, 5000);
});

/** The `knp.dev/deno-permissions` annotation of a manifest, split into flags. */
async function manifestPermissions(path: string): Promise<string[]> {
  const text = await Deno.readTextFile(new URL(path, import.meta.url));
  const match = /^\s*knp\.dev\/deno-permissions: "([^"]*)"$/m.exec(text);
  assert.ok(match, `${path} has no knp.dev/deno-permissions annotation`);
  return match[1]!.split(" ");
}

/** The `--allow-*` flags of a root deno.json task. */
async function taskPermissions(task: string): Promise<string[]> {
  const config = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url)));
  const command: string = config.tasks[task];
  assert.ok(command, `no task ${task}`);
  return command.split(/\s+/).filter((word) => word.startsWith("--allow-"));
}

for (
  const [binary, manifest, compute] of [
    ["server", "../deploy/kubernetes/konnectivity-server.yaml", serverPermissionFlags],
    ["agent", "../deploy/kubernetes/konnectivity-agent.yaml", agentPermissionFlags],
  ] as const
) {
  Deno.test(`deploy: the ${binary} manifest's and compile task's permissions are computed`, async () => {
    const expected = compute(await manifestArgs(manifest));
    assert.ok(expected.length >= 3);
    assert.ok(!expected.includes("--allow-all"));
    assert.deepEqual(await manifestPermissions(manifest), expected);
    assert.deepEqual(await taskPermissions(`compile:${binary}`), expected);
  });
}

Deno.test("deploy: the server's compile task bakes in the V8 flag it prints", async () => {
  const config = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url)));
  const words: string[] = config.tasks["compile:server"].split(/\s+/);
  assert.ok(words.includes(SERVER_V8_FLAGS), config.tasks["compile:server"]);
  const agent: string = config.tasks["compile:agent"];
  assert.doesNotMatch(agent, /--v8-flags/);
});

Deno.test("deploy: no task uses --allow-all", async () => {
  const config = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url)));
  // The drivers that sample other processes' /proc/<pid> (the tests, the bench, chaos, soak) read
  // it through testing/proc_files.ts: Deno 2.9.6 serves /proc only to --allow-all.
  for (const task of Object.keys(config.tasks)) {
    const command: string = config.tasks[task];
    assert.ok(command !== undefined, task);
    assert.doesNotMatch(command, /--allow-all|\s-A\s/, task);
  }
});
