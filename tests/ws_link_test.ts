/**
 * The knp WebSocket agent link against misbehaving or unauthorised peers, through a real server
 * process: only an agent holding a certificate of the cluster CA and its key gets in, and a bad
 * link never disturbs a good one.
 */

import assert from "node:assert/strict";
import { generateCa } from "../testing/certs.ts";
import { proofPayload, signProof } from "../transport/agent_proof.ts";
import { encodePacket } from "../proto/codec.ts";
import { dialResponse } from "../proto/packet.ts";
import { createSingleUseTunnel } from "@knp/client";
import { startHttpBackend } from "./backends.ts";
import { type ServerProcess, startAgent, startServer } from "./framework.ts";
import { readSample } from "../server/metrics.ts";
import { httpRequest } from "./http_client.ts";

function b64(text: string): string {
  return btoa(String.fromCharCode(...new TextEncoder().encode(text)));
}

/** Opens a raw link: resolves with the socket and the server's first text message (if any). */
async function rawLink(
  server: ServerProcess,
  headers: Record<string, string>,
): Promise<
  { ws: WebSocket; hello?: Record<string, string> | undefined; closed: Promise<CloseEvent> }
> {
  const ca = await Deno.readTextFile(server.pki.caCert);
  const client = Deno.createHttpClient({ caCerts: [ca] });
  const ws = new WebSocket(`wss://localhost:${server.websocketPort}/knp/v1/agent`, {
    client,
    headers: { "knp-flow-control": "v1;window=65536", agentidentifiers: "", ...headers },
  } as unknown as string[]);
  const closed = new Promise<CloseEvent>((resolve) => {
    ws.addEventListener("close", (e) => {
      client.close();
      resolve(e);
    });
  });
  const hello = await new Promise<Record<string, string> | undefined>((resolve) => {
    ws.onmessage = (e) => resolve(JSON.parse(e.data));
    ws.onclose = () => resolve(undefined);
    ws.onerror = () => {};
  });
  return { ws, hello, closed };
}

async function getThrough(server: ServerProcess, address: string): Promise<string> {
  const conn = await createSingleUseTunnel({ udsPath: server.udsPath }).dial("tcp", address);
  return new TextDecoder().decode((await httpRequest(conn, "GET", "/success")).body);
}

Deno.test(
  "ws link: an agent whose certificate is from another CA never gets in",
  async () => {
    await using server = await startServer({ link: "websocket" });
    const other = await generateCa({ commonName: "not-the-cluster-ca" });
    const stranger = await other.issue({ commonName: "intruder", usage: "client" });
    const { hello, closed } = await rawLink(server, {
      agentid: "intruder",
      "knp-agent-cert": b64(stranger.certPem),
    });
    assert.equal(hello, undefined, "the server must refuse before the handshake starts");
    await closed;
    assert.match(server.process.log, /is not signed by --cluster-ca-cert/);
    assert.equal(await server.status("/readyz"), 500);
  },
);

Deno.test(
  "ws link: an agent without a certificate, or with a forged proof, is refused",
  async () => {
    await using server = await startServer({ link: "websocket" });
    const noCert = await rawLink(server, { agentid: "no-cert" });
    assert.equal(noCert.hello, undefined);
    await noCert.closed;
    assert.match(
      server.process.log,
      /"agent refused","reason":"unauthenticated","link":"WebSocket","agentID":"no-cert".*the agent presented no client certificate/,
    );

    // A real certificate of the cluster CA, but signed with a key the sender does not hold.
    const cert = await Deno.readTextFile(server.pki.clientCert);
    const impostor = await (await generateCa({ commonName: "x" })).issue({
      commonName: "y",
      usage: "client",
    });
    const forged = await rawLink(server, { agentid: "forger", "knp-agent-cert": b64(cert) });
    assert.ok(forged.hello?.challenge);
    const payload = proofPayload(forged.hello!.serverId!, "forger", forged.hello!.challenge!);
    forged.ws.send(JSON.stringify({ signature: signProof(impostor.keyPem, payload) }));
    const event = await forged.closed;
    assert.equal(event.code, 1008);
    assert.match(server.process.log, /proof of its certificate key is invalid/);
    assert.equal(await server.status("/readyz"), 500);
  },
);

