import assert from "node:assert/strict";
import {
  type DnsResolver,
  mayNameSeveral,
  resolveServerAddresses,
  serverAddressesOf,
  serverHostEntries,
} from "./server_addresses.ts";

/** A resolver answering from a table (the real one asks DNS). */
function table(records: Record<string, { A?: string[]; AAAA?: string[] }>): {
  resolve: DnsResolver;
  asked: string[];
} {
  const asked: string[] = [];
  return {
    asked,
    resolve: (name, type) => {
      asked.push(`${name}/${type}`);
      const found = records[name]?.[type];
      return found ? Promise.resolve(found) : Promise.reject(new Error("NXDOMAIN"));
    },
  };
}

Deno.test("serverHostEntries() splits a comma list and drops blanks", () => {
  assert.deepEqual(serverHostEntries(" a , b,,c "), ["a", "b", "c"]);
  assert.deepEqual(serverHostEntries("127.0.0.1"), ["127.0.0.1"]);
});

Deno.test("resolveServerAddresses() keeps IP literals and lists each record of a name", async () => {
  const dns = table({ "kas.example": { A: ["10.0.0.1", "10.0.0.2"], AAAA: ["fd00::1"] } });
  assert.deepEqual(await resolveServerAddresses("kas.example", dns.resolve), [
    { host: "10.0.0.1", serverName: "kas.example" },
    { host: "10.0.0.2", serverName: "kas.example" },
    { host: "fd00::1", serverName: "kas.example" },
  ]);
  assert.deepEqual(await resolveServerAddresses("127.0.0.1,[::1],127.0.0.1", dns.resolve), [
    { host: "127.0.0.1", serverName: "127.0.0.1" },
    { host: "::1", serverName: "::1" },
  ]);
  assert.deepEqual(
    dns.asked,
    ["kas.example/A", "kas.example/AAAA"],
    "IP literals are not looked up",
  );
});

Deno.test("resolveServerAddresses() leaves a name with one record or none to the system resolver", async () => {
  const dns = table({ "lb.example": { A: ["10.0.0.9"] } });
  assert.deepEqual(await resolveServerAddresses("lb.example,hosts-only,localhost", dns.resolve), [
    { host: "lb.example", serverName: "lb.example" },
    { host: "hosts-only", serverName: "hosts-only" },
    { host: "localhost", serverName: "localhost" },
  ]);
  assert.ok(!dns.asked.some((q) => q.startsWith("localhost")), "localhost is never asked of DNS");
});

Deno.test("mayNameSeveral() is false for one IP or localhost only", () => {
  assert.equal(mayNameSeveral("127.0.0.1"), false);
  assert.equal(mayNameSeveral("[::1]"), false);
  assert.equal(mayNameSeveral("localhost"), false);
  assert.equal(mayNameSeveral("konnectivity.kube-system.svc"), true);
  assert.equal(mayNameSeveral("127.0.0.1,127.0.0.2"), true);
  assert.deepEqual(serverAddressesOf("127.0.0.1"), {});
  assert.equal(typeof serverAddressesOf("a,b").addresses, "function");
});
