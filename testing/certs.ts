/**
 * Throwaway X.509 PKI for the demo and the tests, built on WebCrypto alone: no `openssl`, no npm
 * packages. Keys are ECDSA P-256, certificates are v3 signed with ecdsa-with-SHA256, and both Go's
 * crypto/x509 and OpenSSL accept them (a test checks this whenever `go` / `openssl` are on PATH).
 *
 * ```ts
 * const pki = await generateTestPki();
 * const files = await writeTestPki("/tmp/knp-pki", pki);
 * ```
 *
 * @module
 */

import { join } from "node:path";

/** A certificate and its private key, both PEM (the key is PKCS#8, "BEGIN PRIVATE KEY"). */
export interface CertBundle {
  certPem: string;
  keyPem: string;
}

/** Options for {@linkcode generateCa}. */
export interface CaOptions {
  commonName: string;
  /** Days the certificate stays valid; default 365. */
  validDays?: number;
}

/** Options for {@linkcode CertificateAuthority.issue}. */
export interface IssueOptions {
  commonName: string;
  /** dNSName subjectAltNames. Go ignores the CN for hostname checks, so servers need these. */
  dnsNames?: string[];
  /** iPAddress subjectAltNames, IPv4 or IPv6 text form. */
  ipAddresses?: string[];
  /** Extended key usage: serverAuth, clientAuth or both. */
  usage: "server" | "client" | "both";
  /** Days the certificate stays valid; default 365. */
  validDays?: number;
}

/** Options for {@linkcode generateTestPki}. */
export interface TestPkiOptions {
  /** Extra server DNS names, on top of "localhost". */
  dnsNames?: string[];
  /** Extra server IP addresses, on top of 127.0.0.1 and ::1. */
  ipAddresses?: string[];
  /** Client certificate common name; default "knp-client". */
  clientCommonName?: string;
}

/** A CA with one server and one client certificate it issued. */
export interface TestPki {
  ca: CertBundle;
  server: CertBundle;
  client: CertBundle;
}

/** Paths written by {@linkcode writeTestPki}. */
export interface TestPkiFiles {
  caCert: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
}

// ---------------------------------------------------------------------------------------------
// Minimal DER encoder (only what certificates need).

const enc = new TextEncoder();

function concat(parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** Tag-length-value with a definite (short or long form) length. */
function tlv(tag: number, ...content: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const body = concat(content);
  const n = body.length;
  let len: number[];
  if (n < 0x80) len = [n];
  else {
    const bytes: number[] = [];
    for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
    len = [0x80 | bytes.length, ...bytes];
  }
  return concat([Uint8Array.of(tag, ...len), body]);
}

const seq = (...c: Uint8Array[]) => tlv(0x30, ...c);
const set = (...c: Uint8Array[]) => tlv(0x31, ...c);
const octets = (b: Uint8Array) => tlv(0x04, b);
const bitString = (b: Uint8Array, unusedBits = 0) => tlv(0x03, Uint8Array.of(unusedBits), b);
const utf8 = (s: string) => tlv(0x0c, enc.encode(s));
const explicit = (n: number, ...c: Uint8Array[]) => tlv(0xa0 | n, ...c);
const TRUE = Uint8Array.of(0x01, 0x01, 0xff);

/** INTEGER from unsigned big-endian bytes: minimal, with a 0x00 pad when the high bit is set. */
function uint(bytes: Uint8Array): Uint8Array {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0) i++;
  const v = bytes.subarray(i);
  return tlv(0x02, (v[0] & 0x80) ? concat([Uint8Array.of(0), v]) : v);
}

function oid(dotted: string): Uint8Array {
  const arcs = dotted.split(".").map(Number);
  const out = [40 * arcs[0] + arcs[1]];
  for (const arc of arcs.slice(2)) {
    const b = [arc & 0x7f];
    for (let v = Math.floor(arc / 128); v > 0; v = Math.floor(v / 128)) {
      b.unshift(0x80 | (v & 0x7f));
    }
    out.push(...b);
  }
  return tlv(0x06, Uint8Array.from(out));
}

/** UTCTime for 1950..2049, GeneralizedTime otherwise (RFC 5280 4.1.2.5). */
function time(d: Date): Uint8Array {
  const iso = d.toISOString(); // YYYY-MM-DDTHH:MM:SS.sssZ
  const digits = iso.slice(0, 19).replace(/[-T:]/g, "") + "Z";
  const year = d.getUTCFullYear();
  return year >= 1950 && year < 2050
    ? tlv(0x17, enc.encode(digits.slice(2)))
    : tlv(0x18, enc.encode(digits));
}

/** Named BIT STRING (DER: trailing zero bits dropped, unused-bit count set). */
function namedBits(bits: number[]): Uint8Array {
  const last = Math.max(...bits);
  const bytes = new Uint8Array((last >> 3) + 1);
  for (const b of bits) bytes[b >> 3] |= 0x80 >> (b & 7);
  return bitString(bytes, 7 - (last & 7));
}

