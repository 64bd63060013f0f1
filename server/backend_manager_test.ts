import assert from "node:assert/strict";
import { parseAgentIdentifiers } from "@knp/proto";
import { memoryPipe } from "@knp/transport/packet_stream";
import { Backend } from "./backend.ts";
import {
  BackendManager,
  BackendStorage,
  CidrStorage,
  parseProxyStrategies,
} from "./backend_manager.ts";
import { ZoneMap } from "./routing.ts";

/** A backend over an unstarted in-memory stream (no packets flow in these tests). */
function backend(agentId: string, identifiers = ""): Backend {
  const [stream] = memoryPipe();
  return new Backend(agentId, parseAgentIdentifiers(identifiers), stream);
}

/** A `random()` that returns the given values in turn (then repeats the last). */
function sequence(...values: number[]): () => number {
  let i = 0;
  return () => values[Math.min(i++, values.length - 1)]!;
}

Deno.test("parseProxyStrategies returns the strategies in order", () => {
  assert.deepEqual(parseProxyStrategies("default"), ["default"]);
  assert.deepEqual(parseProxyStrategies("destHost,default"), ["destHost", "default"]);
  assert.deepEqual(parseProxyStrategies("destHost,defaultRoute"), ["destHost", "defaultRoute"]);
});

Deno.test("parseProxyStrategies knows knp's destCIDR", () => {
  assert.deepEqual(parseProxyStrategies("destHost,destCIDR,default"), [
    "destHost",
    "destCIDR",
    "default",
  ]);
  assert.throws(() => parseProxyStrategies("destCidr"), {
    message: "unknown proxy strategy: destCidr",
  });
});

Deno.test("parseProxyStrategies skips empty items", () => {
  assert.deepEqual(parseProxyStrategies(",destHost,,default,"), ["destHost", "default"]);
});

Deno.test("parseProxyStrategies rejects an unknown strategy with upstream's message", () => {
  assert.throws(() => parseProxyStrategies("destHost,random"), {
    message: "unknown proxy strategy: random",
  });
  assert.throws(() => parseProxyStrategies("Default"), {
    message: "unknown proxy strategy: Default",
  });
});

Deno.test("parseProxyStrategies rejects an empty list", () => {
  for (const text of ["", ",", ",,,"]) {
    assert.throws(() => parseProxyStrategies(text), {
      message: "proxy strategies cannot be empty",
    }, JSON.stringify(text));
  }
});

Deno.test("BackendStorage destHost picks by host, ipv4 or ipv6 with the port stripped", () => {
  const storage = new BackendStorage("destHost");
  const node1 = backend("a1", "host=node1&ipv4=10.0.0.7&ipv6=fd00%3A%3A7&cidr=10.0.0.0%2F24");
  const node2 = backend("a2", "host=node2");
  storage.add(node1);
  storage.add(node2);
  assert.equal(storage.pick("node1:10250"), node1);
  assert.equal(storage.pick("node1"), node1);
  assert.equal(storage.pick("10.0.0.7:443"), node1);
  assert.equal(storage.pick("[fd00::7]:443"), node1);
  assert.equal(storage.pick("node2:22"), node2);
  assert.equal(storage.pick("node3:22"), undefined);
  assert.equal(storage.pick("10.0.0.0/24:1"), undefined, "cidr identifiers are not keys");
  assert.equal(storage.pick("a1:1"), undefined, "agent IDs are not keys");
  assert.equal(storage.size, 4, "node1, 10.0.0.7, fd00::7, node2");
});

Deno.test("BackendStorage destHost prefers a non-draining backend under the same key", () => {
  const storage = new BackendStorage("destHost");
  const first = backend("a1", "host=node1");
  const second = backend("a2", "host=node1");
  storage.add(first);
  storage.add(second);
  assert.equal(storage.size, 1);
  assert.equal(storage.pick("node1:1"), first);
  first.setDraining();
  assert.equal(storage.pick("node1:1"), second);
  second.setDraining();
  assert.equal(storage.pick("node1:1"), first, "all draining: the first one");
});

