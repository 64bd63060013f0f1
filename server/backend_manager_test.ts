import assert from "node:assert/strict";
import { parseAgentIdentifiers } from "@knp/proto";
import { memoryPipe } from "@knp/transport/packet_stream";
import { Backend } from "./backend.ts";
import { BackendManager, BackendStorage, parseProxyStrategies } from "./backend_manager.ts";

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
  const manager = new BackendManager(["destHost", "default"], () => 0);
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
  const manager = new BackendManager(["destHost", "defaultRoute"], () => 0);
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
  const manager = new BackendManager(["default", "destHost", "defaultRoute"], () => 0);
  const b = backend("a", "host=node1&default-route=true");
  manager.add(b);
  assert.deepEqual(manager.storages.map((s) => s.size), [1, 1, 1]);
  manager.remove(b);
  assert.deepEqual(manager.storages.map((s) => s.size), [0, 0, 0]);
  assert.equal(manager.ready, false);
});