/** Extension ::= SEQUENCE { extnID, critical DEFAULT FALSE, extnValue OCTET STRING }. */
function extension(id: string, critical: boolean, value: Uint8Array): Uint8Array {
  return critical ? seq(oid(id), TRUE, octets(value)) : seq(oid(id), octets(value));
}

// ---------------------------------------------------------------------------------------------
// X.509 pieces.

const OID = {
  commonName: "2.5.4.3",
  organization: "2.5.4.10",
  ecdsaWithSha256: "1.2.840.10045.4.3.2",
  basicConstraints: "2.5.29.19",
  keyUsage: "2.5.29.15",
  extKeyUsage: "2.5.29.37",
  subjectAltName: "2.5.29.17",
  subjectKeyId: "2.5.29.14",
  authorityKeyId: "2.5.29.35",
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
};

const KEY_ALG: EcKeyGenParams = { name: "ECDSA", namedCurve: "P-256" };
const SIG_ALG: EcdsaParams = { name: "ECDSA", hash: "SHA-256" };
const DAY_MS = 86_400_000;
const EKU = {
  server: [OID.serverAuth],
  client: [OID.clientAuth],
  both: [OID.serverAuth, OID.clientAuth],
};

function name(attrs: [string, string][]): Uint8Array {
  return seq(...attrs.map(([id, value]) => set(seq(oid(id), utf8(value)))));
}

/** Parses an IPv4 or IPv6 literal into 4 or 16 bytes. */
export function parseIp(text: string): Uint8Array {
  const v4 = (s: string) => {
    const parts = s.split(".");
    if (parts.length !== 4 || !parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) < 256)) {
      throw new TypeError(`invalid IP address: ${text}`);
    }
    return parts.map(Number);
  };
  if (!text.includes(":")) return Uint8Array.from(v4(text));
  const groups = (s: string): number[] => {
    if (s === "") return [];
    const out: number[] = [];
    for (const g of s.split(":")) {
      if (g.includes(".")) {
        const b = v4(g);
        out.push((b[0] << 8) | b[1], (b[2] << 8) | b[3]);
      } else if (/^[0-9a-f]{1,4}$/i.test(g)) out.push(parseInt(g, 16));
      else throw new TypeError(`invalid IP address: ${text}`);
    }
    return out;
  };
  const halves = text.replace(/^\[|\]$/g, "").split("::");
  if (halves.length > 2) throw new TypeError(`invalid IP address: ${text}`);
  const head = groups(halves[0]);
  const tail = halves.length === 2 ? groups(halves[1]) : [];
  const fill = 8 - head.length - tail.length;
  if (halves.length === 2 ? fill < 1 : fill !== 0) {
    throw new TypeError(`invalid IP address: ${text}`);
  }
  const words = [...head, ...new Array(fill).fill(0), ...tail];
  return Uint8Array.from(words.flatMap((w) => [w >> 8, w & 0xff]));
}

/** The BIT STRING ECDSA-Sig-Value from WebCrypto's raw r||s form. */
function derSignature(raw: Uint8Array): Uint8Array {
  const half = raw.length / 2;
  return seq(uint(raw.subarray(0, half)), uint(raw.subarray(half)));
}

