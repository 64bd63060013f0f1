/**
 * Tests of the destination policy in the server core (in-memory streams): a denied dial never
 * reaches an agent, is answered with a `policy-denied` DIAL_RSP, counted as a dial failure and
 * audited; `denySelf` swaps in the bound ports; the flags parse and validate.
 *
 * @module
 */

import assert from "node:assert/strict";
import { dialRequest } from "@knp/proto";
import { parseDestinationRules } from "@knp/core/destination_policy";
import { parseDialError } from "@knp/core/dial_errors";
import { jsonLogger } from "@knp/core/log";
import { memoryPipe } from "@knp/transport/packet_stream";
import { startPeer } from "@knp/testing/fakes";
import { ProxyServer, type ServerEvent } from "./proxy_server.ts";
import { DENIED_AUDIT_MESSAGE, denySelf } from "./destination_guard.ts";
import { destinationConfig, validateDestinationOptions } from "./destination_flags.ts";
import { parseServerOptions } from "./options.ts";

/** Lets the in-memory pipes deliver what was sent. */
const settle = () => new Promise<void>((resolve) => setTimeout(resolve, 0));

function setup() {
  const lines: Record<string, unknown>[] = [];
  const events: ServerEvent[] = [];
  const server = new ProxyServer({
    serverId: "s1",
    logger: jsonLogger({ write: (line) => lines.push(JSON.parse(line)) }),
    onEvent: (e) => e.kind === "dial-requested" || events.push(e),
    destinationPolicy: {
      allow: [],
      deny: parseDestinationRules(["10.0.0.0/8:22"], "--knp-destination-deny"),
    },
  });
  const [serverEnd, agentEnd] = memoryPipe();
  const hs = server.agentHandshake(["a1"], [""]);
  server.addBackend(hs.agentId, hs.identifiers, serverEnd);
  const agent = startPeer(agentEnd);
  const dial = async (address: string, dialId: bigint) => {
    const [clientEnd, frontEnd] = memoryPipe();
    server.serveFrontend(frontEnd, "ua/1");
    const client = startPeer(clientEnd);
    client.end.send(dialRequest(address, dialId));
    await settle();
    return client;
  };
  return { server, agent, dial, lines, events };
}

Deno.test("a denied dial is answered policy-denied, audited and never reaches the agent", async () => {
  const { server, agent, dial, lines, events } = setup();
  const client = await dial("10.1.2.3:22", 7n);
  const [rsp] = client.of("DIAL_RSP");
  assert.ok(rsp);
  const info = parseDialError(rsp.dialResponse.error);
  assert.equal(info.kind, "policy-denied");
  assert.equal(info.serverId, "s1");
  assert.match(info.message, /^dial tcp 10\.1\.2\.3:22: denied by destination policy/);
  assert.deepEqual(agent.of("DIAL_REQ"), []);
  assert.deepEqual(events, [
    { kind: "dial-failure", reason: "error_response", dialId: 7n },
    {
      kind: "dial-denied",
      dialId: 7n,
      address: "10.1.2.3:22",
      rule: "10.0.0.0/8:22",
      source: "--knp-destination-deny",
    },
  ]);
  const audit = lines.filter((l) => l["msg"] === DENIED_AUDIT_MESSAGE);
  assert.equal(audit.length, 1);
  assert.equal(audit[0]!["address"], "10.1.2.3:22");
  assert.equal(audit[0]!["rule"], "10.0.0.0/8:22");
  assert.equal(audit[0]!["ruleSource"], "--knp-destination-deny");
  assert.equal(audit[0]!["userAgent"], "ua/1");
  assert.equal(audit[0]!["decision"], "deny");
  assert.equal(server.pendingDials, 0);

  await dial("10.1.2.3:443", 8n);
  assert.equal(agent.of("DIAL_REQ").length, 1, "an allowed dial is forwarded");
  assert.equal(server.pendingDials, 1);
  server.close();
  await settle();
});

Deno.test("denySelf appends self rules to the flags' policy and replaces them", async () => {
  const { server, dial } = setup();
  const base = server.destinationPolicy;
  const config = { destinationPolicy: base, denySelfDestinations: { addresses: ["10.9.9.9"] } };
  denySelf(server, config, [{ port: 8095 }, { host: "127.0.0.1", port: undefined }, { port: 0 }]);
  assert.equal(server.destinationPolicy.deny.length, base.deny.length + 7);
  denySelf(server, config, [{ port: 8095 }, { host: "", port: 8092 }]);
  assert.equal(server.destinationPolicy.deny.length, base.deny.length + 7, "replaced, not added");
  const denied = await dial("10.9.9.9:8092", 1n);
  assert.equal(parseDialError(denied.of("DIAL_RSP")[0]!.dialResponse.error).kind, "policy-denied");
  const before = server.destinationPolicy;
  denySelf(server, { destinationPolicy: base }, [{ port: 8095 }]);
  assert.equal(server.destinationPolicy, before, "no-op without denySelfDestinations");
  server.close();
  await settle();
});

Deno.test("the destination flags parse, validate and build the configuration", () => {
  const args = [
    "--uds-name=/tmp/x.sock",
    "--server-port=0",
    "--knp-destination-allow=10.0.0.0/8,*.svc:443",
    "--knp-destination-allow=[fd00::/8]:*",
    "--knp-destination-deny=10.0.0.1:22",
    "--knp-destination-self-addresses=10.2.2.2",
    "--agent-bind-address=10.3.3.3",
  ];
  const parsed = parseServerOptions(args, {});
  assert.ok(!("help" in parsed));
  const o = parsed.options;
  assert.deepEqual(o.knpDestinationAllow, ["10.0.0.0/8", "*.svc:443", "[fd00::/8]:*"]);
  assert.equal(o.knpDestinationDenySelf, true);
  validateDestinationOptions(o);
  const config = destinationConfig(o);
  assert.equal(config.destinationPolicy.allow.length, 3);
  assert.deepEqual(config.destinationPolicy.deny.map((r) => r.text), ["10.0.0.1:22"]);
  assert.deepEqual(config.denySelfDestinations?.always, ["10.2.2.2"]);
  assert.ok(config.denySelfDestinations?.addresses.includes("10.3.3.3"));
  assert.equal(
    destinationConfig({ ...o, knpDestinationDenySelf: false }).denySelfDestinations,
    undefined,
  );
  assert.throws(
    () => validateDestinationOptions({ ...o, knpDestinationDeny: ["10.0.0.1:99999"] }),
    /^KnpError: --knp-destination-deny: invalid destination rule "10\.0\.0\.1:99999": bad port/,
  );
  assert.throws(
    () => validateDestinationOptions({ ...o, knpDestinationSelfAddresses: ["not an address"] }),
    /^KnpError: --knp-destination-self-addresses: /,
  );
});
