import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { X509Certificate } from "node:crypto";
import tls from "node:tls";
import type { AddressInfo } from "node:net";
import { generateCa, generateTestPki, parseIp, type TestPki, writeTestPki } from "./certs.ts";

/** True if `cmd args` can be spawned (the binary exists on PATH). */
async function have(cmd: string, args: string[]): Promise<boolean> {
  try {
    const { success } = await new Deno.Command(cmd, { args, stdout: "null", stderr: "null" })
      .output();
    return success;
  } catch {
    return false;
  }
}

const haveOpenssl = await have("openssl", ["version"]);
const haveGo = await have("go", ["version"]);

let shared: Promise<TestPki> | undefined;
/** One PKI for the whole file: key generation is cheap, but there is no need to repeat it. */
function pki(): Promise<TestPki> {
  return shared ??= generateTestPki();
}

/** Runs `fn` with the PKI written to a fresh temp dir, removed afterwards. */
async function withPkiDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "knp-certs-" });
  try {
    await writeTestPki(dir, await pki());
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("parseIp handles IPv4 and IPv6 forms", () => {
  assert.deepEqual([...parseIp("127.0.0.1")], [127, 0, 0, 1]);
  assert.deepEqual([...parseIp("::1")], [...new Array(15).fill(0), 1]);
  assert.deepEqual([...parseIp("::")], new Array(16).fill(0));
  assert.deepEqual(
    [...parseIp("fe80::1:abcd")],
    [0xfe, 0x80, ...new Array(10).fill(0), 0, 1, 0xab, 0xcd],
  );
  assert.deepEqual([...parseIp("::ffff:10.0.0.1")], [
    ...new Array(10).fill(0),
    0xff,
    0xff,
    10,
    0,
    0,
    1,
  ]);
  for (const bad of ["1.2.3", "1.2.3.256", "1::2::3", "1:2:3:4:5:6:7:8:9", "x::1", "example.com"]) {
    assert.throws(() => parseIp(bad), TypeError, bad);
  }
});

Deno.test("node:crypto X509Certificate parses and verifies the chain", async () => {
  const { ca, server, client } = await pki();
  const caCert = new X509Certificate(ca.certPem);
  const serverCert = new X509Certificate(server.certPem);
  const clientCert = new X509Certificate(client.certPem);

  assert.equal(caCert.subject, "O=knp\nCN=knp-test-ca");
  assert.equal(caCert.issuer, caCert.subject);
  assert.equal(caCert.ca, true);
  assert.ok(caCert.verify(caCert.publicKey), "CA is self-signed");

  assert.equal(serverCert.subject, "CN=knp-server");
  assert.equal(serverCert.ca, false);
  const sans = serverCert.subjectAltName?.split(", ") ?? [];
  assert.ok(sans.includes("DNS:localhost"), String(sans));
  assert.ok(sans.includes("IP Address:127.0.0.1"), String(sans));
  assert.ok(serverCert.checkIssued(caCert));
  assert.ok(serverCert.verify(caCert.publicKey));
  assert.equal(serverCert.checkHost("localhost"), "localhost");
  assert.equal(serverCert.checkIP("127.0.0.1"), "127.0.0.1");

  assert.equal(clientCert.subject, "CN=knp-client");
  assert.equal(clientCert.ca, false);
  assert.equal(clientCert.subjectAltName, undefined, "no empty SAN extension");
  assert.ok(clientCert.checkIssued(caCert));
  assert.ok(clientCert.verify(caCert.publicKey));

  assert.match(server.keyPem, /^-----BEGIN PRIVATE KEY-----\n/);
  assert.notEqual(serverCert.serialNumber, clientCert.serialNumber);

  // A second CA did not issue these.
  const other = new X509Certificate((await generateCa({ commonName: "other" })).certPem);
  assert.equal(serverCert.verify(other.publicKey), false);
});

Deno.test("issue honours options; far-future dates use GeneralizedTime", async () => {
  const ca = await generateCa({ commonName: "long-lived", validDays: 50 * 365 });
  const leaf = await ca.issue({
    commonName: "both",
    dnsNames: ["a.example", "b.example"],
    ipAddresses: ["10.1.2.3", "2001:db8::7"],
    usage: "both",
    validDays: 2,
  });
  const caCert = new X509Certificate(ca.certPem);
  const cert = new X509Certificate(leaf.certPem);
  assert.ok(new Date(caCert.validTo).getUTCFullYear() >= 2050, caCert.validTo);
  const days = (Date.parse(cert.validTo) - Date.parse(cert.validFrom)) / 86_400_000;
  assert.ok(Math.abs(days - (2 + 1 / 24)) < 1e-6, String(days));
  // Node prints IPv6 SANs expanded and uppercase, Deno compressed: compare via checkIP.
  assert.match(
    cert.subjectAltName ?? "",
    /^DNS:a\.example, DNS:b\.example, IP Address:10\.1\.2\.3, /,
  );
  assert.ok(cert.checkIP("2001:db8::7"));
  assert.ok(cert.checkIP("10.1.2.3"));
  assert.equal(cert.checkIP("10.1.2.4"), undefined);
  assert.ok(cert.verify(caCert.publicKey));
});

Deno.test("issue encodes every IP form parseIp accepts and rejects the rest", async () => {
  const ca = await generateCa({ commonName: "ip-forms" });
  const leaf = await ca.issue({
    commonName: "ips",
    ipAddresses: ["::ffff:10.0.0.1", "[fe80::1]", "1:2:3:4:5:6:7:8"],
    usage: "server",
  });
  const cert = new X509Certificate(leaf.certPem);
  assert.ok(cert.checkIP("::ffff:10.0.0.1"), cert.subjectAltName ?? "no SAN");
  assert.ok(cert.checkIP("fe80::1"), cert.subjectAltName ?? "no SAN");
  assert.ok(cert.checkIP("1:2:3:4:5:6:7:8"), cert.subjectAltName ?? "no SAN");
  assert.equal(cert.checkIP("10.0.0.1"), undefined, "the IPv4-mapped SAN is 16 bytes, not 4");
  for (const bad of ["1.2.3", "1::2::3", "example.com"]) {
    await assert.rejects(ca.issue({ commonName: "bad", ipAddresses: [bad], usage: "server" }), {
      name: "TypeError",
      message: `invalid IP address: ${bad}`,
    });
  }
});

/** Resolves with what `sock` delivered before it closed, or rejects with its error. */
function drain(sock: tls.TLSSocket): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let error: Error | undefined;
    sock.on("data", (d: Buffer) => chunks.push(d));
    sock.on("error", (e) => error = e);
    sock.on("close", () => error ? reject(error) : resolve(Buffer.concat(chunks).toString()));
  });
}

