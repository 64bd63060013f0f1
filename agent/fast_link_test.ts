/**
 * The fast link connector against real sockets: a grpc-js agent service that answers (or ignores)
 * the offer, and a TLS WebSocket server that completes, refuses or botches the link's handshake.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { TLSSocket } from "node:tls";
import { generateCa } from "@knp/testing/certs";
import { KnpError } from "@knp/core/errors";
import type { LogFields, Logger } from "@knp/core/log";
import { serveGrpc } from "@knp/transport/grpc_server";
import type { IncomingStream } from "@knp/transport/grpc_stream";
import { ServerWebSocket } from "@knp/transport/server_websocket";
import { TlsListener } from "@knp/transport/tls_listener";
import { acceptResponse, readUpgradeRequest, refusalResponse } from "@knp/transport/ws_accept";
import { fastLinkConnector } from "./fast_link.ts";
import { grpcConnector } from "./grpc_connector.ts";
import { isRefusal, linkSwitchInError, linkSwitchOf } from "./link_switch.ts";

const encoder = new TextEncoder();

/** Server certificate for localhost and the CA that issued it. */
async function material() {
  const ca = await generateCa({ commonName: "fast-link-ca" });
  const leaf = await ca.issue({
    commonName: "localhost",
    dnsNames: ["localhost"],
    usage: "server",
  });
  return {
    ca: encoder.encode(ca.certPem),
    cert: encoder.encode(leaf.certPem),
    key: encoder.encode(leaf.keyPem),
  };
}

type Material = Awaited<ReturnType<typeof material>>;

/** How the gRPC server answers a call: the offers it saw are recorded. */
type Answer = (incoming: IncomingStream, call: number) => void;

/** Plain upstream-style headers: the call goes on as gRPC. */
const serveGrpcLink: Answer = (incoming) => {
  incoming.sendHeaders({ serverid: "grpc-server", servercount: "1" });
};

/** The knp switch reply naming `port`. */
function switchTo(port: string): Answer {
  return (incoming) => {
    incoming.sendHeaders({ "knp-link": "websocket", "knp-link-port": port });
    incoming.reject(new KnpError("TUNNEL_CLOSED", "knp: continue on the WebSocket agent link"));
  };
}

async function grpcServer(tls: Material, answer: (call: number) => Answer) {
  const offers: string[][] = [];
  const server = await serveGrpc({
    service: "agent",
    address: "127.0.0.1:0",
    tls: { cert: tls.cert, key: tls.key },
    onStream(incoming) {
      offers.push(incoming.metadata("knp-links"));
      answer(offers.length)(incoming, offers.length);
    },
  });
  return { port: server.port, offers, close: () => server.close() };
}

/** A WebSocket link server: `hello` completes the handshake, else the upgrade gets `status`. */
async function wsServer(tls: Material, behaviour: "hello" | number) {
  const upgrades: Map<string, string>[] = [];
  const listener = await TlsListener.listen({
    hostname: "127.0.0.1",
    port: 0,
    tls: { cert: tls.cert, key: tls.key },
    onConnection: (socket) => void serveLink(socket, behaviour, upgrades),
  });
  return { port: listener.port, upgrades, close: () => listener.close() };
}

async function serveLink(
  socket: TLSSocket,
  behaviour: "hello" | number,
  upgrades: Map<string, string>[],
) {
  socket.on("error", () => socket.destroy());
  const req = await readUpgradeRequest(socket, 5_000);
  upgrades.push(req.headers);
  if (behaviour !== "hello") return void socket.end(refusalResponse(behaviour, "no", 3));
  socket.write(await acceptResponse(req.headers.get("sec-websocket-key") ?? ""));
  const ws = new ServerWebSocket(socket, req.leftover);
  ws.onmessage = () => ws.send(JSON.stringify({ ready: true }));
  ws.send(JSON.stringify({ serverId: "ws-server", serverCount: 1, window: 65536, challenge: "c" }));
}

/** A logger that keeps its info records. */
function recordingLogger(): Logger & { infos: [string, LogFields | undefined][] } {
  const infos: [string, LogFields | undefined][] = [];
  const logger: Logger & { infos: typeof infos } = {
    infos,
    debug() {},
    info: (message, fields) => void infos.push([message, fields]),
    warn() {},
    error() {},
    with: () => logger,
  };
  return logger;
}

function connector(port: number, tls: Material, logger?: Logger) {
  const common = { host: "localhost", agentId: "agent-1", agentIdentifiers: "" };
  return fastLinkConnector({
    grpc: { ...common, port, tls: { ca: tls.ca } },
    websocket: { ...common, tls: { ca: tls.ca } },
    ...(logger ? { logger } : {}),
  });
}

