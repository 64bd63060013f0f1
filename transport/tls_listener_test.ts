import assert from "node:assert/strict";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import { type CertificateAuthority, generateCa } from "@knp/testing/certs";
import { TlsListener } from "./tls_listener.ts";
import type { TlsMaterial } from "./tls_files.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

async function serverMaterial(ca: CertificateAuthority, name: string): Promise<TlsMaterial> {
  const leaf = await ca.issue({
    commonName: name,
    dnsNames: ["localhost"],
    ipAddresses: ["127.0.0.1"],
    usage: "server",
  });
  return {
    cert: encoder.encode(leaf.certPem),
    key: encoder.encode(leaf.keyPem),
    ca: encoder.encode(ca.certPem),
  };
}

/** An echo server: every accepted socket writes back what it reads. */
function echo(socket: TLSSocket): void {
  socket.on("data", (chunk: Uint8Array) => socket.write(chunk));
  socket.on("error", () => {});
}

async function roundTrip(conn: Deno.Conn, text: string): Promise<string> {
  await conn.write(encoder.encode(text));
  const buffer = new Uint8Array(64);
  let got = "";
  while (got.length < text.length) {
    const n = await conn.read(buffer);
    if (n === null) throw new Error("connection ended");
    got += decoder.decode(buffer.subarray(0, n));
  }
  return got;
}

/** The common name of the certificate a node:tls client sees. */
function peerName(port: number, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: "127.0.0.1", port, ca, servername: "localhost" }, () => {
      const cn = socket.getPeerCertificate().subject.CN;
      socket.destroy();
      resolve(Array.isArray(cn) ? cn.join(",") : String(cn));
    });
    socket.once("error", reject);
  });
}

Deno.test("TlsListener swaps its certificate in place; open connections continue", async () => {
  const oldCa = await generateCa({ commonName: "tls-listener-old-ca" });
  const newCa = await generateCa({ commonName: "tls-listener-new-ca" });
  const oldMaterial = await serverMaterial(oldCa, "old-server");
  const newMaterial = await serverMaterial(newCa, "new-server");
  const listener = await TlsListener.listen({
    hostname: "127.0.0.1",
    port: 0,
    tls: oldMaterial,
    onConnection: echo,
  });
  try {
    const port = listener.port;
    assert.equal(await peerName(port, oldCa.certPem), "old-server");
    using before = await Deno.connectTls({ hostname: "localhost", port, caCerts: [oldCa.certPem] });
    assert.equal(await roundTrip(before, "ping"), "ping");

    listener.updateTls(newMaterial);
    // The listening socket was not rebound: a plain TCP connect right after the swap succeeds.
    using raw = await Deno.connect({ hostname: "127.0.0.1", port });
    assert.equal(raw.remoteAddr.port, port);

    // The connection opened before the reload keeps working with its old session.
    assert.equal(await roundTrip(before, "still here"), "still here");
    // New handshakes present the new certificate.
    assert.equal(await peerName(port, newCa.certPem), "new-server");
    using after = await Deno.connectTls({ hostname: "localhost", port, caCerts: [newCa.certPem] });
    assert.equal(await roundTrip(after, "new"), "new");
    await assert.rejects(peerName(port, oldCa.certPem));
  } finally {
    await listener.close();
  }
});

Deno.test("TlsListener.stopAccepting refuses new connections and keeps open ones", async () => {
  const ca = await generateCa({ commonName: "tls-listener-stop-ca" });
  const listener = await TlsListener.listen({
    hostname: "127.0.0.1",
    port: 0,
    tls: await serverMaterial(ca, "stop-server"),
    onConnection: echo,
  });
  try {
    const port = listener.port;
    using open = await Deno.connectTls({ hostname: "localhost", port, caCerts: [ca.certPem] });
    assert.equal(await roundTrip(open, "before"), "before");
    listener.stopAccepting();
    await assert.rejects(
      Deno.connect({ hostname: "127.0.0.1", port }),
      Deno.errors.ConnectionRefused,
    );
    assert.equal(await roundTrip(open, "after"), "after");
    // close() still ends the connections that stayed open.
    await listener.close();
    assert.equal(await open.read(new Uint8Array(8)).catch(() => null), null);
  } finally {
    await listener.close();
  }
});

Deno.test("TlsListener with client certificates refuses a client without one", async () => {
  const ca = await generateCa({ commonName: "tls-listener-mtls-ca" });
  const client = await ca.issue({ commonName: "client", usage: "client" });
  const failures: Error[] = [];
  const handshakeFailed = Promise.withResolvers<void>();
  const listener = await TlsListener.listen({
    hostname: "127.0.0.1",
    port: 0,
    tls: await serverMaterial(ca, "mtls-server"),
    requestClientCert: true,
    onConnection: echo,
    onHandshakeError: (err) => {
      failures.push(err);
      handshakeFailed.resolve();
    },
  });
  try {
    using good = await Deno.connectTls({
      hostname: "localhost",
      port: listener.port,
      caCerts: [ca.certPem],
      cert: client.certPem,
      key: client.keyPem,
    });
    assert.equal(await roundTrip(good, "mtls"), "mtls");

    using bad = await Deno.connectTls({
      hostname: "localhost",
      port: listener.port,
      caCerts: [ca.certPem],
    });
    await assert.rejects(roundTrip(bad, "nope"));
    await handshakeFailed.promise;
    assert.equal(failures.length, 1);
  } finally {
    await listener.close();
  }
});

Deno.test("TlsListener refuses material without a key", async () => {
  const ca = await generateCa({ commonName: "tls-listener-bad-ca" });
  const material = await serverMaterial(ca, "server");
  await assert.rejects(
    TlsListener.listen({ port: 0, tls: { cert: material.cert }, onConnection: echo }),
    { code: "CONFIG" },
  );
});