Deno.test("mutual TLS handshake over node:tls", async () => {
  const { ca, server, client } = await pki();
  const caPem = Buffer.from(ca.certPem);
  const peers: (string | undefined)[] = [];
  const srv = tls.createServer({
    key: Buffer.from(server.keyPem),
    cert: Buffer.from(server.certPem),
    ca: [caPem],
    requestCert: true,
    rejectUnauthorized: true,
  }, (sock) => {
    peers.push(String(sock.getPeerCertificate().subject?.CN));
    sock.on("error", () => {});
    sock.once("data", (d: Buffer) => sock.end(`pong:${d}`));
  });
  const clientErrors: Error[] = [];
  srv.on("tlsClientError", (e) => clientErrors.push(e));
  const listening = Promise.withResolvers<void>();
  srv.listen(0, "127.0.0.1", () => listening.resolve());
  await listening.promise;
  const { port } = srv.address() as AddressInfo;
  const connect = (extra: tls.ConnectionOptions) => {
    const sock = tls.connect({ host: "127.0.0.1", port, servername: "localhost", ...extra });
    sock.once("secureConnect", () => sock.write("ping"));
    return drain(sock);
  };

  try {
    // With a client certificate: handshake succeeds both ways and data flows.
    const reply = await connect({
      ca: caPem,
      key: Buffer.from(client.keyPem),
      cert: Buffer.from(client.certPem),
    });
    assert.equal(reply, "pong:ping");
    assert.deepEqual(peers, ["knp-client"]);

    // Without one: the server refuses (under TLS 1.3 the client learns only after its handshake).
    await assert.rejects(connect({ ca: caPem }));
    assert.deepEqual(peers, ["knp-client"], "no application data from the cert-less client");
    assert.ok(clientErrors.length >= 1, "server saw the failed handshake");

    // A client trusting a different CA refuses the server.
    const otherCa = await generateCa({ commonName: "other" });
    await assert.rejects(connect({
      ca: Buffer.from(otherCa.certPem),
      key: Buffer.from(client.keyPem),
      cert: Buffer.from(client.certPem),
    }));
    assert.deepEqual(peers, ["knp-client"]);
  } finally {
    const closed = Promise.withResolvers<void>();
    srv.close(() => closed.resolve());
    await closed.promise;
  }
});

