/**
 * Throwaway X.509 PKI for the demo and the tests. Certificates are built with `@peculiar/x509`
 * (ASN.1 and signing over WebCrypto), so no `openssl` binary is needed. Keys are ECDSA P-256,
 * certificates are v3 signed with ecdsa-with-SHA256, and node:crypto, OpenSSL, Go's crypto/x509
 * and rustls accept them (tests check this whenever `go` / `openssl` are on PATH).
 *
 * ```ts
 * const pki = await generateTestPki();
 * const files = await writeTestPki("/tmp/knp-pki", pki);
 * ```
 *
 * @module
 */

// @peculiar/x509 resolves its algorithm providers through tsyringe, which needs the Reflect
// metadata API installed before the library loads; ES modules evaluate imports in order.
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
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
  /** Explicit validity start (e.g. in the future for a not-yet-valid certificate). */
  notBefore?: Date;
  /** Explicit validity end (e.g. in the past for an expired certificate). */
  notAfter?: Date;
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

const OID_ORGANIZATION = "2.5.4.10";
const OID_COMMON_NAME = "2.5.4.3";
const KEY_ALG: EcKeyGenParams = { name: "ECDSA", namedCurve: "P-256" };
const SIG_ALG: EcdsaParams = { name: "ECDSA", hash: "SHA-256" };
const DAY_MS = 86_400_000;
/** notBefore is backdated this much, so small clock skew between processes does not matter. */
const BACKDATE_MS = 3_600_000;
const EKU: Record<IssueOptions["usage"], string[]> = {
  server: [x509.ExtendedKeyUsage.serverAuth],
  client: [x509.ExtendedKeyUsage.clientAuth],
  both: [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth],
};

/** A distinguished name of UTF8String attributes, in the given order. */
function name(attrs: [oid: string, value: string][]): x509.Name {
  return new x509.Name(attrs.map(([oid, value]) => ({ [oid]: [{ utf8String: value }] })));
}

/** Parses an IPv4 or IPv6 literal into 4 or 16 bytes. */
export function parseIp(text: string): Uint8Array {
  const invalid = () => new TypeError(`invalid IP address: ${text}`);
  const v4 = (s: string): number[] => {
    const parts = s.split(".");
    if (parts.length !== 4 || !parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) < 256)) {
      throw invalid();
    }
    return parts.map(Number);
  };
  if (!text.includes(":")) return Uint8Array.from(v4(text));
  const groups = (s: string): number[] => {
    if (s === "") return [];
    return s.split(":").flatMap((g) => {
      if (g.includes(".")) {
        const [a = 0, b = 0, c = 0, d = 0] = v4(g);
        return [(a << 8) | b, (c << 8) | d];
      }
      if (/^[0-9a-f]{1,4}$/i.test(g)) return [parseInt(g, 16)];
      throw invalid();
    });
  };
  const halves = text.replace(/^\[|\]$/g, "").split("::");
  if (halves.length > 2) throw invalid();
  const head = groups(halves[0] ?? "");
  const tail = halves.length === 2 ? groups(halves[1] ?? "") : [];
  const fill = 8 - head.length - tail.length;
  if (halves.length === 2 ? fill < 1 : fill !== 0) throw invalid();
  const words = [...head, ...new Array<number>(fill).fill(0), ...tail];
  return Uint8Array.from(words.flatMap((w) => [w >> 8, w & 0xff]));
}

/**
 * The IP in a text form that @peculiar/x509 reads exactly: a dotted quad, or all eight IPv6
 * groups (its own parser knows neither embedded IPv4 nor brackets, and checks little).
 */
