import assert from "node:assert/strict";
import { KnpError } from "@knp/core/errors";
import { classifyConnectError, denoDialer, EndpointDialError } from "./dialer.ts";

Deno.test("classifyConnectError maps Deno's error types to dial error kinds", () => {
  assert.equal(classifyConnectError(new Deno.errors.ConnectionRefused("x")), "dial-refused");
  assert.equal(classifyConnectError(new Deno.errors.ConnectionReset("x")), "dial-refused");
  assert.equal(classifyConnectError(new Deno.errors.TimedOut("x")), "dial-timeout");
  assert.equal(classifyConnectError(new KnpError("TIMEOUT", "slow")), "dial-timeout");
  assert.equal(
    classifyConnectError(
      new Error("failed to lookup address information: Name or service not known"),
    ),
    "dns-failure",
  );
  assert.equal(
    classifyConnectError(new Error("Network is unreachable (os error 101)")),
    "dial-refused",
  );
  assert.equal(classifyConnectError(new Error("something else")), "unknown");
  assert.equal(
    classifyConnectError(new EndpointDialError("DIAL_FAILED", "x", "dns-failure")),
    "dns-failure",
  );
});

Deno.test("denoDialer fails a refused dial with Go's text and the dial-refused kind", async () => {
  // A port that was just free: bind, note the port, release it, then dial it.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  const address = `127.0.0.1:${port}`;
  const err = await denoDialer("tcp", address, { timeoutMs: 5_000 }).then(
    () => assert.fail("the dial should fail"),
    (e: unknown) => e,
  );
  assert.ok(err instanceof EndpointDialError);
  assert.equal(err.code, "DIAL_FAILED");
  assert.equal(err.kind, "dial-refused");
  assert.equal(err.message, `dial tcp ${address}: connect: connection refused`);
});

Deno.test("denoDialer refuses an unknown network as an unknown kind", async () => {
  await assert.rejects(
    denoDialer("udp", "127.0.0.1:1", { timeoutMs: 1_000 }),
    (e: unknown) => e instanceof EndpointDialError && e.kind === "unknown",
  );
});