function pem(label: string, der: Uint8Array): string {
  let bin = "";
  for (const b of der) bin += String.fromCharCode(b);
  const lines = btoa(bin).match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

interface CertSpec {
  subject: Uint8Array;
  issuer: Uint8Array;
  publicKey: CryptoKey;
  signingKey: CryptoKey;
  validDays: number;
  extensions: Uint8Array[];
}

/** SHA-1 of the subjectPublicKey bits (RFC 5280 4.2.1.2 method 1). */
async function keyId(publicKey: CryptoKey): Promise<Uint8Array> {
  const point = await crypto.subtle.exportKey("raw", publicKey);
  return new Uint8Array(await crypto.subtle.digest("SHA-1", point));
}

/** Builds, signs and DER-encodes a v3 certificate. */
async function buildCert(spec: CertSpec): Promise<Uint8Array> {
  const serial = crypto.getRandomValues(new Uint8Array(16));
  serial[0] = (serial[0] & 0x7f) | 0x40; // positive, and exactly 16 bytes
  const now = Date.now();
  const sigAlg = seq(oid(OID.ecdsaWithSha256)); // parameters absent (RFC 5758)
  const spki = new Uint8Array(await crypto.subtle.exportKey("spki", spec.publicKey));
  const tbs = seq(
    explicit(0, uint(Uint8Array.of(2))), // v3
    uint(serial),
    sigAlg,
    spec.issuer,
    seq(time(new Date(now - 3_600_000)), time(new Date(now + spec.validDays * DAY_MS))),
    spec.subject,
    spki,
    explicit(3, seq(...spec.extensions)),
  );
  const raw = await crypto.subtle.sign(SIG_ALG, spec.signingKey, tbs);
  return seq(tbs, sigAlg, bitString(derSignature(new Uint8Array(raw))));
}

const newKeyPair = () => crypto.subtle.generateKey(KEY_ALG, true, ["sign", "verify"]);

async function keyPem(key: CryptoKey): Promise<string> {
  return pem("PRIVATE KEY", new Uint8Array(await crypto.subtle.exportKey("pkcs8", key)));
}

// ---------------------------------------------------------------------------------------------
// Public API.

/** A self-signed CA that can issue leaf certificates; `keyPem` is its PKCS#8 private key. */
export class CertificateAuthority implements CertBundle {
  private constructor(
    readonly certPem: string,
    readonly keyPem: string,
    private readonly key: CryptoKey,
    private readonly subject: Uint8Array,
    private readonly keyId: Uint8Array,
  ) {}

  /** Creates a fresh CA (use {@linkcode generateCa}). */
  static async create(options: CaOptions): Promise<CertificateAuthority> {
    const keys = await newKeyPair();
    const subject = name([[OID.organization, "knp"], [OID.commonName, options.commonName]]);
    const id = await keyId(keys.publicKey);
    const der = await buildCert({
      subject,
      issuer: subject,
      publicKey: keys.publicKey,
      signingKey: keys.privateKey,
      validDays: options.validDays ?? 365,
      extensions: [
        extension(OID.basicConstraints, true, seq(TRUE)),
        extension(OID.keyUsage, true, namedBits([5, 6])), // keyCertSign, cRLSign
        extension(OID.subjectKeyId, false, octets(id)),
      ],
    });
    const key = await keyPem(keys.privateKey);
    return new CertificateAuthority(pem("CERTIFICATE", der), key, keys.privateKey, subject, id);
  }

  /** Issues a leaf certificate with a fresh key pair. */
  async issue(options: IssueOptions): Promise<CertBundle> {
    const keys = await newKeyPair();
    const eku = EKU[options.usage];
    const sans = [
      ...(options.dnsNames ?? []).map((d) => tlv(0x82, enc.encode(d))),
      ...(options.ipAddresses ?? []).map((ip) => tlv(0x87, parseIp(ip))),
    ];
    const extensions = [
      extension(OID.basicConstraints, true, seq()), // CA:FALSE (the DEFAULT, so omitted)
      extension(OID.keyUsage, true, namedBits([0])), // digitalSignature
      extension(OID.extKeyUsage, false, seq(...eku.map(oid))),
      extension(OID.subjectKeyId, false, octets(await keyId(keys.publicKey))),
      extension(OID.authorityKeyId, false, seq(tlv(0x80, this.keyId))),
    ];
    // An empty SAN extension is invalid (Go rejects it), so leave it out when there are none.
    if (sans.length > 0) extensions.push(extension(OID.subjectAltName, false, seq(...sans)));
    const der = await buildCert({
      subject: name([[OID.commonName, options.commonName]]),
      issuer: this.subject,
      publicKey: keys.publicKey,
      signingKey: this.key,
      validDays: options.validDays ?? 365,
      extensions,
    });
    return { certPem: pem("CERTIFICATE", der), keyPem: await keyPem(keys.privateKey) };
  }
}

/** Creates a self-signed ECDSA P-256 CA (subject O=knp, CN=`commonName`). */
export async function generateCa(options: CaOptions): Promise<CertificateAuthority> {
  return await CertificateAuthority.create(options);
}

/**
 * A CA plus a server certificate (SANs DNS:localhost, IP:127.0.0.1, IP:::1 and any given;
 * serverAuth) and a client certificate (CN "knp-client" by default; clientAuth).
 */
export async function generateTestPki(options: TestPkiOptions = {}): Promise<TestPki> {
  const ca = await generateCa({ commonName: "knp-test-ca" });
  const server = await ca.issue({
    commonName: "knp-server",
    dnsNames: [...new Set(["localhost", ...(options.dnsNames ?? [])])],
    ipAddresses: [...new Set(["127.0.0.1", "::1", ...(options.ipAddresses ?? [])])],
    usage: "server",
  });
  const client = await ca.issue({
    commonName: options.clientCommonName ?? "knp-client",
    usage: "client",
  });
  return { ca: { certPem: ca.certPem, keyPem: ca.keyPem }, server, client };
}

/**
 * Writes ca.crt, server.crt, server.key, client.crt and client.key into `dir` (created if
 * missing; keys get mode 0600 where supported) and returns their paths.
 */
export async function writeTestPki(dir: string, pki: TestPki): Promise<TestPkiFiles> {
  await Deno.mkdir(dir, { recursive: true });
  const files: TestPkiFiles = {
    caCert: join(dir, "ca.crt"),
    serverCert: join(dir, "server.crt"),
    serverKey: join(dir, "server.key"),
    clientCert: join(dir, "client.crt"),
    clientKey: join(dir, "client.key"),
  };
  const key = { mode: 0o600 };
  await Deno.writeTextFile(files.caCert, pki.ca.certPem);
  await Deno.writeTextFile(files.serverCert, pki.server.certPem);
  await Deno.writeTextFile(files.serverKey, pki.server.keyPem, key);
  await Deno.writeTextFile(files.clientCert, pki.client.certPem);
  await Deno.writeTextFile(files.clientKey, pki.client.keyPem, key);
  return files;
}
