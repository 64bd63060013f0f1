import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { join } from "node:path";
import { type CertBundle, type CertificateAuthority, generateCa } from "@knp/testing/certs";
import type { LogFields, Logger } from "@knp/core/log";
import { TlsFiles, type TlsMaterial } from "./tls_files.ts";
import { openSslCiphers, secureContextOptions, tlsPolicyFromFlags } from "./tls_policy.ts";

interface LogRecord {
  level: string;
  message: string;
  fields: LogFields;
}

function memoryLogger(records: LogRecord[] = [], base: LogFields = {}): Logger {
  const emit = (level: string) => (message: string, fields?: LogFields) =>
    records.push({ level, message, fields: { ...base, ...fields } });
  return {
    debug: emit("debug"),
    info: emit("info"),
    warn: emit("warn"),
    error: emit("error"),
    with: (fields) => memoryLogger(records, { ...base, ...fields }),
  };
}

let shared: Promise<{ ca: CertificateAuthority; other: CertificateAuthority }> | undefined;
function cas() {
  return shared ??= (async () => ({
    ca: await generateCa({ commonName: "tls-files-ca", validDays: 30 }),
    other: await generateCa({ commonName: "tls-files-other-ca", validDays: 60 }),
  }))();
}

function serverCert(ca: CertificateAuthority, name: string, validDays = 10): Promise<CertBundle> {
  return ca.issue({ commonName: name, dnsNames: ["localhost"], usage: "server", validDays });
}

const text = (b: Uint8Array | undefined) => new TextDecoder().decode(b);

