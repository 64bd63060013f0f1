/**
 * Test harness of the agent's connection handling: an `AgentClient` on one memory pipe, a fake
 * clock and a fake dialer (shared by `agent_client_test.ts` and `endpoint_conn_test.ts`).
 *
 * @module
 */

import assert from "node:assert/strict";
import { dialRequest } from "@knp/proto";
import type { GuardLimits } from "@knp/core/backpressure";
import { memoryPipe } from "@knp/transport/packet_stream";
import { fakeTimers, startPeer } from "@knp/testing/fakes";
import { AgentClient } from "./agent_client.ts";
import { fakeDialer, FakeEndpoint, type WriteMode } from "./_test_socket.ts";

/** Lets every queued microtask (and the pipes' pumps) run. */
export const settle = () => new Promise<void>((resolve) => setTimeout(resolve, 0));

export const text = (s: string) => new TextEncoder().encode(s);
export const decode = (b: Uint8Array) => new TextDecoder().decode(b);
export const KiB = 1024;

export interface HarnessOptions {
  /** Sockets for auto-answered dials; omit to answer dials by hand through `calls`. */
  writeMode?: WriteMode | ((address: string) => FakeEndpoint | Error);
  guard?: GuardLimits;
  /** Flow control as negotiated with a knp server. */
  flow?: { sendWindow: number; recvWindow: number };
}

/** An AgentClient on one memory pipe, a fake clock and a fake dialer. */
export function harness(options: HarnessOptions = {}) {
  const { clock, timers } = fakeTimers();
  const mode = options.writeMode;
  const { dialer, calls, sockets } = fakeDialer(
    mode === undefined
      ? undefined
      : typeof mode === "function"
      ? mode
      : () => new FakeEndpoint({ writeMode: mode }),
  );
  const [serverEnd, agentEnd] = memoryPipe();
  const server = startPeer(serverEnd);
  const client = new AgentClient({
    stream: agentEnd,
    serverId: "server-1",
    dialer,
    timers,
    guard: options.guard,
    ...(options.flow ? { flow: options.flow } : {}),
  });
  client.start();
  return {
    clock,
    client,
    server,
    /** The agent's end of the link. */
    link: agentEnd,
    calls,
    sockets,
    /** Dials `address` from the server side and returns the connectID the agent answered. */
    async dial(dialId: bigint, address = "10.0.0.1:80"): Promise<bigint> {
      server.end.send(dialRequest(address, dialId));
      await settle();
      const rsp = server.of("DIAL_RSP").find((p) => p.dialResponse.random === dialId);
      assert.ok(rsp, `no DIAL_RSP for dial ${dialId}`);
      assert.equal(rsp.dialResponse.error, "");
      return rsp.dialResponse.connectId;
    },
    async close() {
      client.close();
      await settle();
    },
  };
}
