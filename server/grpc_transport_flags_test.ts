/** `--knp-grpc-transport`: accepted values, the config it gives, and the serve function it picks. */

import assert from "node:assert/strict";
import { KnpError } from "@knp/core/errors";
import { serveGrpc } from "@knp/transport/grpc_server";
import { serveH2Grpc } from "@knp/transport/h2/serve";
import { grpcTransportConfig, validateGrpcTransportOptions } from "./grpc_transport_flags.ts";
import { grpcServeFunction } from "./grpc_serve.ts";

Deno.test("--knp-grpc-transport accepts grpc-js and native and selects the serve function", () => {
  assert.deepEqual(grpcTransportConfig({ knpGrpcTransport: "native" }), {
    grpcTransport: "native",
  });
  assert.equal(grpcServeFunction({ grpcTransport: "native" }), serveH2Grpc);
  assert.equal(grpcServeFunction(grpcTransportConfig({ knpGrpcTransport: "grpc-js" })), serveGrpc);
  assert.equal(grpcServeFunction({}), serveH2Grpc);
  assert.throws(
    () => validateGrpcTransportOptions({ knpGrpcTransport: "nghttp2" }),
    (e: unknown) =>
      e instanceof KnpError && e.code === "INVALID_FLAG" && /--knp-grpc-transport/.test(e.message),
  );
});
