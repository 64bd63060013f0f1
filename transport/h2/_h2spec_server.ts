/**
 * A tiny h2c (or, with `--tls`, TLS) listener running the native HTTP/2 server connection, for
 * h2spec by hand (see README.md): `deno run -A transport/h2/_h2spec_server.ts 8089 [--tls]`.
 * gRPC calls of `/ProxyService/Proxy` are echoed; every other request gets a short plain answer.
 *
 * @module
 */

import { generateCa } from "@knp/testing";
import { serveH2Grpc } from "./serve.ts";

const port = Number(Deno.args[0] ?? 8089);
const useTls = Deno.args.includes("--tls");
let tls;
if (useTls) {
  const ca = await generateCa({ commonName: "h2spec-ca" });
  const cert = await ca.issue({
    commonName: "localhost",
    dnsNames: ["localhost"],
    ipAddresses: ["127.0.0.1"],
    usage: "server",
  });
  const enc = new TextEncoder();
  tls = { cert: enc.encode(cert.certPem), key: enc.encode(cert.keyPem) };
}
const server = await serveH2Grpc({
  service: "proxy",
  address: `127.0.0.1:${port}`,
  tls,
  onStream({ stream }) {
    stream.start({
      onPacket: (p) => {
        if (p.type === "DATA") stream.send({ type: "DATA", data: p.data });
      },
      onEnd() {},
    });
  },
});
// deno-lint-ignore no-console -- a manual tool: says where it listens
console.log(`h2 test server on 127.0.0.1:${server.port}${useTls ? " (TLS)" : ""}`);
