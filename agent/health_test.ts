import assert from "node:assert/strict";
import { agentHealthHandler, type ServersHeld, serversHeldLines } from "./health.ts";

async function get(servers: ServersHeld, path: string, details: string[] = []) {
  const handler = agentHealthHandler(
    { ready: servers.held > 0, servers: () => servers },
    () => details,
  );
  const res = handler(new Request(`http://h${path}`));
  return { status: res.status, body: await res.text() };
}

Deno.test("agent /readyz: upstream's status and text, plus servers held of the count", async () => {
  const none = { held: 0, wanted: 1, ids: [], draining: false };
  assert.deepEqual(await get(none, "/readyz"), {
    status: 503,
    body: "[+]ping ok\n[-]server-connected failed: no servers connected\n" +
      "[-]servers-held failed: 0 of 1 server\n",
  });
  const some = { held: 1, wanted: 3, ids: ["s1"], draining: false };
  assert.deepEqual(await get(some, "/readyz"), { status: 200, body: "ok" });
  assert.deepEqual(await get(some, "/readyz?verbose", ["[+]server-leases ok: 3 leases"]), {
    status: 200,
    body: "[+]ping ok\n[+]server-connected ok\n" +
      "[+]servers-held degraded: 1 of 3 servers (s1); connecting to the others\n" +
      "[+]server-leases ok: 3 leases\ncheck passed\n",
  });
});

Deno.test("agent /readyz: all servers held, draining shown (still ready, as upstream)", () => {
  assert.deepEqual(serversHeldLines({ held: 2, wanted: 2, ids: ["s1", "s2"], draining: true }), [
    "[+]servers-held ok: 2 of 2 servers (s1, s2)",
    "[+]draining ok: draining, no new dials accepted",
  ]);
  assert.deepEqual(serversHeldLines(undefined), []);
});
