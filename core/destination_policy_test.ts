/**
 * Tests of the destination policy: rule syntax, address reading (IPv6, lenient IPv4, mapped
 * addresses), the deny-then-allow decision, and the hardened preset.
 *
 * @module
 */

import assert from "node:assert/strict";
import { KnpError } from "./errors.ts";
import {
  type DestinationPolicy,
  evaluateDestination,
  hardenedAgentRules,
  OPEN_POLICY,
  parseDestinationRule,
  parseDestinationRules,
  parseDialAddress,
  policyDeniedText,
} from "./destination_policy.ts";
import { classifyDialError } from "./dial_errors.ts";
import { parseIpv4Loose, parseIpv6 } from "./ip_address.ts";

function policy(allow: string[], deny: string[] = []): DestinationPolicy {
  return {
    allow: parseDestinationRules(allow, "--allow"),
    deny: parseDestinationRules(deny, "--deny"),
  };
}

function allowed(p: DestinationPolicy, address: string): boolean {
  return evaluateDestination(p, address).allowed;
}

Deno.test("parses IPv6 the RFC 4291 ways, IPv4 the inet_aton ways", () => {
  assert.equal(parseIpv6("::1"), 1n);
  assert.equal(parseIpv6("::"), 0n);
  assert.equal(parseIpv6("0:0:0:0:0:0:0:1"), 1n);
  assert.equal(parseIpv6("::ffff:127.0.0.1"), (0xffffn << 32n) | 0x7f000001n);
  assert.equal(parseIpv6("fd00::"), 0xfd00n << 112n);
  for (const bad of ["1::2::3", "1:2:3:4:5:6:7:8:9", "12345::", "::g", "1:2:3:4:5:6:7::8", ":1"]) {
    assert.equal(parseIpv6(bad), undefined, bad);
  }
  assert.equal(parseIpv4Loose("127.1"), 0x7f000001n);
  assert.equal(parseIpv4Loose("0x7f.0.0.1"), 0x7f000001n);
  assert.equal(parseIpv4Loose("2130706433"), 0x7f000001n);
  assert.equal(parseIpv4Loose("0177.0.0.1"), 0x7f000001n);
  assert.equal(parseIpv4Loose("256.0.0.1"), undefined);
  assert.equal(parseIpv4Loose("example"), undefined);
});

Deno.test("rules: host kinds and port forms", () => {
  const p = policy([
    "10.0.0.0/8:443",
    "*.svc.cluster.local",
    "kubernetes:6443",
    "[fd00::/8]:8000-8999",
    "192.168.1.5:80|8080",
    "fe80::/10",
  ]);
  assert.ok(allowed(p, "10.20.30.40:443"));
  assert.ok(!allowed(p, "10.20.30.40:444"));
  assert.ok(!allowed(p, "11.0.0.1:443"));
  assert.ok(allowed(p, "web.ns.svc.cluster.local:1"));
  assert.ok(allowed(p, "WEB.ns.svc.cluster.local.:1"), "case and trailing dot");
  assert.ok(!allowed(p, "svc.cluster.local:80"), "a suffix rule does not match the bare suffix");
  assert.ok(!allowed(p, "evilsvc.cluster.local:80"));
  assert.ok(allowed(p, "kubernetes:6443"));
  assert.ok(!allowed(p, "kubernetes.evil:6443"));
  assert.ok(allowed(p, "[fd12::1]:8500"));
  assert.ok(!allowed(p, "[fd12::1]:9000"));
  assert.ok(allowed(p, "192.168.1.5:8080"));
  assert.ok(!allowed(p, "192.168.1.5:81"));
  assert.ok(allowed(p, "[fe80::1%eth0]:22"), "a zone is ignored");
});

Deno.test("deny wins over allow; empty allow list allows; each decision names its rule", () => {
  const p = policy(["10.0.0.0/8"], ["10.0.0.1:22", "*:25"]);
  assert.deepEqual(evaluateDestination(p, "10.0.0.1:22"), {
    allowed: false,
    decision: "deny",
    rule: "10.0.0.1:22",
    source: "--deny",
  });
  assert.deepEqual(evaluateDestination(p, "10.0.0.1:80"), {
    allowed: true,
    decision: "allow",
    rule: "10.0.0.0/8",
    source: "--allow",
  });
  assert.equal(evaluateDestination(p, "10.9.9.9:25").rule, "*:25");
  assert.equal(evaluateDestination(p, "example.com:80").rule, "(not in allow list)");
  const denyOnly = policy([], ["10.0.0.0/8"]);
  assert.equal(evaluateDestination(denyOnly, "example.com:80").rule, "(no allow list)");
  assert.ok(allowed(denyOnly, "example.com:80"));
  assert.deepEqual(evaluateDestination(OPEN_POLICY, "no port"), {
    allowed: true,
    decision: "allow",
    rule: "(no rules)",
    source: "policy",
  });
});

