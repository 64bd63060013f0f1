import assert from "node:assert/strict";
import {
  AGENT_ID_KEY,
  AGENT_IDENTIFIERS_KEY,
  AGENT_METHOD_PATH,
  AUTHORIZATION_KEY,
  BEARER_PREFIX,
  IDENTIFIER_TYPES,
  parseAgentIdentifiers,
  PROXY_METHOD_PATH,
  queryParseError,
  removePortFromHost,
  SERVER_COUNT_KEY,
  SERVER_ID_KEY,
  USER_AGENT_KEY,
  validateAgentIdentifiers,
} from "./header.ts";

Deno.test("header constants match the wire", () => {
  assert.equal(PROXY_METHOD_PATH, "/ProxyService/Proxy");
  assert.equal(AGENT_METHOD_PATH, "/AgentService/Connect");
  assert.deepStrictEqual(
    [AGENT_ID_KEY, AGENT_IDENTIFIERS_KEY, AUTHORIZATION_KEY, SERVER_ID_KEY, SERVER_COUNT_KEY],
    ["agentid", "agentidentifiers", "authorization", "serverid", "servercount"],
  );
  assert.equal(USER_AGENT_KEY, "user-agent");
  assert.equal(BEARER_PREFIX, "Bearer ");
  assert.deepStrictEqual([...IDENTIFIER_TYPES], [
    "ipv4",
    "ipv6",
    "host",
    "cidr",
    "default-route",
    "zone",
  ]);
});

Deno.test("parseAgentIdentifiers() groups every known type in order", () => {
  const text =
    "host=localhost&host=node1.mydomain.com&cidr=127.0.0.1/16&ipv4=1.2.3.4&ipv4=5.6.7.8&ipv6=:::::&default-route=true";
  assert.deepStrictEqual(parseAgentIdentifiers(text), {
    ipv4: ["1.2.3.4", "5.6.7.8"],
    ipv6: [":::::"],
    host: ["localhost", "node1.mydomain.com"],
    cidr: ["127.0.0.1/16"],
    defaultRoute: true,
  });
});

Deno.test("parseAgentIdentifiers() returns empty identifiers for an empty value", () => {
  assert.deepStrictEqual(parseAgentIdentifiers(""), {
    ipv4: [],
    ipv6: [],
    host: [],
    cidr: [],
    defaultRoute: false,
  });
});

Deno.test("parseAgentIdentifiers() ignores uid and unknown types", () => {
  const ids = parseAgentIdentifiers("uid=abc&region=a&host=n1&ipv4=");
  assert.deepStrictEqual(ids, {
    ipv4: [""],
    ipv6: [],
    host: ["n1"],
    cidr: [],
    defaultRoute: false,
  });
});

Deno.test("parseAgentIdentifiers() reads knp's zone from its first value", () => {
  assert.equal(parseAgentIdentifiers("host=n1").zone, undefined);
  assert.equal("zone" in parseAgentIdentifiers("host=n1"), false);
  assert.equal(parseAgentIdentifiers("zone=us-east-1a&zone=b").zone, "us-east-1a");
  assert.equal(parseAgentIdentifiers("zone=").zone, "");
});

Deno.test("validateAgentIdentifiers() accepts a zone that is a label value, and only that", () => {
  validateAgentIdentifiers("zone=us-east-1a&cidr=10.0.0.0/16");
  validateAgentIdentifiers("zone=a");
  for (const bad of ["", "-a", "a-", "a b", "a/b", "x".repeat(64)]) {
    assert.throws(() => validateAgentIdentifiers(`zone=${encodeURIComponent(bad)}`), {
      message: new RegExp(`^agent address is invalid: zone ${JSON.stringify(bad)} is not a zone`),
    }, bad);
  }
});

Deno.test("parseAgentIdentifiers() decodes percent escapes and plus signs", () => {
  const ids = parseAgentIdentifiers("ipv6=fd00%3A%3A1&host=a+b");
  assert.deepStrictEqual(ids.ipv6, ["fd00::1"]);
  assert.deepStrictEqual(ids.host, ["a b"]);
});

Deno.test("parseAgentIdentifiers() reads default-route from its first value with Go bool rules", () => {
  for (const t of ["1", "t", "T", "TRUE", "true", "True"]) {
    assert.equal(parseAgentIdentifiers(`default-route=${t}`).defaultRoute, true, t);
  }
  for (const f of ["0", "f", "false", "FALSE", "yes", "TrUe", "", " true", "2"]) {
    assert.equal(parseAgentIdentifiers(`default-route=${f}`).defaultRoute, false, f);
  }
  assert.equal(parseAgentIdentifiers("default-route").defaultRoute, false);
  assert.equal(parseAgentIdentifiers("default-route=false&default-route=true").defaultRoute, false);
  assert.equal(parseAgentIdentifiers("default-route=true&default-route=false").defaultRoute, true);
  assert.equal(parseAgentIdentifiers("default-route=bogus&default-route=true").defaultRoute, false);
});

Deno.test("validateAgentIdentifiers() accepts the known types and an empty value", () => {
  validateAgentIdentifiers("");
  validateAgentIdentifiers("ipv4=1.2.3.4&ipv6=::1&host=a&cidr=10.0.0.0/8&default-route=true");
});

Deno.test("validateAgentIdentifiers() rejects unknown types, including uid", () => {
  assert.throws(() => validateAgentIdentifiers("uid=x"), {
    message: "agent address is invalid: unknown address type: uid",
  });
  assert.throws(() => validateAgentIdentifiers("host=a&region=b"), {
    message: "agent address is invalid: unknown address type: region",
  });
});

Deno.test("validateAgentIdentifiers() rejects what Go's url.ParseQuery rejects", () => {
  assert.throws(() => validateAgentIdentifiers("host=a;ipv4=1.2.3.4"), {
    message: "agent address is invalid: invalid semicolon separator in query",
  });
  assert.throws(() => validateAgentIdentifiers("host=%zz"), {
    message: 'agent address is invalid: invalid URL escape "%zz"',
  });
  assert.equal(queryParseError("host=a%"), 'invalid URL escape "%"');
  assert.equal(queryParseError("host=a%4"), 'invalid URL escape "%4"');
  assert.equal(queryParseError("host=%41&ipv4=1.2.3.4"), undefined);
});

Deno.test("removePortFromHost() strips ports like upstream", () => {
  const cases: [string, string][] = [
    ["localhost:8080", "localhost"],
    ["localhost", "localhost"],
    ["1.2.3.4:80", "1.2.3.4"],
    ["node1:", "node1"],
    ["", ""],
    ["::", "::"],
    ["fd00::1", "fd00::1"],
    ["[a:b::1]:8080", "a:b::1"],
    ["[::1]:443", "::1"],
    // Upstream quirk: a bracketed address without a port loses its last group.
    ["[::1]", ":"],
  ];
  for (const [input, want] of cases) assert.equal(removePortFromHost(input), want, input);
});

Deno.test("validateAgentIdentifiers() rejects malformed values, naming type and value", () => {
  assert.throws(() => validateAgentIdentifiers("ipv4=notanip"), {
    message: 'agent address is invalid: ipv4 "notanip" is not an IPv4 address',
  });
  assert.throws(() => validateAgentIdentifiers("cidr=10.0.0.0/99"), {
    message: 'agent address is invalid: cidr "10.0.0.0/99" is not an address/prefix-length ' +
      "(e.g. 10.0.0.0/8 or fd00::/64)",
  });
  assert.throws(() => validateAgentIdentifiers("ipv6=::1::2"), {
    message: 'agent address is invalid: ipv6 "::1::2" is not an IPv6 address',
  });
});