Deno.test("BackendStorage defaultRoute holds only agents with default-route=true", () => {
  const storage = new BackendStorage("defaultRoute");
  const plain = backend("plain", "host=n1");
  const routed = backend("routed", "default-route=true");
  const off = backend("off", "default-route=false");
  storage.add(plain);
  storage.add(off);
  assert.equal(storage.size, 0);
  assert.equal(storage.pick("anything:1"), undefined);
  storage.add(routed);
  assert.equal(storage.size, 1);
  assert.equal(storage.pick("anything:1"), routed);
});

Deno.test("BackendStorage default picks a random agent starting at the random index", () => {
  const values = [0, 0.4, 0.9];
  const storage = new BackendStorage("default", sequence(...values));
  const a = backend("a"), b = backend("b"), c = backend("c");
  storage.add(a);
  storage.add(b);
  storage.add(c);
  assert.equal(storage.pick("x:1"), a);
  assert.equal(storage.pick("x:1"), b);
  assert.equal(storage.pick("x:1"), c);
});

Deno.test("BackendStorage default prefers a non-draining agent and falls back to a draining one", () => {
  const storage = new BackendStorage("default", () => 0);
  const a = backend("a"), b = backend("b");
  storage.add(a);
  storage.add(b);
  a.setDraining();
  assert.equal(storage.pick("x:1"), b);
  b.setDraining();
  assert.equal(storage.pick("x:1"), a, "every agent draining: the first one seen");
});

Deno.test("BackendStorage default keys by agent ID and uses the first stream of an agent", () => {
  const storage = new BackendStorage("default", () => 0);
  const first = backend("same");
  const second = backend("same");
  storage.add(first);
  storage.add(second);
  storage.add(first); // adding again is a no-op
  assert.equal(storage.size, 1);
  assert.equal(storage.pick("x:1"), first);
  storage.remove(first);
  assert.equal(storage.size, 1, "the key stays while another stream has it");
  assert.equal(storage.pick("x:1"), second);
  storage.remove(second);
  assert.equal(storage.size, 0);
  assert.equal(storage.pick("x:1"), undefined);
});

Deno.test("BackendStorage remove keeps every other agent reachable", () => {
  let next = 0;
  const storage = new BackendStorage("default", () => next);
  const all = ["a", "b", "c", "d"].map((id) => backend(id));
  for (const b of all) storage.add(b);
  storage.remove(all[0]!);
  storage.remove(all[0]!); // removing twice is harmless
  storage.remove(backend("never-added"));
  assert.equal(storage.size, 3);
  const seen = new Set<string>();
  for (const r of [0, 0.34, 0.67, 0.99]) {
    next = r;
    seen.add(storage.pick("x:1")!.agentId);
  }
  assert.deepEqual([...seen].sort(), ["b", "c", "d"]);
  storage.remove(all[3]!); // the last key
  storage.remove(all[2]!);
  assert.equal(storage.size, 1);
  next = 0.99;
  assert.equal(storage.pick("x:1"), all[1]);
});

Deno.test("BackendManager tries strategies in order and falls back to the next one", () => {
  const manager = new BackendManager(["destHost", "default"], { random: () => 0 });
  const node1 = backend("n1", "host=node1");
  const other = backend("other");
  manager.add(other);
  manager.add(node1);
  assert.equal(manager.pick("node1:10250"), node1, "destHost match wins");
  assert.equal(manager.pick("elsewhere:80"), other, "no match: the default strategy");
  manager.remove(other);
  assert.equal(manager.pick("elsewhere:80"), node1, "default strategy holds node1 too");
});

Deno.test("BackendManager returns undefined when no strategy has a backend", () => {
  const manager = new BackendManager(["destHost", "defaultRoute"], { random: () => 0 });
  manager.add(backend("n1", "host=node1"));
  assert.equal(manager.pick("elsewhere:80"), undefined);
  const routed = backend("r", "default-route=true");
  manager.add(routed);
  assert.equal(manager.pick("elsewhere:80"), routed);
});