Deno.test(
  "ws link: malformed frames end only that link; a real agent keeps working",
  async () => {
    await using backend = startHttpBackend();
    // Debug level logs "DIAL_RSP not recognized; dropped" as the server drops one.
    await using server = await startServer({ link: "websocket", extraArgs: ["--v=5"] });
    await using _agent = await startAgent(server);
    assert.equal(await getThrough(server, backend.address), "hello");

    const cert = await Deno.readTextFile(server.pki.clientCert);
    const key = await Deno.readTextFile(server.pki.clientKey);
    const cases: [string, Uint8Array | string][] = [
      ["a frame length past the message end", new Uint8Array([0x10, 0x08, 0x01])],
      ["a DIAL_RSP type without its payload", new Uint8Array([0x02, 0x08, 0x01])],
      ["a text message after the handshake", "hello?"],
    ];
    for (const [what, message] of cases) {
      const link = await rawLink(server, { agentid: `bad-${what}`, "knp-agent-cert": b64(cert) });
      const payload = proofPayload(link.hello!.serverId!, `bad-${what}`, link.hello!.challenge!);
      link.ws.send(JSON.stringify({ signature: signProof(key, payload) }));
      await new Promise<void>((resolve) => (link.ws.onmessage = () => resolve())); // ready
      link.ws.send(message);
      const event = await link.closed;
      assert.ok(event.code === 1008 || event.code === 1011, `${what}: close code ${event.code}`);
      assert.equal(await getThrough(server, backend.address), "hello", `after ${what}`);
    }
    // A well-formed but unknown DIAL_RSP is simply dropped: the link stays up.
    const link = await rawLink(server, { agentid: "quiet", "knp-agent-cert": b64(cert) });
    const payload = proofPayload(link.hello!.serverId!, "quiet", link.hello!.challenge!);
    link.ws.send(JSON.stringify({ signature: signProof(key, payload) }));
    await new Promise<void>((resolve) => (link.ws.onmessage = () => resolve()));
    const rsp = encodePacket(dialResponse(42n, 0n, "nobody asked"));
    const from = server.process.mark();
    link.ws.send(new Uint8Array([rsp.length, ...rsp]));
    const metrics = async () => await (await server.health("/metrics")).text();
    const unrecognized =
      'konnectivity_network_proxy_server_dial_failure_count{reason="unrecognized_response"}';
    await server.process.waitForLog("DIAL_RSP not recognized; dropped", { from });
    assert.equal(readSample(await metrics(), unrecognized), 1);
    assert.equal(link.ws.readyState, WebSocket.OPEN);
    // While connected, the random strategy may pick this silent agent: close it first.
    link.ws.close(1000);
    await link.closed;
    const ready = 'konnectivity_network_proxy_server_ready_backends{proxy_strategy="default"}';
    await server.agents(1);
    assert.equal(readSample(await metrics(), ready), 1);
    assert.equal(await getThrough(server, backend.address), "hello");
  },
);

Deno.test(
  "ws link: a peer that never finishes the handshake is dropped within the bound",
  async () => {
    await using server = await startServer({ link: "websocket" });
    const cert = await Deno.readTextFile(server.pki.clientCert);
    const started = Date.now();
    const link = await rawLink(server, { agentid: "silent", "knp-agent-cert": b64(cert) });
    assert.ok(link.hello?.challenge);
    await link.closed; // never answer the challenge
    const elapsed = Date.now() - started;
    assert.ok(elapsed < 20_000, `dropped after ${elapsed} ms`);
    assert.match(server.process.log, /handshake timed out/);
  },
);
