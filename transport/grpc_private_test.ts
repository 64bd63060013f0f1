import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import grpcPackage from "@grpc/grpc-js/package.json" with { type: "json" };
import { GRPC_JS_VERSION, GRPC_PRIVATE_METHODS, PolicyServerCredentials } from "./grpc_private.ts";

const PIN = `npm:@grpc/grpc-js@${GRPC_JS_VERSION}`;

function noProvider(): grpc.experimental.CertificateProvider {
  return {
    addCaCertificateListener() {},
    removeCaCertificateListener() {},
    addIdentityCertificateListener() {},
    removeIdentityCertificateListener() {},
  };
}

Deno.test("grpc-js is pinned to the version grpc_private.ts was checked against", async () => {
  const config = JSON.parse(
    await Deno.readTextFile(new URL("./deno.json", import.meta.url)),
  ) as { imports?: Record<string, string> };
  const pinned = config.imports?.["@grpc/grpc-js"];
  assert.equal(
    pinned,
    PIN,
    `transport/deno.json pins ${pinned} but transport/grpc_private.ts was checked against ` +
      `${PIN}: re-check every private method it uses, then update GRPC_JS_VERSION`,
  );
  assert.equal(
    grpcPackage.version,
    GRPC_JS_VERSION,
    `the loaded grpc-js is ${grpcPackage.version}, not ${GRPC_JS_VERSION}, which ` +
      "transport/grpc_private.ts was checked against",
  );
});

Deno.test("grpc-js server credentials still have every private method knp overrides", () => {
  const kinds: [string, grpc.ServerCredentials][] = [
    ["createInsecure()", grpc.ServerCredentials.createInsecure()],
    [
      "experimental.createCertificateProviderServerCredentials()",
      grpc.experimental.createCertificateProviderServerCredentials(noProvider(), null, false),
    ],
  ];
  for (const [made, credentials] of kinds) {
    for (const method of GRPC_PRIVATE_METHODS) {
      const found = (credentials as unknown as Record<string, unknown>)[method];
      assert.equal(
        typeof found,
        "function",
        `grpc-js ${grpcPackage.version}: ServerCredentials.${method} is missing on ` +
          `${made} (removed or renamed?); transport/grpc_private.ts relies on it`,
      );
    }
  }
});

Deno.test("PolicyServerCredentials forwards to the wrapped credentials", () => {
  const inner = grpc.ServerCredentials.createInsecure();
  const wrapped = new PolicyServerCredentials(inner, () => null, { minVersion: "TLSv1.3" });
  assert.equal(wrapped._isSecure(), false);
  assert.equal(wrapped._getSecureContextOptions(), null);
  assert.deepEqual(wrapped._getInterceptors(), inner._getInterceptors());
  assert.equal(wrapped._equals(wrapped), true);
  assert.equal(wrapped._equals(inner), false);
});
