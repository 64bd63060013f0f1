/**
 * Helpers shared by the native HTTP/2 tests of the server (`serve_test.ts`) and the client
 * (`client_channel_test.ts`): a collector of what a stream receives, a server started on a
 * loopback port (or the Unix socket asked for) around a test body, and the agent service's
 * Connect exchange (response headers, metadata, packets echoed). Not part of the library.
 *
 * @module
 */

import assert from "node:assert/strict";
import { dataPacket, type DecodedPacket } from "@knp/proto";
import type { PacketStream } from "../packet_stream.ts";
import type { H2IncomingStream, ServeH2GrpcOptions } from "./serve.ts";

/** Starts a gRPC server (native or grpc-js) with `options`. */
export type Serve = (
  o: ServeH2GrpcOptions,
) => Promise<{ port: number; close(g?: boolean): Promise<void> }>;

/** What a {@linkcode collector} received. */
export interface Collected {
  packets: DecodedPacket[];
  /** Resolves once `n` packets arrived. */
  count(n: number): Promise<DecodedPacket[]>;
}

/** Collects what a stream receives; resolves `count(n)` once n packets arrived. */
export function collector(stream: PacketStream): Collected {
  const packets: DecodedPacket[] = [];
  let want = Infinity;
  let reached = () => {};
  stream.start({
    onPacket(p) {
      packets.push(p);
      if (packets.length >= want) reached();
    },
    onEnd() {},
  });
  return {
    packets,
    count(n: number): Promise<DecodedPacket[]> {
      if (packets.length >= n) return Promise.resolve(packets);
      want = n;
      return new Promise((resolve) => (reached = () => resolve(packets)));
    },
  };
}

/**
 * Runs `body` with the target of a `serve` server (the "proxy" service on a loopback port unless
 * `options` say otherwise), closing the server after it.
 */
export async function withServer(
  serve: Serve,
  options: Partial<ServeH2GrpcOptions> & Pick<ServeH2GrpcOptions, "onStream">,
  body: (target: string) => Promise<void>,
): Promise<void> {
  const server = await serve({ service: "proxy", address: "127.0.0.1:0", ...options });
  try {
    await body(options.address?.startsWith("unix:") ? options.address : `127.0.0.1:${server.port}`);
  } finally {
    await server.close();
  }
}

/** Server options of the agent service: `serverid`/`servercount` headers, then `answer`. */
export function agentService(answer: (incoming: H2IncomingStream) => void): {
  options: Pick<ServeH2GrpcOptions, "service" | "onStream">;
  /** The first call, once it arrived. */
  seen: Promise<H2IncomingStream>;
} {
  const seen = Promise.withResolvers<H2IncomingStream>();
  return {
    options: {
      service: "agent",
      onStream(incoming) {
        incoming.sendHeaders({ serverid: "s-1", servercount: "3" });
        answer(incoming);
        seen.resolve(incoming);
      },
    },
    seen: seen.promise,
  };
}

/** A client channel (native or grpc-js) as the Connect exchange uses it. */
export interface AgentChannel {
  openStream(
    service: "agent",
    metadata: Record<string, string>,
    options: { awaitHeaders: boolean },
  ): Promise<{ stream: PacketStream; headers: (key: string) => string[] }>;
}

/**
 * Opens a Connect stream of `agentService` with `agentid` written as `agentIdKey`, checks the
 * response headers and the metadata that arrived, and has 3 DATA packets echoed back.
 */
export async function connectExchange(
  channel: AgentChannel,
  seen: Promise<H2IncomingStream>,
  agentIdKey: string,
): Promise<{ stream: PacketStream; incoming: H2IncomingStream }> {
  const { stream, headers } = await channel.openStream(
    "agent",
    { [agentIdKey]: "agent-7", agentidentifiers: "host=a.example" },
    { awaitHeaders: true },
  );
  assert.deepEqual([headers("serverid"), headers("servercount")], [["s-1"], ["3"]]);
  const incoming = await seen;
  assert.deepEqual(incoming.metadata("agentid"), ["agent-7"]);
  assert.deepEqual(incoming.metadata("agentidentifiers"), ["host=a.example"]);
  const got = collector(stream);
  for (let i = 1n; i <= 3n; i++) stream.send(dataPacket(i, new Uint8Array([Number(i)])));
  const packets = await got.count(3);
  assert.deepEqual(packets.map((p) => p.type === "DATA" && p.data.connectId), [1n, 2n, 3n]);
  return { stream, incoming };
}
