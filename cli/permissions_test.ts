import assert from "node:assert/strict";
import { KnpError } from "@knp/core/errors";
import {
  flagEnvNeeds,
  listenNeeds,
  missingPermissionLine,
  notCapableLine,
  permissionFlags,
  type PermissionNeed,
  permissionPlan,
} from "./permissions.ts";
import type { FlagSpec } from "./flags.ts";

Deno.test("listenNeeds() uses the fallback for an empty host, brackets IPv6, adds bare names", () => {
  assert.deepEqual(listenNeeds("--p", "", 8091, "0.0.0.0"), [
    { kind: "net", value: "0.0.0.0:8091", reason: "--p" },
  ]);
  assert.deepEqual(listenNeeds("--p", "::1", 0, "0.0.0.0"), [
    { kind: "net", value: "[::1]:0", reason: "--p" },
  ]);
  assert.deepEqual(listenNeeds("--p", "localhost", 9, "0.0.0.0").map((n) => n.value), [
    "localhost:9",
    "localhost",
  ]);
});

Deno.test("permissionFlags() groups by kind, dedupes, and lets a whole-kind need win", () => {
  const needs: PermissionNeed[] = [
    { kind: "read", value: "/a", reason: "x" },
    { kind: "net", value: "h:1", reason: "x" },
    { kind: "read", value: "/a", reason: "y" },
    { kind: "read", value: "/b", reason: "y" },
    { kind: "env", value: "E", reason: "z" },
  ];
  assert.deepEqual(permissionFlags(needs), [
    "--allow-env=E",
    "--allow-net=h:1",
    "--allow-read=/a,/b",
  ]);
  assert.deepEqual(permissionFlags([...needs, { kind: "net", reason: "all" }])[1], "--allow-net");
  assert.deepEqual(permissionFlags([]), []);
});

Deno.test("missingPermissionLine() names the first reason's flag and says when more is missing", () => {
  const missing: PermissionNeed[] = [
    { kind: "write", value: "/run/k.sock", reason: "--uds-name" },
    { kind: "read", value: "/pki/c.crt", reason: "--cluster-cert" },
  ];
  assert.equal(
    missingPermissionLine("proxy-server", missing.slice(0, 1)),
    "proxy-server: --uds-name needs --allow-write=/run/k.sock",
  );
  assert.match(
    missingPermissionLine("proxy-server", missing),
    /^proxy-server: --uds-name needs --allow-write=\/run\/k\.sock \(and more: --knp-print-permissions/,
  );
});

Deno.test("notCapableLine() finds a NotCapable in the cause chain and names the flag", () => {
  const denied = new Deno.errors.NotCapable(
    'Requires read access to "/pki/c.crt", run again with the --allow-read flag',
  );
  const wrapped = new KnpError("CONFIG", "cannot listen for agents", { cause: denied });
  const needs: PermissionNeed[] = [{ kind: "read", value: "/pki/c.crt", reason: "--cluster-cert" }];
  assert.equal(
    notCapableLine("proxy-server", wrapped, needs),
    "proxy-server: --cluster-cert needs --allow-read=/pki/c.crt",
  );
  assert.equal(
    notCapableLine("proxy-server", denied, []),
    "proxy-server: the process needs --allow-read=/pki/c.crt",
  );
  assert.equal(notCapableLine("proxy-server", new Error("connection refused"), needs), undefined);
});

const SPECS: FlagSpec[] = [
  { name: "path", type: "string", default: "", help: "p", implemented: true },
  { name: "id", type: "string", default: "", env: "X_ID", help: "i", implemented: true },
  { name: "knp-print-permissions", type: "bool", default: false, help: "p", implemented: true },
];

Deno.test("permissionPlan() adds env fallbacks only for flags not given; help/invalid have none", () => {
  const compute = (
    o: { path: string },
  ) => [{ kind: "read" as const, value: o.path, reason: "--path" }];
  const plan = permissionPlan(SPECS, ["--path=/f"], compute);
  assert.deepEqual(plan, {
    needs: [
      { kind: "read", value: "/f", reason: "--path" },
      { kind: "env", value: "X_ID", reason: "the default of --id ($X_ID)" },
    ],
    print: false,
  });
  const given = permissionPlan(SPECS, ["--id=a", "--knp-print-permissions"], compute);
  assert.ok(given.needs !== undefined && given.print);
  assert.deepEqual(given.needs.map((n) => n.kind), ["read"]);
  assert.deepEqual(permissionPlan(SPECS, ["--help"], compute), { reason: "help" });
  assert.deepEqual(permissionPlan(SPECS, ["--nope"], compute), { reason: "invalid" });
  assert.deepEqual(flagEnvNeeds(SPECS, new Set(["id"])), []);
});
