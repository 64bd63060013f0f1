// deno-lint-ignore-file no-console -- the command-line entry point reports what it built
/**
 * Builds a directory laid out as a JSR registry from the workspace, so `jsr:@knp/…` can be run
 * offline with `JSR_URL` pointing at {@linkcode serveRegistry}.
 *
 * It does to each package what `deno publish` does:
 * - the files are exactly the ones `deno publish --dry-run` lists for that package;
 * - bare specifiers are "unfurled": workspace members become `jsr:@knp/<name>@^<version>[/sub]`,
 *   import-map entries (the member's, then the root's) their full `npm:`/`jsr:` specifiers.
 *
 * Layout: `@scope/name/meta.json`, `@scope/name/<version>_meta.json` (manifest with sizes and
 * sha256 checksums, and the exports) and the files under `@scope/name/<version>/`.
 *
 * Usage: `deno run -A tools/jsr_registry.ts <out-dir>` builds; add `--serve` to serve it on
 * 127.0.0.1 (the URL is printed) until interrupted.
 *
 * @module
 */

import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** One workspace member as its deno.json describes it. */
export interface WorkspaceMember {
  /** "@scope/name" */
  name: string;
  version: string;
  /** Absolute directory of the member. */
  dir: string;
  /** deno.json `exports`, normalised to an object. */
  exports: Record<string, string>;
  /** The member's own import map entries. */
  imports: Record<string, string>;
  /** False when `"publish": false`. */
  publish: boolean;
}

/** What {@linkcode buildRegistry} wrote for one package. */
export interface BuiltPackage {
  name: string;
  version: string;
  /** Package-relative paths ("/mod.ts"), sorted. */
  files: string[];
  /** Bare specifiers that no import map resolves (`"file: specifier"`); should be empty. */
  unresolved: string[];
}

interface DenoJson {
  name?: string;
  version?: string;
  exports?: string | Record<string, string>;
  imports?: Record<string, string>;
  publish?: unknown;
  workspace?: string[];
}

async function readDenoJson(dir: string): Promise<DenoJson> {
  return JSON.parse(await Deno.readTextFile(join(dir, "deno.json"))) as DenoJson;
}

/** Reads the root deno.json and its members' (members without a name are skipped). */
export async function readWorkspace(
  root: string,
): Promise<{ imports: Record<string, string>; members: WorkspaceMember[] }> {
  const config = await readDenoJson(root);
  const members: WorkspaceMember[] = [];
  for (const path of config.workspace ?? []) {
    const dir = resolve(root, path);
    const member = await readDenoJson(dir);
    if (member.name === undefined) continue;
    const exports = typeof member.exports === "string"
      ? { ".": member.exports }
      : member.exports ?? {};
    members.push({
      name: member.name,
      version: member.version ?? "0.0.0",
      dir,
      exports,
      imports: member.imports ?? {},
      publish: member.publish !== false,
    });
  }
  return { imports: config.imports ?? {}, members };
}

/**
 * Runs `deno publish --dry-run` in `root` and returns, per package name, the absolute paths of
 * the files it would publish. With `strict`, the dry run also type-checks and rejects slow types,
 * as a real publish does.
 *
 * @throws {Error} when the dry run fails (with its output)
 */
export async function publishedFiles(
  root: string,
  options: { strict?: boolean } = {},
): Promise<Map<string, string[]>> {
  const relaxed = options.strict ? [] : ["--no-check", "--allow-slow-types"];
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["publish", "--dry-run", "--allow-dirty", ...relaxed],
    cwd: root,
    env: { NO_COLOR: "1" },
    stdin: "null",
  }).output();
  const text = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
  if (!output.success) throw new Error(`deno publish --dry-run failed:\n${text}`);
  const files = new Map<string, string[]>();
  let current: string[] | undefined;
  for (const line of text.split("\n")) {
    const header = /^Simulating publish of (@[^/\s]+\/[^@\s]+)@\S+ with files:/.exec(line);
    if (header?.[1] !== undefined) {
      current = [];
      files.set(header[1], current);
      continue;
    }
    const file = /^\s+(file:\/\/\S+) \(/.exec(line);
    if (file?.[1] !== undefined && current) current.push(fileURLToPath(file[1]));
    else if (!/^\s/.test(line)) current = undefined;
  }
  return files;
}

const KEEP = /^(\.{1,2}\/|\/|node:|npm:|jsr:|https?:|data:|file:)/;

/**
 * A resolver of bare specifiers for one member: workspace members to `jsr:` specifiers, then the
 * member's import map, then the root's. Returns undefined for what it cannot resolve.
 */
export function bareResolver(
  member: WorkspaceMember,
  members: readonly WorkspaceMember[],
  rootImports: Record<string, string>,
): (specifier: string) => string | undefined {
  const maps = [member.imports, rootImports];
  return (specifier) => {
    for (const m of members) {
      if (specifier !== m.name && !specifier.startsWith(`${m.name}/`)) continue;
      const sub = specifier.slice(m.name.length);
      if (sub !== "" && m.exports[`.${sub}`] === undefined) return undefined;
      return `jsr:${m.name}@^${m.version}${sub}`;
    }
    for (const map of maps) {
      const exact = map[specifier];
      if (exact !== undefined) return KEEP.test(exact) ? exact : undefined;
    }
    for (const map of maps) {
      for (const [key, value] of Object.entries(map)) {
        if (key.endsWith("/") && specifier.startsWith(key)) {
          return value + specifier.slice(key.length);
        }
        if (/^(npm|jsr):/.test(value) && specifier.startsWith(`${key}/`)) {
          return value + specifier.slice(key.length);
        }
      }
    }
    return undefined;
  };
}

