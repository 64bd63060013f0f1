/**
 * Unit tests of the routing rules: prefixes and longest-prefix lookup, destination zones
 * (`--knp-zone-cidrs`), the candidate ranking (accept, draining, zone, load) and the power of two
 * choices.
 *
 * @module
 */

import assert from "node:assert/strict";
import { closeResponse, dialRequest, dialResponse, parseAgentIdentifiers } from "@knp/proto";
import { fakeTimers, startPeer } from "@knp/testing/fakes";
import { KnpError } from "@knp/core/errors";
import { memoryPipe } from "@knp/transport/packet_stream";
import { Backend } from "./backend.ts";
import { parseCidr, PrefixTable, targetAddresses } from "./prefix_table.ts";
import { bestOf, pickByChoice, type PickContext, rankOf, ZoneMap } from "./routing.ts";
import { routingConfig, validateRoutingOptions } from "./routing_flags.ts";
import { parseServerOptions } from "./options.ts";
import { ProxyServer } from "./proxy_server.ts";

const settle = () => new Promise<void>((resolve) => setTimeout(resolve, 0));

function backend(agentId: string, identifiers = ""): Backend {
  const [stream] = memoryPipe();
  return new Backend(agentId, parseAgentIdentifiers(identifiers), stream);
}

/** A context with loads from `loads` (by agent ID) and `draws` as the random numbers. */
function context(
  loads: Record<string, number> | undefined,
  draws: number[] = [0],
  extra: Partial<PickContext> = {},
): PickContext & { drawn: number } {
  const ctx: PickContext & { drawn: number } = {
    accept: () => true,
    zone: undefined,
    load: loads && ((b: Backend) => loads[b.agentId] ?? 0),
    drawn: 0,
    random: (): number => draws[Math.min(ctx.drawn++, draws.length - 1)]!,
    ...extra,
  };
  return ctx;
}

function keysOf(list: Backend[]) {
  return { length: list.length, at: (i: number) => [list[i]!] };
}

Deno.test("parseCidr reads IPv4 and IPv6 prefixes and rejects the rest", () => {
  assert.deepEqual(parseCidr("10.1.0.0/16"), { family: 4, network: 0x0a010000n, prefix: 16 });
  assert.deepEqual(parseCidr("fd00::/8"), { family: 6, network: 0xfdn << 120n, prefix: 8 });
  assert.deepEqual(parseCidr("0.0.0.0/0"), { family: 4, network: 0n, prefix: 0 });
  for (const bad of ["10.0.0.0", "10.0.0.0/33", "10.0.0/8", "fd00::/129", "x/8", "10.0.0.0/08"]) {
    assert.equal(parseCidr(bad), undefined, bad);
  }
});

Deno.test("PrefixTable finds the longest prefix holding an address, per family", () => {
  const table = new PrefixTable<string>();
  table.add(parseCidr("10.0.0.0/8")!, "wide");
  table.add(parseCidr("10.1.0.0/16")!, "mid");
  table.add(parseCidr("10.1.2.0/24")!, "narrow");
  table.add(parseCidr("10.1.2.0/24")!, "narrow-2");
  table.add(parseCidr("10.1.2.77/24")!, "narrow"); // host bits ignored, already there
  table.add(parseCidr("fd00::/16")!, "v6");
  const at = (a: string) => table.longest(targetAddresses(a)!);
  assert.deepEqual(at("10.1.2.3:443"), ["narrow", "narrow-2"]);
  assert.deepEqual(at("10.1.9.3:443"), ["mid"]);
  assert.deepEqual(at("10.9.9.9:443"), ["wide"]);
  assert.deepEqual(at("[fd00::1]:443"), ["v6"]);
  assert.equal(at("11.0.0.1:443"), undefined);
  assert.equal(targetAddresses("node1:443"), undefined, "names are not resolved");
  assert.deepEqual(
    [...table.matches(targetAddresses("10.1.2.3:1")!)].map((m) => m.prefix),
    [24, 16, 8],
  );
  table.remove(parseCidr("10.1.2.0/24")!, "narrow");
  table.remove(parseCidr("10.1.2.0/24")!, "narrow-2");
  table.remove(parseCidr("10.1.2.0/24")!, "never-there");
  assert.deepEqual(at("10.1.2.3:443"), ["mid"]);
  assert.equal(table.size, 3);
});