Deno.test("BackendManager is ready iff the first strategy has a backend", () => {
  const manager = new BackendManager(["destHost", "default"]);
  assert.equal(manager.ready, false);
  const plain = backend("plain");
  manager.add(plain);
  assert.equal(manager.ready, false, "an agent without host identifiers is not enough");
  const node = backend("n1", "ipv4=10.0.0.1");
  manager.add(node);
  assert.equal(manager.ready, true);
  manager.remove(node);
  assert.equal(manager.ready, false);
  manager.remove(plain);
  assert.equal(manager.pick("x:1"), undefined);
});

Deno.test("BackendManager removal takes a backend out of every strategy", () => {
  const manager = new BackendManager(["default", "destHost", "defaultRoute"], { random: () => 0 });
  const b = backend("a", "host=node1&default-route=true");
  manager.add(b);
  assert.deepEqual(manager.storages.map((s) => s.size), [1, 1, 1]);
  manager.remove(b);
  assert.deepEqual(manager.storages.map((s) => s.size), [0, 0, 0]);
  assert.equal(manager.ready, false);
});

/** Open connections by agent ID, as the core counts them. */
function loads(table: Record<string, number>): (b: Backend) => number {
  return (b) => table[b.agentId] ?? 0;
}

Deno.test("CidrStorage: the longest prefix holding the IP wins; names match nothing", () => {
  const storage = new CidrStorage(() => 0);
  const wide = backend("wide", "cidr=10.0.0.0%2F8");
  const narrow = backend("narrow", "cidr=10.1.0.0%2F16&cidr=fd00%3A%3A%2F64");
  const bad = backend("bad", "cidr=10.1.2.0%2F99");
  for (const b of [wide, narrow, bad]) storage.add(b);
  assert.equal(storage.size, 3, "10/8, 10.1/16, fd00::/64; the bad cidr is ignored");
  assert.equal(storage.pick("10.1.2.3:443"), narrow);
  assert.equal(storage.pick("10.2.0.1:443"), wide);
  assert.equal(storage.pick("10.1:443"), wide, "10.1 is 10.0.0.1, as a resolver reads it");
  assert.equal(storage.pick("[fd00::9]:443"), narrow);
  assert.equal(storage.pick("11.0.0.1:443"), undefined);
  assert.equal(storage.pick("node1:443"), undefined);
  storage.remove(narrow);
  assert.equal(storage.pick("10.1.2.3:443"), wide);
  assert.equal(storage.size, 1);
});

Deno.test("CidrStorage: a draining or rejected longest prefix gives way to a shorter one", () => {
  const storage = new CidrStorage(() => 0);
  const wide = backend("wide", "cidr=10.0.0.0%2F8");
  const narrow = backend("narrow", "cidr=10.1.0.0%2F16");
  storage.add(wide);
  storage.add(narrow);
  assert.equal(storage.pick("10.1.0.1:1", { accept: (b) => b !== narrow }), wide);
  narrow.setDraining();
  assert.equal(storage.pick("10.1.0.1:1"), wide, "non-draining beats a longer prefix");
  wide.setDraining();
  assert.equal(storage.pick("10.1.0.1:1"), narrow, "all draining: the longest prefix");
});

Deno.test("CidrStorage: agents of one prefix are chosen by zone, then load", () => {
  const storage = new CidrStorage(() => 0);
  const a = backend("a", "cidr=10.0.0.0%2F8&zone=z1");
  const b = backend("b", "cidr=10.0.0.0%2F8&zone=z2");
  const c = backend("c", "cidr=10.0.0.0%2F8&zone=z2");
  for (const x of [a, b, c]) storage.add(x);
  const load = loads({ a: 0, b: 5, c: 2 });
  assert.equal(storage.pick("10.0.0.1:1", { load }), a);
  assert.equal(storage.pick("10.0.0.1:1", { load, zone: "z2" }), c);
  assert.equal(storage.pick("10.0.0.1:1", { load, zone: "z9" }), a, "no agent in z9");
});

