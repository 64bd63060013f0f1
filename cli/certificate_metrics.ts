/**
 * knp's certificate-expiry gauge of both binaries: `knp_certificate_expiry_seconds{file}`, the
 * seconds until the earliest `notAfter` of the certificates in each watched TLS file (negative once
 * expired). It reads the files' current certificates when scraped, so a reloaded file shows its
 * new expiry.
 *
 * ```ts
 * import { Registry } from "prom-client";
 * const registry = new Registry();
 * const notAfter = new Date(Date.now() + 3600_000);
 * certificateExpiryMetrics(registry, [{ expiry: () => [{ file: "a.crt", subject: "CN=a", notAfter }] }]);
 * console.log((await registry.metrics()).includes('knp_certificate_expiry_seconds{file="a.crt"}')); // true
 * ```
 *
 * @module
 */

import { Gauge, type Registry } from "prom-client";

/** Something that lists its certificates and their expiry (a `TlsFiles` of `@knp/transport`). */
export interface CertificateSource {
  /** The current certificates, with the file each is in. */
  expiry(): readonly { file: string; notAfter: Date }[];
}

/** The values of `candidates` that are {@linkcode CertificateSource}s (others are left out). */
export function certificateSources(...candidates: unknown[]): CertificateSource[] {
  return candidates.filter((c): c is CertificateSource =>
    typeof c === "object" && c !== null &&
    typeof (c as Partial<CertificateSource>).expiry === "function"
  );
}

/**
 * Registers `knp_certificate_expiry_seconds{file}` in `registry`, read from `sources` when
 * scraped: per file, the seconds until its earliest-expiring certificate's `notAfter`.
 *
 * @internal For the server and agent packages; the registry type is prom-client's.
 */
export function certificateExpiryMetrics(
  registry: Registry,
  sources: readonly CertificateSource[],
): void {
  new Gauge({
    name: "knp_certificate_expiry_seconds",
    help: "Seconds until the earliest notAfter of the certificates in a TLS file the process " +
      "watches (negative once expired).",
    labelNames: ["file"] as const,
    registers: [registry],
    collect() {
      this.reset();
      const earliest = new Map<string, number>();
      for (const source of sources) {
        for (const { file, notAfter } of source.expiry()) {
          earliest.set(file, Math.min(earliest.get(file) ?? Infinity, notAfter.getTime()));
        }
      }
      const now = Date.now();
      for (const [file, at] of earliest) this.set({ file }, Math.round((at - now) / 1000));
    },
  });
}
