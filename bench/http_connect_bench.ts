/**
 * Micro-benchmarks of the HTTP-CONNECT frontend's per-dial parsing
 * (`server/http_connect_frontend.ts`): the request head kube-apiserver sends, and one with the
 * headers a generic HTTP client adds. `deno task bench:micro`.
 *
 * @module
 */

import { parseConnectHead, validConnectTarget } from "../server/http_connect_frontend.ts";

const rest = new Uint8Array(0);
const minimal = "CONNECT 10.244.1.17:10250 HTTP/1.1\r\nHost: 10.244.1.17:10250";
const verbose = [
  "CONNECT kubernetes.default.svc.cluster.local:443 HTTP/1.1",
  "Host: kubernetes.default.svc.cluster.local:443",
  "User-Agent: kube-apiserver/v1.31.0 (linux/amd64) kubernetes/abcdef0",
  "Proxy-Connection: Keep-Alive",
  "X-Forwarded-For: 10.0.0.1",
  "Accept: */*",
].join("\r\n");

Deno.bench(
  "parseConnectHead, kube-apiserver's head",
  { group: "CONNECT head", baseline: true },
  () => {
    parseConnectHead(minimal, rest);
  },
);

Deno.bench("parseConnectHead, 6 header lines", { group: "CONNECT head" }, () => {
  parseConnectHead(verbose, rest);
});

Deno.bench("validConnectTarget, IPv6 target", () => {
  validConnectTarget("[fd00:10:244::17]:10250");
});
