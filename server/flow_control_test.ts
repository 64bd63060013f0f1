/**
 * Per-connection flow control (KNP_WINDOW) between a ProxyServer and an AgentClient, over memory
 * pipes with fake endpoints: a reader that stops holds only its own connection, bounded by its
 * window, and nothing is reset.
 */

import assert from "node:assert/strict";
import { AgentClient } from "../agent/agent_client.ts";
import { fakeDialer, FakeEndpoint } from "../agent/_test_socket.ts";
import { TunnelConn } from "../client/tunnel_conn.ts";
import { memoryPipe } from "@knp/transport/packet_stream";
import { ProxyServer } from "./proxy_server.ts";

const WINDOW = 16 * 1024;
const settle = (ms = 0) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Counts the bytes the agent read from it. */
class CountingEndpoint extends FakeEndpoint {
  readBytes = 0;
  override async read(buffer: Uint8Array): Promise<number | null> {
    const n = await super.read(buffer);
    if (n !== null) this.readBytes += n;
    return n;
  }
}

function bytes(n: number, seed: number): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (i * 13 + seed) & 255);
}

async function readAll(conn: TunnelConn, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let have = 0;
  const reader = conn.readable.getReader();
  while (have < n) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`EOF after ${have} of ${n} bytes`);
    out.set(value, have);
    have += value.byteLength;
  }
  reader.releaseLock();
  return out;
}

function flowStack(flow: boolean) {
  const server = new ProxyServer({ serverId: "server-1", backendDialTimeoutMs: 0 });
  const { dialer, sockets } = fakeDialer(() => new CountingEndpoint());
  const [serverEnd, agentEnd] = memoryPipe();
  // Record every packet type crossing the agent stream, both ways.
  const crossed: string[] = [];
  for (const end of [serverEnd, agentEnd]) {
    const send = end.send.bind(end);
    end.send = (packet, onSent) => {
      crossed.push(packet.type);
      return send(packet, onSent);
    };
  }
  const hs = server.agentHandshake(["agent-1"], [""]);
  const windows = { sendWindow: WINDOW, recvWindow: WINDOW };
  server.addBackend(hs.agentId, hs.identifiers, serverEnd, flow ? windows : undefined);
  const agent = new AgentClient({
    stream: agentEnd,
    serverId: "server-1",
    dialer,
    flow: flow ? windows : undefined,
  });
  agent.start();
  const tunnel = async () => {
    // A small mark, like HTTP/2's per-stream window on a real frontend.
    const [clientEnd, frontendEnd] = memoryPipe({ highWater: WINDOW });
    server.serveFrontend(frontendEnd);
    const conn = new TunnelConn(clientEnd, "10.0.0.1:80", { readHighWater: 1024 }, () => {});
    await conn.dial("tcp", {});
    return conn;
  };
  const close = () => {
    agent.close();
    server.close();
  };
  return { server, agent, sockets: sockets as CountingEndpoint[], tunnel, close, crossed };
}

Deno.test("flow control: a stalled reader holds only its own connection, bounded by its window", async () => {
  const s = flowStack(true);
  const stalled = await s.tunnel();
  const healthy = await s.tunnel();
  const [stalledSocket, healthySocket] = s.sockets;
  const big = bytes(512 * 1024, 1);
  stalledSocket!.push(big);
  await settle(20);
  // The agent stopped reading the stalled endpoint after one window, plus what the client's
  // own stream took before it paused (one more window's worth at most).
  assert.ok(
    stalledSocket!.readBytes <= 2 * WINDOW,
    `agent read ${stalledSocket!.readBytes} bytes of a stalled connection`,
  );
  assert.ok(stalledSocket!.readBytes > 0);

  // Meanwhile the other connection on the same agent stream moves freely, both ways.
  const payload = bytes(256 * 1024, 7);
  healthySocket!.push(payload);
  assert.deepEqual(await readAll(healthy, payload.length), payload);
  const writer = healthy.writable.getWriter();
  await writer.write(bytes(100 * 1024, 3));
  writer.releaseLock();
  await settle(20);
  assert.deepEqual(healthySocket!.written, bytes(100 * 1024, 3));

  // The stalled connection was never reset: once read, every byte arrives in order.
  assert.equal(s.server.establishedConnections, 2);
  assert.deepEqual(await readAll(stalled, big.length), big);
  assert.ok(s.crossed.includes("KNP_WINDOW"));
  assert.equal(stalledSocket!.closed, false);
  stalled.close();
  healthy.close();
  await Promise.all([stalled.closed, healthy.closed]);
  assert.equal(stalled.closeError, "");
  s.close();
});

Deno.test("flow control: a slow endpoint pauses only its own frontend, bounded by the window", async () => {
  const s = flowStack(true);
  const conn = await s.tunnel();
  const socket = s.sockets[0]!;
  socket.writeMode = "stalled";
  const writer = conn.writable.getWriter();
  // Write far more than the window; the writer must stop being accepted instead of piling up.
  let accepted = 0;
  const pumping = (async () => {
    for (let i = 0; i < 64; i++) {
      await writer.write(bytes(16 * 1024, i));
      accepted += 16 * 1024;
    }
  })();
  await settle(30);
  assert.ok(
    accepted <= 4 * WINDOW + 2 * 64 * 1024,
    `${accepted} bytes accepted toward a stalled endpoint`,
  );
  assert.ok(accepted < 64 * 16 * 1024, "the frontend was held");
  // The endpoint reads again: everything arrives, in order.
  socket.releaseWrites("instant");
  await pumping;
  writer.releaseLock();
  await settle(20);
  const written = socket.written;
  assert.equal(written.length, 64 * 16 * 1024);
  for (let i = 0; i < 64; i++) {
    assert.deepEqual(written.subarray(i * 16 * 1024, (i + 1) * 16 * 1024), bytes(16 * 1024, i));
  }
  conn.close();
  await conn.closed;
  s.close();
});

Deno.test("flow control: without negotiation no KNP_WINDOW is ever sent", async () => {
  const s = flowStack(false);
  const conn = await s.tunnel();
  const socket = s.sockets[0]!;
  const payload = bytes(200 * 1024, 5);
  socket.push(payload);
  const writer = conn.writable.getWriter();
  await writer.write(bytes(100 * 1024, 2));
  writer.releaseLock();
  assert.deepEqual(await readAll(conn, payload.length), payload);
  await settle(20);
  assert.equal(socket.written.length, 100 * 1024);
  // Upstream peers must never see the extension.
  assert.ok(s.crossed.includes("DATA"));
  assert.ok(!s.crossed.includes("KNP_WINDOW"), s.crossed.join(","));
  conn.close();
  await conn.closed;
  s.close();
});
