import assert from "node:assert/strict";
import {
  classifyDialError,
  type DialErrorKind,
  parseDialError,
  tagDialError,
} from "./dial_errors.ts";

Deno.test("classifyDialError reads upstream's and Go's texts", () => {
  const cases: [string, DialErrorKind][] = [
    ["No agent available", "no-agent"],
    ['No agent available: no agent serves "10.0.0.1:80" (proxy strategies: destHost)', "no-route"],
    ["dial tcp 127.0.0.1:1: connect: connection refused", "dial-refused"],
    ["dial tcp 10.0.0.1:80: connect: connection reset by peer", "dial-refused"],
    ["dial tcp: lookup nothere.invalid: no such host", "dns-failure"],
    ["dial tcp 198.18.0.254:1234: i/o timeout", "dial-timeout"],
    ["timed out waiting for backend dial", "dial-timeout"],
    ["server overloaded: 3 dials are already waiting for agents (limit 3)", "server-overloaded"],
    ["agent a1 is shutting down (draining); dial refused", "agent-draining"],
    ["agent a1 disconnected before the dial completed", "tunnel-closed"],
    ["something nobody planned for", "unknown"],
  ];
  for (const [text, kind] of cases) assert.equal(classifyDialError(text), kind, text);
  // "No agent available" is matched exactly: a longer text is not "no agent".
  assert.notEqual(classifyDialError("No agent available today, sorry"), "no-agent");
});

Deno.test("tagDialError and parseDialError round-trip kind, server and agent", () => {
  const text = tagDialError("dial tcp 1.2.3.4:80: connect: connection refused", {
    serverId: "s-1",
    agentId: "a-1",
  });
  assert.equal(
    text,
    "dial tcp 1.2.3.4:80: connect: connection refused [knp: kind=dial-refused server=s-1 agent=a-1]",
  );
  assert.deepEqual(parseDialError(text), {
    kind: "dial-refused",
    message: "dial tcp 1.2.3.4:80: connect: connection refused",
    serverId: "s-1",
    agentId: "a-1",
  });
  // Retagging replaces the tag instead of stacking a second one.
  const again = tagDialError(text, { kind: "tunnel-closed", serverId: "s-2" });
  assert.equal(
    again,
    "dial tcp 1.2.3.4:80: connect: connection refused [knp: kind=tunnel-closed server=s-2]",
  );
  // An untagged text (an upstream server's) is classified by its words.
  assert.deepEqual(parseDialError("No agent available"), {
    kind: "no-agent",
    message: "No agent available",
  });
  // An unknown kind in a tag falls back to the words.
  assert.equal(parseDialError("i/o timeout [knp: kind=bogus]").kind, "dial-timeout");
});