function canonicalIp(text: string): string {
  const bytes = [...parseIp(text)];
  if (bytes.length === 4) return bytes.join(".");
  const words: string[] = [];
  for (let i = 0; i < bytes.length; i += 2) {
    words.push((((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0)).toString(16));
  }
  return words.join(":");
}

/** PEM with a trailing newline, so bundles can be concatenated as they are. */
function pem(der: ArrayBuffer, label: string): string {
  return `${x509.PemConverter.encode(der, label).trimEnd()}\n`;
}

/** A random 16-byte serial number (hex): positive, with no leading zero byte to strip. */
function serialNumber(): string {
  const serial = crypto.getRandomValues(new Uint8Array(16));
  serial[0] = ((serial[0] ?? 0) & 0x7f) | 0x40;
  return [...serial].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** The validity window: from an hour ago until `validDays` days from now. */
function validity(validDays = 365): { notBefore: Date; notAfter: Date } {
  const now = Date.now();
  return { notBefore: new Date(now - BACKDATE_MS), notAfter: new Date(now + validDays * DAY_MS) };
}

const newKeyPair = () => crypto.subtle.generateKey(KEY_ALG, true, ["sign", "verify"]);

async function keyPem(key: CryptoKey): Promise<string> {
  return pem(await crypto.subtle.exportKey("pkcs8", key), "PRIVATE KEY");
}

/** The extensions of a leaf: not a CA, digitalSignature, the EKUs, key ids and any SANs. */
async function leafExtensions(
  options: IssueOptions,
  publicKey: CryptoKey,
  issuerKeyId: string,
): Promise<x509.Extension[]> {
  const sans: x509.JsonGeneralNames = [
    ...(options.dnsNames ?? []).map((value) => ({ type: "dns" as const, value })),
    ...(options.ipAddresses ?? []).map((ip) => ({ type: "ip" as const, value: canonicalIp(ip) })),
  ];
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension(EKU[options.usage], false),
    await x509.SubjectKeyIdentifierExtension.create(publicKey, false),
    new x509.AuthorityKeyIdentifierExtension(issuerKeyId, false),
  ];
  // An empty SAN extension is invalid (Go rejects it), so leave it out when there are none.
  if (sans.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(sans, false));
  return extensions;
}

/** A self-signed CA that can issue leaf certificates; `keyPem` is its PKCS#8 private key. */
export class CertificateAuthority implements CertBundle {
  private constructor(
    readonly certPem: string,
    readonly keyPem: string,
    private readonly key: CryptoKey,
    private readonly subject: x509.Name,
    private readonly keyId: string,
  ) {}

  /** Creates a fresh CA (use {@linkcode generateCa}). */
  static async create(options: CaOptions): Promise<CertificateAuthority> {
    const keys = await newKeyPair();
    const subject = name([[OID_ORGANIZATION, "knp"], [OID_COMMON_NAME, options.commonName]]);
    const ski = await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false);
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serialNumber(),
      subject,
      issuer: subject,
      ...validity(options.validDays),
      publicKey: keys.publicKey,
      signingKey: keys.privateKey,
      signingAlgorithm: SIG_ALG,
      extensions: [
        new x509.BasicConstraintsExtension(true, undefined, true),
        new x509.KeyUsagesExtension(
          x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
          true,
        ),
        ski,
      ],
    });
    return new CertificateAuthority(
      pem(cert.rawData, "CERTIFICATE"),
      await keyPem(keys.privateKey),
      keys.privateKey,
      subject,
      ski.keyId,
    );
  }

  /** Issues a leaf certificate with a fresh key pair. */
  async issue(options: IssueOptions): Promise<CertBundle> {
    const keys = await newKeyPair();
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serialNumber(),
      subject: name([[OID_COMMON_NAME, options.commonName]]),
      issuer: this.subject,
      ...validity(options.validDays),
      ...(options.notBefore ? { notBefore: options.notBefore } : {}),
      ...(options.notAfter ? { notAfter: options.notAfter } : {}),
      publicKey: keys.publicKey,
      signingKey: this.key,
      signingAlgorithm: SIG_ALG,
      extensions: await leafExtensions(options, keys.publicKey, this.keyId),
    });
    return { certPem: pem(cert.rawData, "CERTIFICATE"), keyPem: await keyPem(keys.privateKey) };
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
