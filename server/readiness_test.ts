import assert from "node:assert/strict";
import { parseAgentIdentifiers } from "@knp/proto";
import { memoryPipe } from "@knp/transport/packet_stream";
import { Backend } from "./backend.ts";
import { BackendManager } from "./backend_manager.ts";
import { serverHealthHandler } from "./health.ts";
import { serverReadiness } from "./readiness.ts";
import { ZoneMap } from "./routing.ts";

function backend(agentId: string, identifiers = ""): Backend {
  const [stream] = memoryPipe();
  return new Backend(agentId, parseAgentIdentifiers(identifiers), stream);
}

async function readyz(manager: BackendManager, path: string, zones?: ZoneMap) {
  const handler = serverHealthHandler({
    ready: manager.ready,
    readiness: () => serverReadiness(manager, zones),
  });
  const res = handler(new Request(`http://h${path}`));
  return { status: res.status, body: await res.text() };
}

Deno.test("server readiness: default needs any agent; upstream's body when none", async () => {
  const m = new BackendManager(["default"]);
  assert.deepEqual(await readyz(m, "/readyz"), {
    status: 500,
    body: "no connection to any proxy agent",
  });
  assert.deepEqual(await readyz(m, "/readyz?verbose"), {
    status: 500,
    body: "no connection to any proxy agent\n[-]strategy-default failed: no agent connected\n" +
      "check failed\n",
  });
  m.add(backend("a1"));
  m.add(backend("a2"));
  assert.deepEqual(await readyz(m, "/readyz"), { status: 200, body: "ok" });
  assert.deepEqual(await readyz(m, "/readyz?verbose"), {
    status: 200,
    body: "[+]strategy-default ok: 2 agents\ncheck passed\n",
  });
});

Deno.test("server readiness: every configured strategy needs an agent of its class", async () => {
  const m = new BackendManager(["destHost", "defaultRoute"]);
  m.add(backend("h1", "host=node-1"));
  // upstream's rule (first strategy has an agent) holds, but nothing carries other addresses
  const r = await readyz(m, "/readyz");
  assert.equal(r.status, 500);
  assert.equal(
    r.body,
    "[+]strategy-destHost ok: 1 host\n" +
      "[-]strategy-defaultRoute failed: no agent advertises default-route=true\ncheck failed\n",
  );
  m.add(backend("r1", "default-route=true"));
  assert.equal((await readyz(m, "/readyz")).status, 200);
  const cidr = new BackendManager(["destCIDR", "default"]);
  cidr.add(backend("x"));
  assert.match((await readyz(cidr, "/readyz")).body, /\[-\]strategy-destCIDR failed: no agent/);
});

Deno.test("server readiness: a zone without agents is reported, not fatal", () => {
  const zones = ZoneMap.parse(["zone-a=10.0.0.0/16", "zone-b=10.1.0.0/16", "zone-a=10.9.0.0/16"]);
  const m = new BackendManager(["default"], { zones });
  m.add(backend("a1", "zone=zone-a"));
  const r = serverReadiness(m, zones);
  assert.equal(r.ready, true);
  assert.deepEqual(r.lines, [
    "[+]strategy-default ok: 1 agent",
    "[+]zone-zone-a ok: 1 agent",
    "[+]zone-zone-b degraded: no agent in this zone; its dials go to agents elsewhere",
  ]);
  const b = backend("b1", "zone=zone-b");
  m.add(b);
  assert.equal(serverReadiness(m, zones).lines[2], "[+]zone-zone-b ok: 1 agent");
  m.remove(b);
  assert.equal(serverReadiness(m, zones).lines.length, 3);
  assert.match(serverReadiness(m, zones).lines[2]!, /degraded/);
});

Deno.test("server readiness: without a readiness source, upstream's rule and text", async () => {
  const handler = serverHealthHandler({ ready: false });
  const res = handler(new Request("http://h/ready"));
  assert.equal(res.status, 500);
  assert.equal(await res.text(), "no connection to any proxy agent");
});
