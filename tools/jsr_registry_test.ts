import assert from "node:assert/strict";
import { bareResolver, unfurl, type WorkspaceMember } from "./jsr_registry.ts";

function member(name: string, exports: Record<string, string>, imports = {}): WorkspaceMember {
  return { name, version: "0.2.0", dir: `/ws/${name}`, exports, imports, publish: true };
}

const core = member("@knp/core", { ".": "./mod.ts", "./errors": "./errors.ts" });
const transport = member("@knp/transport", { ".": "./mod.ts" }, {
  "@grpc/grpc-js": "npm:@grpc/grpc-js@1.14.7",
});
const resolve = bareResolver(transport, [core, transport], {
  "@grpc/grpc-js": "npm:@grpc/grpc-js@1.0.0",
  "lib/": "jsr:@scope/lib@1/",
});

Deno.test("bareResolver: members become jsr: ranges, import maps their targets", () => {
  assert.equal(resolve("@knp/core"), "jsr:@knp/core@^0.2.0");
  assert.equal(resolve("@knp/core/errors"), "jsr:@knp/core@^0.2.0/errors");
  assert.equal(resolve("@knp/core/missing"), undefined);
  // The member's own map wins over the root's.
  assert.equal(resolve("@grpc/grpc-js"), "npm:@grpc/grpc-js@1.14.7");
  assert.equal(resolve("@grpc/grpc-js/build/src/x"), "npm:@grpc/grpc-js@1.14.7/build/src/x");
  assert.equal(resolve("lib/a.ts"), "jsr:@scope/lib@1/a.ts");
  assert.equal(resolve("unknown"), undefined);
});

Deno.test("unfurl rewrites every import form and keeps other specifiers", () => {
  const source = [
    `import { KnpError } from "@knp/core/errors";`,
    `import type { X } from '@knp/core';`,
    `export * from "@knp/core";`,
    `export {\n  a,\n} from "@grpc/grpc-js";`,
    `import "@knp/core";`,
    `const m = await import("@knp/core/errors");`,
    `import { b } from "./local.ts";`,
    `import { Buffer } from "node:buffer";`,
    `import { c } from "npm:left@1";`,
    `import { d } from "nowhere";`,
    `const text = "@knp/core";`,
  ].join("\n");
  const { text, unresolved } = unfurl(source, resolve);
  assert.equal(
    text,
    [
      `import { KnpError } from "jsr:@knp/core@^0.2.0/errors";`,
      `import type { X } from 'jsr:@knp/core@^0.2.0';`,
      `export * from "jsr:@knp/core@^0.2.0";`,
      `export {\n  a,\n} from "npm:@grpc/grpc-js@1.14.7";`,
      `import "jsr:@knp/core@^0.2.0";`,
      `const m = await import("jsr:@knp/core@^0.2.0/errors");`,
      `import { b } from "./local.ts";`,
      `import { Buffer } from "node:buffer";`,
      `import { c } from "npm:left@1";`,
      `import { d } from "nowhere";`,
      `const text = "@knp/core";`,
    ].join("\n"),
  );
  assert.deepEqual(unresolved, ["nowhere"]);
});
