import assert from "node:assert/strict";
import { generateCa } from "@knp/testing/certs";
import { connectWebSocket } from "@knp/transport/ws_client";
import { jsonLogger } from "@knp/core/log";
import { KNP_LINK_KEY, KNP_LINK_PORT_KEY } from "@knp/proto";
import { FAST_LINK_FLAGS, fastLinkConfig, offersWebSocket, switchHeaders } from "./fast_link.ts";
import { parseServerOptions } from "./options.ts";
import { startProxyServer } from "./server.ts";
import { AGENT_LINK_PATH } from "./ws_agent_listener.ts";

const encoder = new TextEncoder();

Deno.test("offersWebSocket() reads the knp-links metadata", () => {
  assert.equal(offersWebSocket(["websocket"]), true);
  assert.equal(offersWebSocket(["quic, WebSocket"]), true);
  assert.equal(offersWebSocket(["grpc", "websocket"]), true);
  assert.equal(offersWebSocket([]), false);
  assert.equal(offersWebSocket(["websockets", "ws"]), false);
});

Deno.test("switchHeaders() names the link and its port", () => {
  assert.deepEqual(switchHeaders(8091), {
    [KNP_LINK_KEY]: "websocket",
    [KNP_LINK_PORT_KEY]: "8091",
  });
  assert.equal(KNP_LINK_KEY, "knp-link");
  assert.equal(KNP_LINK_PORT_KEY, "knp-link-port");
});

Deno.test("--knp-fast-link is on by default and can be turned off", () => {
  const flag = FAST_LINK_FLAGS.find((f) => f.name === "knp-fast-link");
  assert.match(flag?.help ?? "", /^knp only:.*Upstream agents are unaffected/s);
  const on = parseServerOptions([], {});
  const off = parseServerOptions(["--knp-fast-link=false"], {});
  assert.ok(!("help" in on) && !("help" in off));
  assert.deepEqual(fastLinkConfig(on.options), { fastLink: true });
  assert.deepEqual(fastLinkConfig(off.options), { fastLink: false });
});

/** A cluster CA with a server certificate for localhost, and a client certificate. */
async function clusterPki() {
  const ca = await generateCa({ commonName: "fast-link-ca" });
  const server = await ca.issue({
    commonName: "server",
    dnsNames: ["localhost"],
    ipAddresses: ["127.0.0.1"],
    usage: "server",
  });
  return {
    caPem: ca.certPem,
    tls: {
      cert: encoder.encode(server.certPem),
      key: encoder.encode(server.keyPem),
      ca: encoder.encode(ca.certPem),
    },
  };
}

Deno.test("fast link: the native agent port runs the WebSocket link's own checks", async () => {
  const { caPem, tls } = await clusterPki();
  const dir = await Deno.makeTempDir({ prefix: "knp-fast-link-" });
  const records: Record<string, unknown>[] = [];
  const server = await startProxyServer({
    serverId: "s1",
    udsName: `${dir}/frontend.sock`,
    agentBindAddress: "127.0.0.1",
    agentPort: 0,
    clusterTls: tls,
    grpcTransport: "native",
    fastLink: true,
    logger: jsonLogger({ level: "debug", write: (line) => records.push(JSON.parse(line)) }),
  });
  try {
    const url = `wss://localhost:${server.agentPort}${AGENT_LINK_PATH}`;
    // No certificate: the link's handshake refuses it (401), as on --knp-websocket-port.
    await assert.rejects(
      connectWebSocket(url, {
        caCerts: [caPem],
        headers: { agentid: "no-cert", "knp-flow-control": "v1;window=65536" },
      }),
      /401.*the agent presented no client certificate/s,
    );
    // A TLS client certificate of another CA: cut by the agent port's certificate check.
    const stranger = await (await generateCa({ commonName: "other-ca" })).issue({
      commonName: "intruder",
      usage: "client",
    });
    await assert.rejects(
      connectWebSocket(url, {
        caCerts: [caPem],
        cert: stranger.certPem,
        key: stranger.keyPem,
        headers: { agentid: "intruder", "knp-flow-control": "v1;window=65536" },
      }),
    );
    const refusals = records.filter((r) => r.msg === "agent refused");
    assert.equal(refusals.length, 2, JSON.stringify(refusals));
    assert.deepEqual(refusals.map((r) => [r.link, r.reason]), [
      ["WebSocket", "unauthenticated"],
      ["WebSocket", "unauthenticated"],
    ]);
    assert.match(String(refusals[1]?.error), /not signed|certificate/);
    assert.equal(server.websocketPort, 0);
  } finally {
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
});