Deno.test("PrefixTable: IPv6 prefixes see IPv4 addresses in their mapped form", () => {
  const table = new PrefixTable<string>();
  table.add(parseCidr("::ffff:0:0/96")!, "mapped");
  assert.deepEqual(table.longest(targetAddresses("10.0.0.1:80")!), ["mapped"]);
  table.add(parseCidr("10.0.0.0/8")!, "v4");
  assert.deepEqual(table.longest(targetAddresses("10.0.0.1:80")!), ["v4"], "IPv4 first");
  assert.deepEqual(table.longest(targetAddresses("[::ffff:10.0.0.1]:80")!), ["v4"]);
});

Deno.test("ZoneMap gives an address the zone of its longest prefix", () => {
  const zones = ZoneMap.parse(["a=10.0.0.0/8", "b=10.2.0.0/16", "c=fd00::/8", "a=10.2.3.0/24"]);
  assert.equal(zones.size, 4);
  assert.equal(zones.zoneOf("10.1.0.1:443"), "a");
  assert.equal(zones.zoneOf("10.2.0.1:443"), "b");
  assert.equal(zones.zoneOf("10.2.3.1:443"), "a");
  assert.equal(zones.zoneOf("[fd00::1]:443"), "c");
  assert.equal(zones.zoneOf("192.168.0.1:443"), undefined);
  assert.equal(zones.zoneOf("kubernetes.default:443"), undefined);
});

Deno.test("ZoneMap rejects a bad item and one CIDR given two zones", () => {
  for (const bad of ["a", "=10.0.0.0/8", "a=10.0.0.0", "a b=10.0.0.0/8", "-a=10.0.0.0/8"]) {
    assert.throws(() => ZoneMap.parse([bad]), { message: new RegExp("is not ZONE=CIDR") }, bad);
  }
  assert.throws(() => ZoneMap.parse(["a=10.0.0.0/8", "b=10.9.0.0/8"]), {
    message: '"b=10.9.0.0/8": 10.9.0.0/8 is already in zone a',
  });
  ZoneMap.parse(["a=10.0.0.0/8", "a=10.0.0.0/8"]);
});

Deno.test("--knp-zone-cidrs parses, validates with the flag name, and configures the core", () => {
  const parsed = parseServerOptions(["--knp-zone-cidrs=a=10.0.0.0/16,b=10.1.0.0/16"], {});
  assert.ok(!("help" in parsed));
  assert.deepEqual(parsed.options.knpZoneCidrs, ["a=10.0.0.0/16", "b=10.1.0.0/16"]);
  assert.equal(routingConfig(parsed.options).zones?.zoneOf("10.1.0.9:1"), "b");
  assert.deepEqual(routingConfig({ knpZoneCidrs: [] }), {});
  validateRoutingOptions({ knpZoneCidrs: [] });
  assert.throws(() => validateRoutingOptions({ knpZoneCidrs: ["a=10.0.0.0/99"] }), (err) => {
    assert.ok(err instanceof KnpError);
    assert.equal(err.code, "INVALID_FLAG");
    assert.match(err.message, /^--knp-zone-cidrs: "a=10.0.0.0\/99" is not ZONE=CIDR/);
    return true;
  });
});

Deno.test("rankOf: rejected, then draining, then out of the zone", () => {
  const here = backend("here", "zone=z1"), away = backend("away", "zone=z2");
  const none = backend("none");
  const ctx = context(undefined, [0], { zone: "z1", accept: (b) => b !== none });
  assert.equal(rankOf(here, ctx), 0);
  assert.equal(rankOf(away, ctx), 1);
  assert.equal(rankOf(none, ctx), undefined);
  here.setDraining();
  away.setDraining();
  assert.equal(rankOf(here, ctx), 2);
  assert.equal(rankOf(away, ctx), 3);
  assert.equal(rankOf(away, context(undefined)), 2, "no destination zone: every agent is in it");
});

Deno.test("bestOf: lowest rank, then least loaded, then the first", () => {
  const [a, b, c] = [backend("a", "zone=z"), backend("b", "zone=z"), backend("c", "zone=y")];
  assert.equal(bestOf([a, b, c], context(undefined))?.backend, a, "no load: the first");
  assert.equal(bestOf([a, b, c], context({ a: 2, b: 1, c: 0 }))?.backend, c);
  assert.equal(bestOf([a, b, c], context({ a: 2, b: 1, c: 0 }, [0], { zone: "z" }))?.backend, b);
  assert.equal(bestOf([a, b], context({ a: 1, b: 1 }))?.backend, a, "a tie keeps the order");
  b.setDraining();
  assert.equal(bestOf([a, b], context({ a: 9, b: 0 }))?.backend, a, "draining loses to load");
  assert.equal(bestOf([a, b], context({}, [0], { accept: (x) => x !== a }))?.backend, b);
  assert.equal(bestOf([a], context({}, [0], { accept: () => false })), undefined);
});