Deno.test("fast link: a server that ignores the offer keeps the connection on gRPC", async () => {
  const tls = await material();
  const grpc = await grpcServer(tls, () => serveGrpcLink);
  try {
    const connection = await connector(grpc.port, tls)();
    assert.equal(connection.link, "grpc");
    assert.equal(connection.serverId, "grpc-server");
    assert.deepEqual(grpc.offers, [["websocket"]]);
    connection.stream.close();
    connection.close();
  } finally {
    await grpc.close();
  }
});

Deno.test("fast link: a switch reply moves the connection to the WebSocket link", async () => {
  const tls = await material();
  const ws = await wsServer(tls, "hello");
  const grpc = await grpcServer(tls, () => switchTo(String(ws.port)));
  try {
    const connection = await connector(grpc.port, tls)();
    assert.equal(connection.link, "websocket");
    assert.equal(connection.serverId, "ws-server");
    assert.deepEqual(grpc.offers, [["websocket"]]);
    assert.equal(ws.upgrades.length, 1);
    assert.equal(ws.upgrades[0]!.get("agentid"), "agent-1");
    const ended = connection.stream.done;
    connection.close();
    await ended;
  } finally {
    await grpc.close();
    ws.close();
  }
});

Deno.test("fast link: a failed upgrade is retried once over gRPC without the offer", async () => {
  const tls = await material();
  const ws = await wsServer(tls, 404);
  const grpc = await grpcServer(
    tls,
    (call) => call === 1 ? switchTo(String(ws.port)) : serveGrpcLink,
  );
  const log = recordingLogger();
  try {
    const connection = await connector(grpc.port, tls, log)();
    assert.equal(connection.link, "grpc");
    assert.deepEqual(grpc.offers, [["websocket"], []]);
    assert.equal(log.infos.length, 1);
    assert.match(String(log.infos[0]![1]?.["reason"]), /404/);
    connection.stream.close();
    connection.close();
  } finally {
    await grpc.close();
    ws.close();
  }
});

Deno.test("fast link: an unusable port in the reply is retried over gRPC", async () => {
  const tls = await material();
  const grpc = await grpcServer(tls, (call) => call === 1 ? switchTo("http") : serveGrpcLink);
  const log = recordingLogger();
  try {
    const connection = await connector(grpc.port, tls, log)();
    assert.equal(connection.link, "grpc");
    assert.deepEqual(grpc.offers, [["websocket"], []]);
    assert.match(String(log.infos[0]![1]?.["reason"]), /knp-link-port/);
    connection.stream.close();
    connection.close();
  } finally {
    await grpc.close();
  }
});

Deno.test("fast link: a refusal on the WebSocket link is reported, not retried", async () => {
  const tls = await material();
  const ws = await wsServer(tls, 503);
  const grpc = await grpcServer(tls, () => switchTo(String(ws.port)));
  try {
    const err = await connector(grpc.port, tls)().then(() => undefined, (e) => e);
    assert.ok(err instanceof KnpError && err.code === "OVERLOADED", String(err));
    assert.equal((err as { retryAfterMs?: number }).retryAfterMs, 3000);
    assert.deepEqual(grpc.offers, [["websocket"]]);
  } finally {
    await grpc.close();
    ws.close();
  }
});

Deno.test("grpc connector: no offer, and a switch reply is not followed", async () => {
  const tls = await material();
  const grpc = await grpcServer(tls, () => switchTo("1"));
  try {
    const connect = grpcConnector({
      host: "localhost",
      port: grpc.port,
      agentId: "a",
      agentIdentifiers: "",
      tls: { ca: tls.ca },
    });
    await assert.rejects(connect(), /server ID|UNAVAILABLE/);
    assert.deepEqual(grpc.offers, [[]]);
  } finally {
    await grpc.close();
  }
});

Deno.test("link switch: headers, trailers-only metadata and refusals are read", () => {
  const headers = (h: Record<string, string[]>) => (key: string) => h[key] ?? [];
  assert.equal(linkSwitchOf(headers({})), undefined);
  assert.deepEqual(
    linkSwitchOf(headers({ "knp-link": ["websocket"], "knp-link-port": ["8091"] })),
    { link: "websocket", port: 8091 },
  );
  assert.match(
    linkSwitchOf(headers({ "knp-link": ["websocket"], "knp-link-port": ["70000"] }))?.problem ??
      "",
    /not one port/,
  );
  const metadata = { get: (key: string) => key === "knp-link" ? ["websocket"] : ["443"] };
  const err = new KnpError("TUNNEL_CLOSED", "UNAVAILABLE", { cause: { metadata } });
  assert.deepEqual(linkSwitchInError(err), { link: "websocket", port: 443 });
  assert.equal(linkSwitchInError(new Error("x")), undefined);
  assert.ok(isRefusal(new KnpError("HANDSHAKE", "x", { cause: { status: 401 } })));
  assert.ok(!isRefusal(new KnpError("HANDSHAKE", "x", { cause: { status: 404 } })));
  assert.ok(
    isRefusal(new KnpError("HANDSHAKE", "the server closed the WebSocket link (1008: bad proof)")),
  );
});
