import assert from "node:assert/strict";
import { Registry } from "prom-client";
import { certificateExpiryMetrics, certificateSources } from "./certificate_metrics.ts";

const HOUR = 3600_000;

function sample(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(series + " "));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

Deno.test("knp_certificate_expiry_seconds reports each file's earliest notAfter, read when scraped", async () => {
  let leafNotAfter = new Date(Date.now() + 2 * HOUR);
  const files = {
    expiry: () => [
      { file: "/tls/server.crt", notAfter: leafNotAfter },
      { file: "/tls/server.crt", notAfter: new Date(Date.now() + 10 * HOUR) },
      { file: "/tls/ca.crt", notAfter: new Date(Date.now() - HOUR) },
    ],
  };
  const registry = new Registry();
  certificateExpiryMetrics(registry, certificateSources(files, undefined, { cert: "x" }));
  let text = await registry.metrics();
  const server = () => sample(text, 'knp_certificate_expiry_seconds{file="/tls/server.crt"}')!;
  assert.ok(Math.abs(server() - 7200) <= 2, `${server()}`);
  const ca = sample(text, 'knp_certificate_expiry_seconds{file="/tls/ca.crt"}')!;
  assert.ok(Math.abs(ca + 3600) <= 2, `${ca}`);
  // A reloaded file: the next scrape shows the new certificate's expiry.
  leafNotAfter = new Date(Date.now() + 5 * HOUR);
  text = await registry.metrics();
  assert.ok(Math.abs(server() - 5 * 3600) <= 2, `${server()}`);
});

Deno.test("certificateSources keeps only values with an expiry() method", () => {
  const source = { expiry: () => [] };
  assert.deepEqual(certificateSources(undefined, null, {}, source, { cert: "pem" }), [source]);
});