Deno.test("pickByChoice: the less loaded of two random draws wins, the first on a tie", () => {
  const [a, b, c] = [backend("a"), backend("b"), backend("c")];
  const keys = keysOf([a, b, c]);
  // Draws 0 → a, 0.4 → b: b is less loaded; c (idle) was not drawn.
  assert.equal(pickByChoice(keys, context({ a: 5, b: 3, c: 0 }, [0, 0.4])), b);
  assert.equal(pickByChoice(keys, context({ a: 5, b: 3, c: 0 }, [0.4, 0.9])), c);
  assert.equal(pickByChoice(keys, context({ a: 1, b: 1, c: 1 }, [0.4, 0])), b, "tie: first");
  // The second draw never lands on the first agent: it walks on to the next one.
  assert.equal(pickByChoice(keys, context({ a: 5, b: 0, c: 9 }, [0, 0])), b);
});

Deno.test("pickByChoice without loads draws once, as upstream", () => {
  const [a, b, c] = [backend("a"), backend("b"), backend("c")];
  const ctx = context(undefined, [0.5]);
  assert.equal(pickByChoice(keysOf([a, b, c]), ctx), b);
  assert.equal(ctx.drawn, 1);
  assert.equal(pickByChoice(keysOf([]), ctx), undefined);
});

Deno.test("pickByChoice compares only agents of the best rank present", () => {
  const [a, b, c] = [backend("a", "zone=z"), backend("b", "zone=y"), backend("c", "zone=z")];
  const keys = keysOf([a, b, c]);
  // b is idle but out of the zone: the draws compare a and c only.
  assert.equal(pickByChoice(keys, context({ a: 4, b: 0, c: 3 }, [0.4, 0.4], { zone: "z" })), c);
  // No agent in zone x: all three are equal candidates again.
  assert.equal(pickByChoice(keys, context({ a: 4, b: 0, c: 3 }, [0, 0.4], { zone: "x" })), b);
  a.setDraining();
  c.setDraining();
  // Non-draining b beats the zone.
  assert.equal(pickByChoice(keys, context({ a: 0, b: 9, c: 0 }, [0, 0], { zone: "z" })), b);
  b.setDraining();
  assert.equal(pickByChoice(keys, context({ a: 3, b: 0, c: 1 }, [0, 0], { zone: "z" })), c);
});

Deno.test("pickByChoice finds the one accepted agent among many, whatever the draws", () => {
  const all = Array.from({ length: 50 }, (_, i) => backend(`a${i}`));
  const only = all[37]!;
  for (const r of [0, 0.1, 0.5, 0.74, 0.76, 0.99]) {
    const ctx = context({}, [r, r], { accept: (b) => b === only });
    assert.equal(pickByChoice(keysOf(all), ctx), only, String(r));
  }
  assert.equal(pickByChoice(keysOf(all), context({}, [0], { accept: () => false })), undefined);
});

Deno.test("ProxyServer counts an agent's open connections and routes by them", async () => {
  const server = new ProxyServer({ serverId: "s1", timers: fakeTimers().timers, random: () => 0 });
  const agents = ["a", "b"].map((id) => {
    const [serverEnd, agentEnd] = memoryPipe();
    const backend = server.addBackend(id, parseAgentIdentifiers(""), serverEnd);
    return { backend, peer: startPeer(agentEnd) };
  });
  const [a, b] = [agents[0]!, agents[1]!];
  const dial = (id: bigint) => {
    const [clientEnd, serverEnd] = memoryPipe();
    server.serveFrontend(serverEnd);
    const peer = startPeer(clientEnd);
    peer.end.send(dialRequest("10.0.0.1:80", id));
    return peer;
  };
  const first = dial(1n); // draws a (and b): both idle, the first draw wins
  await settle();
  assert.deepEqual([a.backend.openConnections, b.backend.openConnections], [1, 0]);
  a.peer.end.send(dialResponse(1n, 7n)); // established: still open
  dial(2n); // draws a, then b: b is less loaded
  await settle();
  assert.deepEqual([a.backend.openConnections, b.backend.openConnections], [1, 1]);
  assert.equal(b.peer.of("DIAL_REQ").length, 1);
  a.peer.end.send(closeResponse(7n)); // the agent closes it: the frontend stream ends
  await settle();
  assert.equal(first.of("CLOSE_RSP").length, 1);
  assert.deepEqual([a.backend.openConnections, b.backend.openConnections], [0, 1]);
  b.peer.end.send(dialResponse(2n, 0n, "connection refused")); // a failed dial ends too
  await settle();
  assert.deepEqual([a.backend.openConnections, b.backend.openConnections], [0, 0]);
  server.close();
  await settle();
});
