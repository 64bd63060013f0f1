/**
 * `fromNodeSocket` over real node:tls sockets: a reader that stops and starts many times (the
 * adapter stops reading on the TCP handle beneath the TLS layer) still gets every byte, in order,
 * and then the end.
 *
 * @module
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import * as tls from "node:tls";
import { generateCa } from "@knp/testing";
import { fromNodeSocket } from "./byte_socket.ts";

const TOTAL = 24 * 1024 * 1024;

/** Deterministic bytes: chunk `i` of 64 KiB filled from a counter. */
function chunk(i: number): Uint8Array {
  const out = new Uint8Array(64 * 1024);
  for (let j = 0; j < out.length; j++) out[j] = (i * 31 + j) & 0xff;
  return out;
}

Deno.test("fromNodeSocket over node:tls: a slow reader gets every byte through many stops", async () => {
  const ca = await generateCa({ commonName: "byte-socket-ca" });
  const cert = await ca.issue({
    commonName: "localhost",
    dnsNames: ["localhost"],
    ipAddresses: ["127.0.0.1"],
    usage: "server",
  });
  const received = Promise.withResolvers<{ bytes: number; sha: string }>();
  const server = tls.createServer({ cert: cert.certPem, key: cert.keyPem }, async (socket) => {
    // A small buffer bound, so the adapter stops and restarts reading hundreds of times.
    const reader = fromNodeSocket(socket, 64 * 1024);
    const hash = createHash("sha256");
    const buf = new Uint8Array(16 * 1024);
    let bytes = 0;
    for (let reads = 0;; reads++) {
      const n = await reader.read(buf);
      if (n === null) break;
      hash.update(buf.subarray(0, n));
      bytes += n;
      // Yield to the event loop now and then: the peer keeps sending meanwhile.
      if (reads % 8 === 0) await new Promise((resolve) => setTimeout(resolve, 0));
    }
    reader.close();
    received.resolve({ bytes, sha: hash.digest("hex") });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const port = (server.address() as { port: number }).port;
  const client = tls.connect({ host: "127.0.0.1", port, ca: ca.certPem, servername: "localhost" });
  await new Promise<void>((resolve) => client.once("secureConnect", () => resolve()));
  const sent = createHash("sha256");
  for (let i = 0; i * 64 * 1024 < TOTAL; i++) {
    const data = chunk(i);
    sent.update(data);
    if (!client.write(data)) await new Promise((resolve) => client.once("drain", resolve));
  }
  client.end();
  const got = await received.promise;
  client.destroy();
  await new Promise((resolve) => server.close(resolve));
  assert.equal(got.bytes, TOTAL);
  assert.equal(got.sha, sent.digest("hex"));
});

Deno.test("fromNodeSocket: a zero-byte write resolves without touching the socket", async () => {
  const ca = await generateCa({ commonName: "byte-socket-ca" });
  const cert = await ca.issue({
    commonName: "localhost",
    dnsNames: ["localhost"],
    ipAddresses: ["127.0.0.1"],
    usage: "server",
  });
  const accepted = Promise.withResolvers<tls.TLSSocket>();
  const server = tls.createServer({ cert: cert.certPem, key: cert.keyPem }, accepted.resolve);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const port = (server.address() as { port: number }).port;
  const client = tls.connect({ host: "127.0.0.1", port, ca: ca.certPem, servername: "localhost" });
  const socket = fromNodeSocket(await accepted.promise);
  assert.equal(await socket.write(new Uint8Array(0)), 0);
  assert.equal(await socket.write(new Uint8Array([1, 2, 3])), 3);
  const first = await new Promise<Uint8Array>((resolve) => client.once("data", resolve));
  assert.deepEqual([...first], [1, 2, 3]);
  client.destroy();
  socket.close();
  await new Promise((resolve) => server.close(resolve));
});
