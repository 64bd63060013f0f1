/**
 * Routing with real processes: one server (`--proxy-strategies=destHost,destCIDR,default`, a zone
 * map and a per-agent connection limit of 3) and three agents advertising hosts, CIDRs and zones.
 * Each dial goes to a loopback listener of its own address (127.0.0.0/8 is all loopback), and the
 * agent that served it is read from the server's debug record "forwarding DIAL_REQ".
 *
 * @module
 */

import assert from "node:assert/strict";
import { createTunnel, DialError, type TunnelConn } from "@knp/client";
import { type ServerProcess, startAgent, startServer } from "./framework.ts";

/** Loopback listeners on given addresses that accept connections and hold them open. */
class Listeners implements Disposable {
  readonly #listeners = new Map<string, Deno.TcpListener>();
  readonly #conns = new Set<Deno.Conn>();

  /** `host:port` of a listener on `host` (opened on first use). */
  address(host: string): string {
    let listener = this.#listeners.get(host);
    if (!listener) {
      listener = Deno.listen({ hostname: host, port: 0 });
      this.#listeners.set(host, listener);
      (async () => {
        for await (const conn of listener) this.#conns.add(conn);
      })().catch(() => {});
    }
    return `${host}:${listener.addr.port}`;
  }

  [Symbol.dispose](): void {
    for (const l of this.#listeners.values()) l.close();
    for (const c of this.#conns) {
      try {
        c.close();
      } catch { /* closed */ }
    }
  }
}

/** Dials `address` through the tunnel; returns the open connection and the agent that served. */
async function dialVia(
  server: ServerProcess,
  tunnel: ReturnType<typeof createTunnel>,
  address: string,
): Promise<{ agent: unknown; conn: TunnelConn }> {
  const from = server.process.mark();
  const conn = await tunnel.dial("tcp", address);
  const record = await server.process.waitForLog(
    (r) => r.msg === "forwarding DIAL_REQ" && r.address === address,
    { from },
  );
  return { agent: record.agentID, conn };
}

Deno.test("routing: destHost, longest CIDR prefix, zone, load, and full agents skipped", async () => {
  await using stack = new AsyncDisposableStack();
  const listeners = stack.use(new Listeners());
  const server = stack.use(
    await startServer({
      extraArgs: [
        "--v=5",
        "--proxy-strategies=destHost,destCIDR,default",
        "--knp-zone-cidrs=zone-b=127.2.0.0/16",
        "--knp-max-connections-per-agent=3",
      ],
    }),
  );
  const agent = async (agentId: string, identifiers: string) =>
    stack.use(
      await startAgent(server, { agentId, extraArgs: [`--agent-identifiers=${identifiers}`] }),
    );
  await agent("agent-a", "cidr=127.0.0.0/16&zone=zone-a");
  await agent("agent-b", "cidr=127.0.1.0/24&zone=zone-b");
  await agent("agent-c", "ipv4=127.0.1.5&zone=zone-b");
  await server.agents(3);
  const tunnel = stack.use(createTunnel({ udsPath: server.udsPath }));
  const conns: TunnelConn[] = [];
  stack.defer(async () => {
    await Promise.allSettled(conns.map((c) => c.close()));
  });
  const served = async (host: string) => {
    const { agent, conn } = await dialVia(server, tunnel, listeners.address(host));
    conns.push(conn); // held open: each one is load on its agent
    return agent;
  };

  // destHost before destCIDR: 127.0.1.5 is agent-c's ipv4 (agent-b's /24 holds it too).
  assert.equal(await served("127.0.1.5"), "agent-c");
  // destCIDR: the /24 of agent-b beats the /16 of agent-a.
  assert.equal(await served("127.0.1.9"), "agent-b");
  assert.equal(await served("127.0.1.10"), "agent-b");
  // Open connections: a 0, b 2, c 1. 127.2.0.1 is in zone-b (no host or CIDR matches it): the
  // default strategy prefers zone-b's agents over idle agent-a, and the less loaded of them.
  assert.equal(await served("127.2.0.1"), "agent-c");
  // Outside both: agent-a's /16.
  assert.equal(await served("127.0.7.1"), "agent-a");
  // agent-b reaches the limit of 3 ...
  assert.equal(await served("127.0.1.12"), "agent-b");
  // ... so its /24 is skipped for the /16 of agent-a, and zone-b is left with agent-c (2 open).
  assert.equal(await served("127.0.1.13"), "agent-a");
  assert.equal(await served("127.2.0.1"), "agent-c");
  // Both zone-b agents are full now: any agent with room serves (agent-a, 2 open).
  assert.equal(await served("127.2.0.2"), "agent-a");
  // Every agent is full: refused as overloaded, naming the agent the strategies picked.
  const refused = await tunnel.dial("tcp", listeners.address("127.0.1.14")).catch((e) => e);
  assert.ok(refused instanceof DialError && refused.kind === "server-overloaded", String(refused));
  assert.match(refused.message, /agent agent-b has 3 open connections \(limit 3 per agent\)/);
});