// `from "x"`, `import "x"`, `import("x")`, `@ts-types="x"` (also in `export … from`).
// A keyword right after a quote is a string's content (`["from", ""]`), not syntax.
const SPECIFIER =
  /((?<!["'])\bfrom\s*|(?<!["'])\bimport\s*\(\s*|(?<!["'])\bimport\s+|@ts-types=)(["'])([^"'\r\n]+)\2/g;

/**
 * Rewrites the bare specifiers of `source` with `resolveBare`; returns the new text and the bare
 * specifiers it could not resolve.
 */
export function unfurl(
  source: string,
  resolveBare: (specifier: string) => string | undefined,
): { text: string; unresolved: string[] } {
  const unresolved: string[] = [];
  const text = source.replace(SPECIFIER, (all, lead: string, quote: string, spec: string) => {
    if (KEEP.test(spec)) return all;
    const full = resolveBare(spec);
    if (full === undefined) {
      unresolved.push(spec);
      return all;
    }
    return `${lead}${quote}${full}${quote}`;
  });
  return { text, unresolved };
}

const SCRIPT = /\.(ts|tsx|mts|js|jsx|mjs)$/;

async function sha256(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return digest.toHex();
}

async function writeJson(path: string, value: unknown): Promise<void> {
  await Deno.mkdir(dirname(path), { recursive: true });
  await Deno.writeTextFile(path, JSON.stringify(value, null, 2) + "\n");
}

async function writePackage(
  outDir: string,
  member: WorkspaceMember,
  files: readonly string[],
  resolveBare: (specifier: string) => string | undefined,
): Promise<BuiltPackage> {
  const base = join(outDir, member.name, member.version);
  const manifest: Record<string, { size: number; checksum: string }> = {};
  const unresolved: string[] = [];
  for (const file of files) {
    const path = `/${relative(member.dir, file).replaceAll("\\", "/")}`;
    let bytes: Uint8Array<ArrayBuffer> = await Deno.readFile(file);
    if (SCRIPT.test(file)) {
      const result = unfurl(new TextDecoder().decode(bytes), resolveBare);
      unresolved.push(...result.unresolved.map((s) => `${path}: ${s}`));
      bytes = new TextEncoder().encode(result.text);
    }
    await Deno.mkdir(dirname(join(base, path)), { recursive: true });
    await Deno.writeFile(join(base, path), bytes);
    manifest[path] = { size: bytes.byteLength, checksum: `sha256-${await sha256(bytes)}` };
  }
  await writeJson(join(outDir, member.name, `${member.version}_meta.json`), {
    manifest,
    exports: member.exports,
  });
  const [scope, name] = member.name.slice(1).split("/");
  await writeJson(join(outDir, member.name, "meta.json"), {
    scope,
    name,
    latest: member.version,
    versions: { [member.version]: {} },
  });
  return {
    name: member.name,
    version: member.version,
    files: Object.keys(manifest).sort(),
    unresolved,
  };
}

/**
 * Builds the registry for every publishable member of the workspace at `root` into `outDir`.
 *
 * @throws {Error} when `deno publish --dry-run` fails or lists a package the workspace lacks
 */
export async function buildRegistry(root: string, outDir: string): Promise<BuiltPackage[]> {
  const { imports, members } = await readWorkspace(root);
  const listed = await publishedFiles(root);
  const built: BuiltPackage[] = [];
  for (const [name, files] of listed) {
    const member = members.find((m) => m.name === name);
    if (!member?.publish) throw new Error(`deno publish lists ${name}, not a publishable member`);
    built.push(await writePackage(outDir, member, files, bareResolver(member, members, imports)));
  }
  return built;
}

const TYPES: Record<string, string> = {
  ".json": "application/json",
  ".ts": "application/typescript",
  ".js": "text/javascript",
};

/** Serves `dir` as static files on 127.0.0.1 (an ephemeral port); `url` ends with "/". */
export function serveRegistry(dir: string): { server: Deno.HttpServer; url: string } {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const path = decodeURIComponent(new URL(req.url).pathname);
    if (path.split("/").includes("..")) return new Response("bad path", { status: 400 });
    try {
      const body = await Deno.readFile(join(dir, path));
      const type = TYPES[/\.[a-z]+$/.exec(path)?.[0] ?? ""] ?? "application/octet-stream";
      return new Response(body, { headers: { "content-type": type } });
    } catch {
      return new Response("not found", { status: 404 });
    }
  });
  return { server, url: `http://127.0.0.1:${server.addr.port}/` };
}

if (import.meta.main) {
  const [out, flag] = Deno.args;
  if (out === undefined) {
    console.error("usage: deno run -A tools/jsr_registry.ts <out-dir> [--serve]");
    Deno.exit(2);
  }
  const root = fileURLToPath(new URL("..", import.meta.url));
  for (const pkg of await buildRegistry(root, resolve(out))) {
    console.log(`${pkg.name}@${pkg.version}: ${pkg.files.length} files`);
    for (const u of pkg.unresolved) console.warn(`  unresolved bare specifier ${u}`);
  }
  if (flag === "--serve") console.log(`JSR_URL=${serveRegistry(resolve(out)).url}`);
}