/** A temp dir with server.crt/server.key/ca.crt, removed afterwards. */
async function withFiles(
  fn: (paths: { cert: string; key: string; ca: string }, first: CertBundle) => Promise<void> | void,
): Promise<void> {
  const { ca } = await cas();
  const dir = await Deno.makeTempDir({ prefix: "knp-tls-files-" });
  const paths = {
    cert: join(dir, "server.crt"),
    key: join(dir, "server.key"),
    ca: join(dir, "ca.crt"),
  };
  const first = await serverCert(ca, "first");
  await Deno.writeTextFile(paths.cert, first.certPem);
  await Deno.writeTextFile(paths.key, first.keyPem);
  await Deno.writeTextFile(paths.ca, ca.certPem);
  try {
    await fn(paths, first);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("TlsFiles reads and validates the files at construction", async () => {
  await withFiles(async (paths, first) => {
    const { ca } = await cas();
    using files = new TlsFiles({ ...paths, pollIntervalMs: 0 });
    assert.equal(text(files.current().cert), first.certPem);
    assert.equal(text(files.current().key), first.keyPem);
    assert.equal(text(files.current().ca), ca.certPem);
    assert.deepEqual(files.paths, paths);

    // Missing file, mismatched key, garbage: constructor throws CONFIG.
    const other = await serverCert(ca, "other");
    await Deno.writeTextFile(paths.key, other.keyPem);
    assert.throws(() => new TlsFiles({ ...paths, pollIntervalMs: 0 }), {
      code: "CONFIG",
      message: /does not match the certificate/,
    });
    assert.throws(
      () => new TlsFiles({ ...paths, cert: paths.cert + ".missing", pollIntervalMs: 0 }),
      { code: "CONFIG", message: /cannot read .*missing/ },
    );
    await Deno.writeTextFile(paths.ca, "not a certificate\n");
    assert.throws(() => new TlsFiles({ ca: paths.ca, pollIntervalMs: 0 }), {
      code: "CONFIG",
      message: /no PEM certificate found/,
    });
  });
});

Deno.test("TlsFiles accepts absent files (empty paths) and a CA bundle alone", async () => {
  await withFiles(async (paths) => {
    using files = new TlsFiles({ cert: "", key: "", ca: paths.ca, pollIntervalMs: 0 });
    assert.equal(files.current().cert, undefined);
    assert.equal(files.current().key, undefined);
    assert.ok(files.current().ca);
    assert.deepEqual(files.paths, { cert: undefined, key: undefined, ca: paths.ca });
    using none = new TlsFiles({ pollIntervalMs: 0 });
    assert.deepEqual(none.current(), {});
    assert.deepEqual(none.expiry(), []);
    assert.equal(await none.refresh(), false);
  });
});

Deno.test("TlsFiles detects a rotation by polling and tells its listeners", async () => {
  await withFiles(async (paths) => {
    const { ca } = await cas();
    const records: LogRecord[] = [];
    using files = new TlsFiles({ ...paths, pollIntervalMs: 20, logger: memoryLogger(records) });
    const changes: TlsMaterial[] = [];
    const seen = Promise.withResolvers<void>();
    files.onChange((m) => {
      changes.push(m);
      seen.resolve();
    });
    const second = await serverCert(ca, "second");
    await Deno.writeTextFile(paths.cert, second.certPem);
    await Deno.writeTextFile(paths.key, second.keyPem);
    await seen.promise;
    assert.equal(changes.length, 1);
    assert.equal(text(changes[0]!.cert), second.certPem);
    assert.equal(text(files.current().key), second.keyPem);
    const info = records.filter((r) => r.level === "info");
    assert.equal(info.length, 1);
    assert.match(info[0]!.message, /reloaded/);
    assert.equal(info[0]!.fields.subject, "CN=second");
    assert.equal(info[0]!.fields.serial, new X509Certificate(second.certPem).serialNumber);
    // Rewriting the same bytes is not a change.
    await Deno.writeTextFile(paths.cert, second.certPem);
    assert.equal(await files.refresh(), false);
    assert.equal(changes.length, 1);
  });
});

Deno.test("TlsFiles waits for both halves of a rotation without reporting the gap", async () => {
  await withFiles(async (paths, first) => {
    const { ca } = await cas();
    const records: LogRecord[] = [];
    using files = new TlsFiles({ ...paths, pollIntervalMs: 0, logger: memoryLogger(records) });
    const second = await serverCert(ca, "second");
    // The key first: until the cert follows, the pair does not match and is not adopted.
    await Deno.writeTextFile(paths.key, second.keyPem);
    assert.equal(await files.refresh(), false);
    assert.equal(text(files.current().key), first.keyPem);
    await Deno.writeTextFile(paths.cert, second.certPem);
    assert.equal(await files.refresh(), true);
    assert.equal(text(files.current().key), second.keyPem);
    assert.deepEqual(records.filter((r) => r.level === "error"), []);
  });
});

Deno.test("TlsFiles sees a change that keeps size and mtime (contents hash)", async () => {
  await withFiles(async (paths, first) => {
    const { ca } = await cas();
    using files = new TlsFiles({ ...paths, pollIntervalMs: 0 });
    const before = await Deno.stat(paths.cert);
    let second = await serverCert(ca, "first"); // same subject length: same PEM size
    while (second.certPem.length !== first.certPem.length) second = await serverCert(ca, "first");
    await Deno.writeTextFile(paths.cert, second.certPem);
    await Deno.writeTextFile(paths.key, second.keyPem);
    await Deno.utime(paths.cert, before.atime!, before.mtime!);
    assert.equal(await files.refresh(), true);
    assert.equal(text(files.current().cert), second.certPem);
  });
});

Deno.test("TlsFiles keeps the old material for a broken file and logs it once", async () => {
  await withFiles(async (paths, first) => {
    const records: LogRecord[] = [];
    using files = new TlsFiles({ ...paths, pollIntervalMs: 0, logger: memoryLogger(records) });
    let changes = 0;
    files.onChange(() => changes++);
    const errors = () => records.filter((r) => r.level === "error");

    // Cut off half-way, as a writer in progress leaves it.
    await Deno.writeTextFile(paths.cert, first.certPem.slice(0, 200));
    assert.equal(await files.refresh(), false); // first sight: maybe still being written
    assert.deepEqual(errors(), []);
    assert.equal(await files.refresh(), false); // unchanged on the next poll: reported
    assert.equal(await files.refresh(), false);
    assert.equal(await files.refresh(), false);
    assert.equal(errors().length, 1);
    assert.match(String(errors()[0]!.fields.error), /incomplete/);
    assert.equal(errors()[0]!.fields.cert, paths.cert);
    assert.equal(text(files.current().cert), first.certPem);

    // Different bad contents: reported again, once.
    await Deno.writeTextFile(
      paths.cert,
      "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    for (let i = 0; i < 4; i++) await files.refresh();
    assert.equal(errors().length, 2);
    assert.match(String(errors()[1]!.fields.error), /does not parse/);

    // A deleted file is bad contents too.
    await Deno.remove(paths.cert);
    for (let i = 0; i < 3; i++) await files.refresh();
    assert.equal(errors().length, 3);
    assert.match(String(errors()[2]!.fields.error), /cannot read/);

    // Putting the old file back is no change at all.
    await Deno.writeTextFile(paths.cert, first.certPem);
    assert.equal(await files.refresh(), false);
    assert.equal(changes, 0);
    assert.equal(text(files.current().cert), first.certPem);
    assert.equal(errors().length, 3);
  });
});

Deno.test("TlsFiles rejects a key that does not match the certificate", async () => {
  await withFiles(async (paths, first) => {
    const { ca } = await cas();
    const records: LogRecord[] = [];
    using files = new TlsFiles({ ...paths, pollIntervalMs: 0, logger: memoryLogger(records) });
    const other = await serverCert(ca, "other");
    await Deno.writeTextFile(paths.key, other.keyPem);
    assert.equal(await files.refresh(), false);
    assert.equal(await files.refresh(), false);
    const errors = records.filter((r) => r.level === "error");
    assert.equal(errors.length, 1);
    assert.match(String(errors[0]!.fields.error), /does not match the certificate/);
    assert.equal(text(files.current().key), first.keyPem);
    // The matching certificate arrives: adopted.
    await Deno.writeTextFile(paths.cert, other.certPem);
    assert.equal(await files.refresh(), true);
    assert.equal(text(files.current().cert), other.certPem);
  });
});

Deno.test("TlsFiles rejects a CA bundle without certificates and adopts a new bundle", async () => {
  await withFiles(async (paths) => {
    const { ca, other } = await cas();
    const records: LogRecord[] = [];
    using files = new TlsFiles({ ...paths, pollIntervalMs: 0, logger: memoryLogger(records) });
    await Deno.writeTextFile(paths.ca, "");
    await files.refresh();
    await files.refresh();
    assert.match(String(records.find((r) => r.level === "error")?.fields.error), /no PEM/);
    assert.equal(text(files.current().ca), ca.certPem);
    await Deno.writeTextFile(paths.ca, other.certPem + ca.certPem);
    assert.equal(await files.refresh(), true);
    assert.equal(text(files.current().ca), other.certPem + ca.certPem);
  });
});

Deno.test("TlsFiles.expiry() lists every certificate of the cert and CA files", async () => {
  await withFiles(async (paths) => {
    const { ca, other } = await cas();
    const leaf = await serverCert(ca, "leaf", 3);
    // A chain in the cert file (leaf first) and a two-CA bundle.
    await Deno.writeTextFile(paths.cert, leaf.certPem + ca.certPem);
    await Deno.writeTextFile(paths.key, leaf.keyPem);
    await Deno.writeTextFile(paths.ca, ca.certPem + other.certPem);
    using files = new TlsFiles({ ...paths, pollIntervalMs: 0 });
    const expiry = files.expiry();
    const notAfter = (pem: string) => new Date(new X509Certificate(pem).validTo);
    assert.deepEqual(expiry, [
      { file: paths.cert, subject: "CN=leaf", notAfter: notAfter(leaf.certPem) },
      { file: paths.cert, subject: "O=knp, CN=tls-files-ca", notAfter: notAfter(ca.certPem) },
      { file: paths.ca, subject: "O=knp, CN=tls-files-ca", notAfter: notAfter(ca.certPem) },
      {
        file: paths.ca,
        subject: "O=knp, CN=tls-files-other-ca",
        notAfter: notAfter(other.certPem),
      },
    ]);
    // About 3, 30 and 60 days ahead.
    const days = expiry.map((e) => Math.round((e.notAfter.getTime() - Date.now()) / 86_400_000));
    assert.deepEqual(days, [3, 30, 30, 60]);
    // A returned Date cannot change the stored one.
    expiry[0]!.notAfter.setTime(0);
    assert.notEqual(files.expiry()[0]!.notAfter.getTime(), 0);
  });
});

Deno.test("TlsFiles.close() stops polling; listeners are dropped", async () => {
  await withFiles(async (paths) => {
    const { ca } = await cas();
    const files = new TlsFiles({ ...paths, pollIntervalMs: 10 });
    let changes = 0;
    files.onChange(() => changes++);
    files.close();
    const second = await serverCert(ca, "second");
    await Deno.writeTextFile(paths.cert, second.certPem);
    await Deno.writeTextFile(paths.key, second.keyPem);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(changes, 0);
    assert.equal(await files.refresh(), false);
    assert.match(text(files.current().cert), /BEGIN CERTIFICATE/);
  });
});

Deno.test("tlsPolicyFromFlags() maps Go versions and cipher names to node:tls", () => {
  assert.deepEqual(tlsPolicyFromFlags("", []), { minVersion: "TLSv1.2" });
  assert.deepEqual(tlsPolicyFromFlags("VersionTLS10", []), { minVersion: "TLSv1" });
  assert.deepEqual(tlsPolicyFromFlags("VersionTLS11", []), { minVersion: "TLSv1.1" });
  assert.deepEqual(tlsPolicyFromFlags("VersionTLS13", []), { minVersion: "TLSv1.3" });
  assert.deepEqual(
    tlsPolicyFromFlags("VersionTLS12", [
      "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
      "TLS_AES_128_GCM_SHA256",
      "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
      "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    ]),
    {
      minVersion: "TLSv1.2",
      ciphers:
        "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305",
    },
  );
  assert.equal(openSslCiphers(["TLS_AES_256_GCM_SHA384"]), undefined);
  assert.equal(openSslCiphers(["TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"]), "ECDHE-RSA-AES128-SHA");
  assert.throws(() => tlsPolicyFromFlags("TLS12", []), { code: "INVALID_FLAG" });
  assert.throws(() => openSslCiphers(["TLS_RSA_WITH_AES_128_GCM_SHA256"]), {
    code: "INVALID_FLAG",
    message: /TLS_RSA_WITH_AES_128_GCM_SHA256/,
  });
});

Deno.test("secureContextOptions() gives Buffers, the policy, and no CA unless given", async () => {
  await withFiles((paths) => {
    using files = new TlsFiles({ ...paths, pollIntervalMs: 0 });
    const m = files.current();
    const full = secureContextOptions(m, {
      minVersion: "TLSv1.3",
      ciphers: "ECDHE-ECDSA-AES128-SHA",
    });
    assert.ok(full.cert instanceof Uint8Array && full.key instanceof Uint8Array);
    assert.equal(text(full.ca as Uint8Array), text(m.ca));
    assert.equal(full.minVersion, "TLSv1.3");
    assert.equal(full.ciphers, "ECDHE-ECDSA-AES128-SHA");
    const plain = secureContextOptions({ cert: m.cert, key: m.key });
    assert.deepEqual(Object.keys(plain).sort(), ["cert", "key", "minVersion"]);
    assert.equal(plain.minVersion, "TLSv1.2");
    assert.throws(() => secureContextOptions({ ca: m.ca }), { code: "CONFIG" });
  });
});

Deno.test("TlsFiles warns, naming the file and notAfter, for an expired or not-yet-valid certificate at start and at every reload", async () => {
  await withFiles(async (paths) => {
    const { ca } = await cas();
    const day = 86_400_000;
    const expired = await ca.issue({
      commonName: "expired",
      usage: "server",
      notBefore: new Date(Date.now() - 10 * day),
      notAfter: new Date(Date.now() - day),
    });
    await Deno.writeTextFile(paths.cert, expired.certPem);
    await Deno.writeTextFile(paths.key, expired.keyPem);
    const records: LogRecord[] = [];
    using files = new TlsFiles({ ...paths, pollIntervalMs: 0, logger: memoryLogger(records) });
    const notAfter = new Date(new X509Certificate(expired.certPem).validTo).toISOString();
    assert.deepEqual(records.filter((r) => r.level === "warn"), [{
      level: "warn",
      message: "TLS certificate expired: peers will reject it",
      fields: {
        reason: "expired",
        file: paths.cert,
        subject: "CN=expired",
        notBefore: new Date(new X509Certificate(expired.certPem).validFrom).toISOString(),
        notAfter,
      },
    }]);
    // A reload to a certificate that is not valid yet warns again; a valid one does not.
    const future = await ca.issue({
      commonName: "future",
      usage: "server",
      notBefore: new Date(Date.now() + day),
      notAfter: new Date(Date.now() + 10 * day),
    });
    await Deno.writeTextFile(paths.cert, future.certPem);
    await Deno.writeTextFile(paths.key, future.keyPem);
    records.length = 0;
    assert.equal(await files.refresh(), true);
    const warns = records.filter((r) => r.level === "warn");
    assert.equal(warns.length, 1);
    assert.equal(warns[0]!.message, "TLS certificate not yet valid: peers will reject it");
    assert.equal(warns[0]!.fields.file, paths.cert);
    const valid = await serverCert(ca, "valid");
    await Deno.writeTextFile(paths.cert, valid.certPem);
    await Deno.writeTextFile(paths.key, valid.keyPem);
    records.length = 0;
    assert.equal(await files.refresh(), true);
    assert.deepEqual(records.filter((r) => r.level === "warn"), []);
  });
});
