import assert from "node:assert/strict";
import { FLOW_CONTROL_KEY, formatFlowControl } from "@knp/proto";
import { generateCa } from "@knp/testing/certs";
import type { TlsMaterial, TlsSource } from "@knp/transport/tls_files";
import { connectWebSocket } from "@knp/transport/ws_client";
import { ProxyServer } from "./proxy_server.ts";
import { AGENT_LINK_PATH, serveAgentWebSocket } from "./ws_agent_listener.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

async function material(commonName: string): Promise<{ tls: TlsMaterial; caPem: string }> {
  const ca = await generateCa({ commonName: `${commonName}-ca` });
  const leaf = await ca.issue({
    commonName,
    dnsNames: ["localhost"],
    ipAddresses: ["127.0.0.1"],
    usage: "server",
  });
  return {
    tls: { cert: encoder.encode(leaf.certPem), key: encoder.encode(leaf.keyPem) },
    caPem: ca.certPem,
  };
}

/** A TLS source whose material the test swaps. */
function swappable(first: TlsMaterial) {
  let current = first;
  const listeners = new Set<(m: TlsMaterial) => void>();
  const source: TlsSource = {
    current: () => current,
    onChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
  return {
    source,
    swap(next: TlsMaterial) {
      current = next;
      for (const l of listeners) l(next);
    },
  };
}

/** Sends one HTTP/1.1 request on `conn` and returns the status code of its answer. */
async function statusOf(conn: Deno.Conn, path: string): Promise<number> {
  await conn.write(encoder.encode(`GET ${path} HTTP/1.1\r\nhost: localhost\r\n\r\n`));
  const buffer = new Uint8Array(4096);
  let text = "";
  for (;;) {
    const end = text.indexOf("\r\n\r\n");
    const length = /content-length: (\d+)/i.exec(text);
    if (end >= 0 && length && text.length >= end + 4 + Number(length[1])) break;
    const n = await conn.read(buffer);
    if (n === null) throw new Error(`connection ended after ${JSON.stringify(text)}`);
    text += decoder.decode(buffer.subarray(0, n));
  }
  return Number(text.split(" ")[1]);
}

Deno.test("WebSocket agent link: a certificate change keeps the port and open connections", async () => {
  const first = await material("ws-first");
  const second = await material("ws-second");
  const tls = swappable(first.tls);
  const core = new ProxyServer({ serverId: "s1" });
  const link = await serveAgentWebSocket({
    core,
    hostname: "127.0.0.1",
    port: 0,
    tls: tls.source,
    flowWindow: 64 * 1024,
  });
  try {
    const port = link.port;
    using before = await Deno.connectTls({ hostname: "localhost", port, caCerts: [first.caPem] });
    assert.equal(await statusOf(before, "/elsewhere"), 404);

    tls.swap(second.tls);
    using raw = await Deno.connect({ hostname: "127.0.0.1", port });
    assert.equal(raw.remoteAddr.port, port);
    assert.equal(await statusOf(before, "/elsewhere"), 404);
    using after = await Deno.connectTls({ hostname: "localhost", port, caCerts: [second.caPem] });
    assert.equal(await statusOf(after, AGENT_LINK_PATH), 426);
    const stale = await Deno.connectTls({ hostname: "localhost", port, caCerts: [first.caPem] });
    await assert.rejects(statusOf(stale, "/elsewhere"));
    stale.close();
  } finally {
    await link.close();
    core.close();
  }
});

Deno.test("WebSocket agent link: an agent completes the handshake and is registered", async () => {
  const { tls, caPem } = await material("ws-agent");
  const core = new ProxyServer({ serverId: "s1" });
  const link = await serveAgentWebSocket({
    core,
    hostname: "127.0.0.1",
    port: 0,
    tls,
    flowWindow: 64 * 1024,
  });
  try {
    const ws = await connectWebSocket(`wss://localhost:${link.port}${AGENT_LINK_PATH}`, {
      caCerts: [caPem],
      headers: { agentid: "agent-1", [FLOW_CONTROL_KEY]: formatFlowControl(32 * 1024) },
    });
    const messages: Record<string, unknown>[] = [];
    const ready = Promise.withResolvers<void>();
    ws.onmessage = (e) => {
      const message = JSON.parse(e.data as string) as Record<string, unknown>;
      messages.push(message);
      if (message.challenge !== undefined) ws.send(JSON.stringify({ signature: "" }));
      if (message.ready === true) ready.resolve();
    };
    await ready.promise;
    // The server's 101 lets a knp agent skip masking; the handshake above went unmasked.
    assert.equal(ws.zeroMaskKey, true);
    assert.equal(messages[0]?.serverId, "s1");
    assert.equal(messages[0]?.window, 64 * 1024);
    assert.equal(core.backendStreams, 1);
    const closed = Promise.withResolvers<void>();
    ws.onclose = () => closed.resolve();
    ws.close(1000);
    await closed.promise;
  } finally {
    await link.close();
    core.close();
  }
});