Deno.test("addresses are read as a resolver would: no bypass of IP rules", () => {
  const p = policy([], ["127.0.0.0/8:8095", "[::1]:8095", "0.0.0.0/8:8095"]);
  for (
    const sneaky of [
      "127.0.0.1:8095",
      "127.1:8095",
      "0x7f.1:8095",
      "2130706433:8095",
      "0177.0.0.1:8095",
      "[::ffff:127.0.0.1]:8095",
      "[::ffff:7f00:1]:8095",
      "[0:0:0:0:0:0:0:1]:8095",
      ":8095",
      "127.0.0.1.:8095",
    ]
  ) {
    assert.ok(!allowed(p, sneaky), sneaky);
  }
  assert.ok(allowed(p, "127.0.0.1:8096"));
  for (
    const unreadable of ["127.0.0.1", "::1:8095", "[::1]8095", "host:http", "a b:80", "[zz]:80"]
  ) {
    assert.equal(parseDialAddress(unreadable), undefined, unreadable);
    assert.equal(evaluateDestination(p, unreadable).rule, "(unreadable address)", unreadable);
  }
});

Deno.test("malformed rules fail with INVALID_FLAG naming the flag", () => {
  for (
    const [bad, why] of [
      ["", /empty rule/],
      [":80", /empty host/],
      ["10.0.0.0/33", /prefix length/],
      ["10.0.0/8", /bad CIDR/],
      ["300.1.2.3", /bad IP address/],
      ["10.0.0.1:0", /bad port/],
      ["10.0.0.1:70000", /bad port/],
      ["10.0.0.1:90-80", /backwards/],
      ["10.0.0.1:1-2-3", /bad port/],
      ["fd00::1:443x", /bracketed/],
      ["[fd00::1", /missing \]/],
      ["[fd00::1]443", /unexpected/],
      ["bad_host!:80", /bad host name/],
      ["*.:80", /bad name suffix/],
    ] as const
  ) {
    assert.throws(() => parseDestinationRule(bad, "--knp-destination-deny"), (err) => {
      assert.ok(err instanceof KnpError);
      assert.equal(err.code, "INVALID_FLAG");
      assert.match(err.message, /^--knp-destination-deny: invalid destination rule/);
      assert.match(err.message, why, bad);
      return true;
    });
  }
  assert.equal(parseDestinationRule("fd00::/8", "--f").ports.length, 1, "v6 without brackets");
});

Deno.test("hardened preset: kubelet on node addresses, any port in pod and service CIDRs", () => {
  const p: DestinationPolicy = {
    allow: hardenedAgentRules({
      nodeAddresses: ["10.0.0.5", "fd00::5", "node-a"],
      podCidrs: ["10.244.0.0/16"],
      serviceCidrs: ["10.96.0.0/12", "fd01::/108"],
    }),
    deny: [],
  };
  assert.ok(allowed(p, "10.0.0.5:10250"));
  assert.ok(allowed(p, "[fd00::5]:10250"));
  assert.ok(allowed(p, "node-a:10250"));
  assert.ok(!allowed(p, "10.0.0.5:22"));
  assert.ok(!allowed(p, "10.0.0.6:10250"));
  assert.ok(allowed(p, "10.244.3.4:8080"));
  assert.ok(allowed(p, "10.96.0.1:443"));
  assert.ok(allowed(p, "[fd01::1]:53"));
  assert.ok(!allowed(p, "169.254.169.254:80"), "cloud metadata is not in the preset");
  assert.throws(
    () => hardenedAgentRules({ nodeAddresses: [], podCidrs: [], serviceCidrs: [] }),
    /would allow nothing/,
  );
  assert.throws(
    () => hardenedAgentRules({ nodeAddresses: [], podCidrs: ["10.0.0.0/40"], serviceCidrs: [] }),
    /^KnpError: --knp-pod-cidr: invalid destination rule/,
  );
});

Deno.test("the denial text reads as policy-denied in the taxonomy", () => {
  const decision = evaluateDestination(policy([], ["*:22"]), "10.0.0.1:22");
  const text = policyDeniedText("10.0.0.1:22", decision);
  assert.equal(
    text,
    'dial tcp 10.0.0.1:22: denied by destination policy (rule "*:22" from --deny)',
  );
  assert.equal(classifyDialError(text), "policy-denied");
});
