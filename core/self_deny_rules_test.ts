/**
 * Tests of the self rules: a listener on every address is denied on loopback, the unspecified
 * addresses, `localhost` and the own addresses; one on a single address only where a dial reaches
 * it; operator-named addresses for every listener.
 *
 * @module
 */

import assert from "node:assert/strict";
import { type DestinationPolicy, evaluateDestination } from "./destination_policy.ts";
import { selfDenyRules } from "./self_deny_rules.ts";

function allowed(p: DestinationPolicy, address: string): boolean {
  return evaluateDestination(p, address).allowed;
}

Deno.test("self rules deny a wildcard listener's port on loopback, localhost and own addresses", () => {
  const p: DestinationPolicy = {
    allow: [],
    deny: selfDenyRules(["10.1.1.1", "fd00::9", "0.0.0.0", ""], [
      { port: 8090 },
      { host: "0.0.0.0", port: 8095 },
      { host: "", port: 0 },
      { host: "::", port: 8095 },
    ]),
  };
  for (const a of ["127.0.0.1:8095", "127.0.1.14:8095", "localhost:8090", "x.localhost:8090"]) {
    assert.equal(evaluateDestination(p, a).source, "self", a);
  }
  assert.ok(!allowed(p, "[::1]:8090"));
  assert.ok(!allowed(p, "10.1.1.1:8095"));
  assert.ok(!allowed(p, "[fd00::9]:8095"));
  assert.ok(!allowed(p, "0.0.0.0:8090"));
  assert.ok(allowed(p, "10.1.1.1:8091"));
  assert.ok(allowed(p, "127.0.0.1:8091"));
  assert.equal(evaluateDestination(p, "10.1.1.1:8090").rule, "10.1.1.1:8090|8095");
  assert.deepEqual(selfDenyRules(["10.1.1.1"], [{ port: 0 }, {}]), []);
});

Deno.test("self rules deny a listener on one address there only, and named addresses always", () => {
  const p: DestinationPolicy = {
    allow: [],
    deny: selfDenyRules(["10.1.1.1"], [
      { host: "127.0.0.1", port: 8092 },
      { host: "10.2.2.2", port: 8093 },
      { host: "[::1]", port: 8094 },
    ], ["10.3.3.3", ""]),
  };
  for (
    const a of [
      "127.0.0.1:8092",
      "localhost:8092",
      "0.0.0.0:8092",
      "10.2.2.2:8093",
      "[::1]:8094",
      "10.3.3.3:8092",
      "10.3.3.3:8093",
    ]
  ) {
    assert.equal(evaluateDestination(p, a).source, "self", a);
  }
  assert.equal(evaluateDestination(p, "127.0.0.1:8092").rule, "127.0.0.1:8092");
  // Another socket on the same port: another loopback address, an own address the listener
  // is not bound on, another port.
  for (const a of ["127.0.1.14:8092", "10.1.1.1:8092", "10.2.2.3:8093", "127.0.0.1:8093"]) {
    assert.ok(allowed(p, a), a);
  }
});

Deno.test("a listener on localhost is denied on both loopbacks, not on the rest of 127/8", () => {
  const p: DestinationPolicy = {
    allow: [],
    deny: selfDenyRules([], [{ host: "localhost", port: 8095 }]),
  };
  for (const a of ["127.0.0.1:8095", "[::1]:8095", "localhost:8095", "0.0.0.0:8095"]) {
    assert.equal(evaluateDestination(p, a).source, "self", a);
  }
  assert.ok(allowed(p, "127.0.1.14:8095"));
});
