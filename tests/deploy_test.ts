/**
 * The manifests in deploy/ must use flags our binaries accept, with nothing "accepted but not
 * implemented": the args lists are parsed with the real option parsers.
 */

import assert from "node:assert/strict";
import { parseServerOptions } from "../server/options.ts";
import { parseAgentOptions } from "../agent/options.ts";

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
  assert.equal(result.options.knpWebsocketPort, 8096);
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
