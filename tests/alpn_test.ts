/**
 * `--alpn-proto` between real knp processes: the agent offers the extra protocol first, and the
 * knp server's agent port still picks its own (h2 for gRPC, http/1.1 for the WebSocket link), so
 * both links come up and carry dials.
 *
 * @module
 */

import assert from "node:assert/strict";
import { createSingleUseTunnel } from "@knp/client";
import { startHttpBackend } from "./backends.ts";
import { startAgent, startServer } from "./framework.ts";
import { httpRequest } from "./http_client.ts";

for (const link of ["websocket", "grpc"] as const) {
  Deno.test(`--alpn-proto=konnectivity: the agent connects to a knp server (${link} link)`, async () => {
    await using backend = startHttpBackend();
    await using server = await startServer();
    await using agent = await startAgent(server, {
      negotiated: true,
      extraArgs: [
        "--alpn-proto=konnectivity",
        ...(link === "grpc" ? ["--knp-fast-link=false"] : []),
      ],
    });
    const connected = await agent.process.waitForLog("connected to proxy server");
    assert.equal(connected.link, link);
    assert.ok(!agent.process.log.includes("retrying over gRPC"), agent.process.log);
    const conn = await createSingleUseTunnel({ udsPath: server.udsPath })
      .dial("tcp", backend.address);
    const res = await httpRequest(conn, "GET", "/download?chunks=1&size=1024");
    assert.equal(res.status, 200);
    assert.equal(res.body.length, 1024);
  });
}

Deno.test("--alpn-proto with --knp-grpc-transport=grpc-js: the agent says gRPC cannot offer it", async () => {
  await using server = await startServer();
  await using agent = await startAgent(server, {
    negotiated: true,
    extraArgs: ["--alpn-proto=konnectivity", "--knp-grpc-transport=grpc-js"],
  });
  const warning = await agent.process.waitForLog((r) => String(r.msg).startsWith("--alpn-proto"));
  assert.deepEqual(warning.alpnProto, ["konnectivity"]);
});