Deno.test({
  name: "openssl verify accepts the certificates",
  ignore: !haveOpenssl,
  fn: () =>
    withPkiDir(async (dir) => {
      const out = await new Deno.Command("openssl", {
        args: ["verify", "-CAfile", "ca.crt", "server.crt", "client.crt"],
        cwd: dir,
      }).output();
      const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
      assert.ok(out.success, text);
      assert.match(text, /^server\.crt: OK$/m);
      assert.match(text, /^client\.crt: OK$/m);
    }),
});

/** Checks the PKI in the dir given as argument with Go's crypto/x509 and crypto/tls. */
const GO_CHECK = `package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
)

func fail(format string, args ...any) {
	fmt.Printf("FAIL: "+format+"\\n", args...)
	os.Exit(1)
}

func load(dir, name string) *x509.Certificate {
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		fail("%v", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		fail("%s: no CERTIFICATE PEM block", name)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		fail("%s: %v", name, err)
	}
	return cert
}

func verify(cert *x509.Certificate, roots *x509.CertPool, host string, usage x509.ExtKeyUsage) error {
	_, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: host, KeyUsages: []x509.ExtKeyUsage{usage}})
	return err
}

func main() {
	dir := os.Args[1]
	roots := x509.NewCertPool()
	roots.AddCert(load(dir, "ca.crt"))
	server, client := load(dir, "server.crt"), load(dir, "client.crt")
	for _, host := range []string{"localhost", "127.0.0.1", "::1"} {
		if err := verify(server, roots, host, x509.ExtKeyUsageServerAuth); err != nil {
			fail("server cert for %s: %v", host, err)
		}
	}
	if err := verify(client, roots, "", x509.ExtKeyUsageClientAuth); err != nil {
		fail("client cert: %v", err)
	}
	if verify(server, roots, "example.com", x509.ExtKeyUsageServerAuth) == nil {
		fail("server cert accepted for example.com")
	}
	if verify(client, roots, "", x509.ExtKeyUsageServerAuth) == nil {
		fail("client cert accepted for serverAuth")
	}
	for _, name := range []string{"server", "client"} {
		if _, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")); err != nil {
			fail("%s key pair: %v", name, err)
		}
	}
	fmt.Println("OK")
}
`;

Deno.test({
  name: "Go crypto/x509 verifies the certificates",
  ignore: !haveGo,
  fn: () =>
    withPkiDir(async (dir) => {
      const src = await Deno.makeTempDir({ prefix: "knp-gocheck-" });
      try {
        await Deno.writeTextFile(`${src}/go.mod`, "module knpcertcheck\n\ngo 1.21\n");
        await Deno.writeTextFile(`${src}/main.go`, GO_CHECK);
        const out = await new Deno.Command("go", {
          args: ["run", ".", dir],
          cwd: src,
          env: { GOFLAGS: "-mod=mod", GOTOOLCHAIN: "local" },
        }).output();
        const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
        assert.ok(out.success, text);
        assert.equal(text.trim(), "OK");
      } finally {
        await Deno.remove(src, { recursive: true });
      }
    }),
});