Deno.test("BackendManager: destCIDR sits in the strategy order like the others", () => {
  const manager = new BackendManager(["destHost", "destCIDR", "default"], { random: () => 0 });
  const host = backend("host", "ipv4=10.1.0.5");
  const cidr = backend("cidr", "cidr=10.1.0.0%2F16");
  const other = backend("other");
  for (const b of [other, host, cidr]) manager.add(b);
  assert.equal(manager.pick("10.1.0.5:22"), host, "destHost first");
  assert.equal(manager.pick("10.1.0.6:22"), cidr);
  assert.equal(manager.pick("10.2.0.6:22"), other);
  const cidrFirst = new BackendManager(["destCIDR"], {});
  assert.equal(cidrFirst.ready, false);
  cidrFirst.add(cidr);
  assert.equal(cidrFirst.ready, true);
});

Deno.test("BackendManager prefers agents in the destination's zone, else any agent", () => {
  const zones = ZoneMap.parse(["east=10.0.0.0/16", "west=10.1.0.0/16"]);
  const manager = new BackendManager(["default"], { random: () => 0, zones, load: () => 0 });
  const east = backend("east", "zone=east");
  const west = backend("west", "zone=west");
  const plain = backend("plain");
  for (const b of [plain, east, west]) manager.add(b);
  for (let i = 0; i < 3; i++) {
    assert.equal(manager.pick("10.0.3.4:443"), east);
    assert.equal(manager.pick("10.1.3.4:443"), west);
  }
  assert.equal(manager.pick("10.9.0.1:443"), plain, "no zone known: the first draw");
  manager.remove(west);
  assert.equal(manager.pick("10.1.3.4:443"), plain, "no agent in west: any agent");
  east.setDraining();
  assert.equal(manager.pick("10.0.3.4:443"), plain, "a draining agent loses its zone's preference");
});

Deno.test("BackendManager destHost: several agents of one host are chosen by zone and load", () => {
  const zones = ZoneMap.parse(["east=10.0.0.0/16"]);
  const table = { a: 3, b: 1, c: 0 };
  const manager = new BackendManager(["destHost"], { zones, load: loads(table) });
  const a = backend("a", "ipv4=10.0.0.9&zone=east");
  const b = backend("b", "ipv4=10.0.0.9&zone=east");
  const c = backend("c", "ipv4=10.0.0.9&zone=west");
  for (const x of [a, b, c]) manager.add(x);
  assert.equal(manager.pick("10.0.0.9:10250"), b, "in the zone, less loaded");
  table.b = 3;
  assert.equal(manager.pick("10.0.0.9:10250"), a, "a tie keeps upstream's order");
});

Deno.test("BackendManager picks the less loaded of two draws (power of two choices)", () => {
  const draws = [0, 0.5];
  const table = { a: 4, b: 1 };
  const manager = new BackendManager(["default"], {
    random: () => draws.shift() ?? 0,
    load: loads(table),
  });
  const a = backend("a"), b = backend("b");
  manager.add(a);
  manager.add(b);
  assert.equal(manager.pick("x:1"), b);
  table.b = 9;
  assert.equal(manager.pick("x:1"), a);
  a.setDraining();
  assert.equal(manager.pick("x:1"), b, "a draining agent loses whatever its load");
  b.setDraining();
  assert.equal(manager.pick("x:1"), a, "all draining: by load again");
});

Deno.test("BackendManager skips rejected agents, then tries the next strategy", () => {
  const manager = new BackendManager(["destHost", "default"], { random: () => 0 });
  const node = backend("node", "host=node1");
  const others = ["o1", "o2", "o3"].map((id) => backend(id));
  for (const b of [node, ...others]) manager.add(b);
  const full = new Set<Backend>([node, others[0]!, others[1]!]);
  const accept = (b: Backend) => !full.has(b);
  for (let i = 0; i < 5; i++) assert.equal(manager.pick("node1:10250", accept), others[2]);
  full.add(others[2]!);
  assert.equal(manager.pick("node1:10250", accept), undefined);
  assert.equal(manager.pick("node1:10250"), node, "without the predicate: the strategies' pick");
});
