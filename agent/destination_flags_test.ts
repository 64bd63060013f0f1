/**
 * Tests of the agent's destination flags: parsing, the hardened preset's inputs and errors, and
 * the policy dialer (a denied dial never reaches the inner dialer).
 *
 * @module
 */

import assert from "node:assert/strict";
import { jsonLogger } from "@knp/core/log";
import { KnpError } from "@knp/core/errors";
import { evaluateDestination } from "@knp/core/destination_policy";
import { fakeDialer, FakeEndpoint } from "./_test_socket.ts";
import { EndpointDialError } from "./dialer.ts";
import { agentDestinationPolicy, DENIED_AUDIT_MESSAGE, policyDialer } from "./destination_flags.ts";
import { type AgentOptions, parseAgentOptions } from "./options.ts";

function options(args: string[]): AgentOptions {
  const parsed = parseAgentOptions(args, {});
  assert.ok(!("help" in parsed));
  return parsed.options;
}

Deno.test("the hardened preset takes node addresses from --agent-identifiers", () => {
  const o = options([
    "--knp-destination-preset=hardened",
    "--agent-identifiers=ipv4=10.0.0.5&ipv6=fd00::5&host=node-a&cidr=10.9.0.0/16",
    "--knp-pod-cidr=10.244.0.0/16",
    "--knp-service-cidr=10.96.0.0/12,fd01::/108",
    "--knp-deny-destinations=10.244.0.1:*",
  ]);
  const policy = agentDestinationPolicy(o);
  const allowed = (a: string) => evaluateDestination(policy, a).allowed;
  assert.ok(allowed("10.0.0.5:10250"));
  assert.ok(allowed("[fd00::5]:10250"));
  assert.ok(allowed("node-a:10250"));
  assert.ok(!allowed("10.9.0.1:10250"), "a cidr identifier is not a node address");
  assert.ok(allowed("10.244.3.3:80"));
  assert.ok(!allowed("10.244.0.1:80"), "deny wins");
  assert.ok(allowed("[fd01::1]:53"));
  assert.ok(!allowed("10.0.0.5:22"));
  assert.equal(evaluateDestination(policy, "10.0.0.5:10250").source, "--agent-identifiers");

  const explicit = agentDestinationPolicy({
    ...o,
    knpNodeAddresses: ["10.1.1.1"],
    knpKubeletPort: 10255,
  });
  assert.equal(evaluateDestination(explicit, "10.1.1.1:10255").source, "--knp-node-addresses");
  assert.ok(!evaluateDestination(explicit, "10.0.0.5:10250").allowed);
});

Deno.test("destination flag errors name the flag", () => {
  const base = options([]);
  assert.deepEqual(agentDestinationPolicy(base), { allow: [], deny: [] }, "default: open");
  const cases: [Partial<AgentOptions>, RegExp][] = [
    [{ knpDestinationPreset: "strict" }, /^--knp-destination-preset: want hardened/],
    [{ knpDestinationPreset: "hardened" }, /would allow nothing/],
    [{ knpPodCidr: ["10.0.0.0/8"] }, /need --knp-destination-preset=hardened/],
    [{ knpPodCidr: ["node-a"] }, /^--knp-pod-cidr: want a CIDR/],
    [{ knpServiceCidr: ["10.0.0.0/99"] }, /^--knp-service-cidr: invalid destination rule/],
    [{ knpAllowDestinations: ["*:0"] }, /^--knp-allow-destinations: invalid destination rule/],
    [{ knpDenyDestinations: ["[::1"] }, /^--knp-deny-destinations: invalid destination rule/],
    [{ knpKubeletPort: 0 }, /^--knp-kubelet-port: must be a port number/],
  ];
  for (const [patch, message] of cases) {
    assert.throws(() => agentDestinationPolicy({ ...base, ...patch }), (err) => {
      assert.ok(err instanceof KnpError);
      assert.equal(err.code, "INVALID_FLAG");
      assert.match(err.message, message);
      return true;
    });
  }
});

Deno.test("policyDialer: a denied dial opens nothing and fails policy-denied", async () => {
  const lines: Record<string, unknown>[] = [];
  const log = jsonLogger({ write: (line) => lines.push(JSON.parse(line)) });
  const inner = fakeDialer(() => new FakeEndpoint());
  const policy = agentDestinationPolicy({
    ...options([]),
    knpAllowDestinations: ["10.0.0.0/8"],
  });
  const dialer = policyDialer(policy, inner.dialer, log);
  const err = await dialer("tcp", "192.168.0.1:80", { timeoutMs: 1000, serverId: "s1", dialId: 3n })
    .catch((e) => e);
  assert.ok(err instanceof EndpointDialError);
  assert.equal(err.kind, "policy-denied");
  assert.equal(err.code, "POLICY_DENIED");
  assert.deepEqual(inner.calls, [], "the inner dialer was not called");
  assert.equal(lines.length, 1);
  assert.equal(lines[0]!["msg"], DENIED_AUDIT_MESSAGE);
  assert.equal(lines[0]!["serverID"], "s1");
  assert.equal(lines[0]!["dialID"], "3");
  assert.equal(lines[0]!["rule"], "(not in allow list)");
  await dialer("tcp", "10.0.0.1:80", { timeoutMs: 1000 });
  assert.equal(inner.calls.length, 1);
  assert.equal(policyDialer({ allow: [], deny: [] }, inner.dialer, log), inner.dialer);
});
