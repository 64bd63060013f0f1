/**
 * Tests of the tunnel idle timeout in the core (in-memory streams, fake clock).
 *
 * @module
 */

import assert from "node:assert/strict";
import { closeRequest, dataPacket, dialRequest, dialResponse } from "@knp/proto";
import type { LogFields, Logger } from "@knp/core/log";
import { memoryPipe } from "@knp/transport/packet_stream";
import { fakeTimers, startPeer } from "@knp/testing/fakes";
import { ProxyServer } from "./proxy_server.ts";

const settle = () => new Promise<void>((resolve) => setTimeout(resolve, 0));

function setup(tunnelIdleTimeoutMs: number) {
  const { clock, timers } = fakeTimers();
  const infos: [string, LogFields][] = [];
  const log: Logger = {
    debug() {},
    info: (msg, f = {}) => void infos.push([msg, f]),
    warn() {},
    error() {},
    with: () => log,
  };
  const server = new ProxyServer({
    serverId: "s1",
    timers,
    logger: log,
    tunnelIdleTimeoutMs,
    backendDialTimeoutMs: 0, // pending dials stay pending
  });
  const [serverEnd, agentEnd] = memoryPipe();
  const hs = server.agentHandshake(["a1"], [""]);
  server.addBackend(hs.agentId, hs.identifiers, serverEnd);
  const agent = startPeer(agentEnd);
  const frontend = (dialId: bigint) => {
    const [clientEnd, end] = memoryPipe();
    server.serveFrontend(end, "test");
    const peer = startPeer(clientEnd);
    peer.end.send(dialRequest("10.0.0.1:80", dialId));
    return peer;
  };
  return { clock, server, agent, frontend, infos };
}

Deno.test("tunnel idle timeout closes an established tunnel without DATA both ways", async () => {
  const h = setup(10_000);
  const busy = h.frontend(1n);
  const quiet = h.frontend(2n);
  const pending = h.frontend(3n);
  await settle();
  h.agent.end.send(dialResponse(1n, 11n));
  h.agent.end.send(dialResponse(2n, 12n));
  await settle();
  assert.equal(h.server.establishedConnections, 2);

  h.clock.tick(6_000);
  busy.end.send(dataPacket(11n, new Uint8Array([1]))); // frontend → agent
  await settle();
  h.clock.tick(5_000); // 11 s: the quiet tunnel is idle, the busy one only 5 s
  await settle();
  assert.deepEqual(h.agent.of("CLOSE_REQ").map((p) => p.closeRequest.connectId), [12n]);
  const rsp = quiet.of("CLOSE_RSP")[0]!.closeResponse;
  assert.equal(rsp.connectId, 12n);
  assert.match(rsp.error, /tunnel idle for \d+ ms/);
  assert.equal(quiet.ends.length, 1, "the frontend stream is closed");
  assert.deepEqual(
    h.infos.filter(([m]) => m === "closing idle tunnel").map(([, f]) => f.connectID),
    [
      12n,
    ],
  );

  h.agent.end.send(dataPacket(11n, new Uint8Array([2]))); // agent → frontend keeps it alive too
  await settle();
  h.clock.tick(9_000);
  await settle();
  assert.equal(busy.ends.length, 0, "DATA either way counts as activity");
  assert.equal(pending.ends.length, 0, "a pending dial is the dial timeout's business");
  h.clock.tick(3_000);
  await settle();
  assert.equal(busy.ends.length, 1);
  assert.deepEqual(h.agent.of("CLOSE_REQ").at(-1), closeRequest(11n));
  assert.equal(h.server.establishedConnections, 0);
  h.server.close();
  await settle();
});

Deno.test("tunnel idle timeout 0 leaves idle tunnels open", async () => {
  const h = setup(0);
  const f = h.frontend(1n);
  await settle();
  h.agent.end.send(dialResponse(1n, 11n));
  await settle();
  h.clock.tick(24 * 3_600_000);
  await settle();
  assert.equal(f.ends.length, 0);
  assert.equal(h.server.establishedConnections, 1);
  h.server.close();
  await settle();
});
