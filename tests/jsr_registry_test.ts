/**
 * The packages as a user gets them: the workspace is laid out as a JSR registry
 * (tools/jsr_registry.ts: the files `deno publish` would publish, with bare specifiers unfurled),
 * served on loopback, and then, from an empty directory with `JSR_URL` pointing at it,
 * `jsr:@knp/server` and `jsr:@knp/agent` run as real processes and a script importing
 * `jsr:@knp/client` fetches a page from a loopback backend through them.
 *
 * DENO_DIR: a fresh one per run, so no `jsr:` module can come from an earlier run's cache; its
 * `npm` folder is a link to the usual npm cache, so npm packages (the npm registry is the only
 * one reachable) are not downloaded again.
 *
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { generateTestPki, type TestPkiFiles, writeTestPki } from "@knp/testing/certs";
import { buildRegistry, publishedFiles, serveRegistry } from "../tools/jsr_registry.ts";
import { serverRunFlags } from "../server/permissions.ts";
import { agentPermissionFlags } from "../agent/permissions.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const PUBLISHED = [
  "@knp/agent",
  "@knp/cli",
  "@knp/client",
  "@knp/core",
  "@knp/proto",
  "@knp/server",
  "@knp/transport",
];
/** Files no package may publish: tests, benches, test helpers, keys, fixtures, containers. */
const PRIVATE = /(_test|_bench)\.ts$|\/_[^/]*\.ts$|\/testdata\/|\.(key|pem|crt)$|Containerfile/;

/** A `deno run` child whose stderr JSON log records can be awaited. */
class Child implements AsyncDisposable {
  readonly child: Deno.ChildProcess;
  readonly output: string[] = [];
  #records: Record<string, unknown>[] = [];
  #changed = Promise.withResolvers<void>();
  #ended = false;

  constructor(args: string[], cwd: string, env: Record<string, string>) {
    this.child = new Deno.Command(Deno.execPath(), {
      args,
      cwd,
      env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    Promise.all([this.#drain(this.child.stdout), this.#drain(this.child.stderr)]).finally(() => {
      this.#ended = true;
      this.#changed.resolve();
    });
  }

  async #drain(stream: ReadableStream<Uint8Array>): Promise<void> {
    let partial = "";
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      this.output.push(text);
      const lines = (partial + text).split("\n");
      partial = lines.pop() ?? "";
      for (const line of lines.filter((l) => l.startsWith("{"))) {
        try {
          this.#records.push(JSON.parse(line) as Record<string, unknown>);
        } catch { /* not a log record */ }
      }
      this.#changed.resolve();
      this.#changed = Promise.withResolvers<void>();
    }
  }

  /**
   * Resolves with the first log record whose `msg` is `msg`; rejects once the output ends, or
   * after `timeoutMs` (a failure deadline, not a synchronisation point).
   */
  async waitForLog(msg: string, timeoutMs = 60_000): Promise<Record<string, unknown>> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`no "${msg}" within ${timeoutMs} ms:\n${this.output.join("")}`)),
        timeoutMs,
      );
    });
    try {
      return await Promise.race([this.#find(msg), deadline]);
    } finally {
      clearTimeout(timer);
    }
  }

  async #find(msg: string): Promise<Record<string, unknown>> {
    for (;;) {
      const found = this.#records.find((r) => r["msg"] === msg);
      if (found) return found;
      if (this.#ended) {
        throw new Error(`no "${msg}" before the output ended:\n${this.output.join("")}`);
      }
      await this.#changed.promise;
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.child.kill("SIGKILL");
    } catch { /* already gone */ }
    await this.child.status;
  }
}

async function npmCache(): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), { args: ["info", "--json"] }).output();
  return (JSON.parse(new TextDecoder().decode(out.stdout)) as { npmCache: string }).npmCache;
}

const CLIENT_SCRIPT = `import { createSingleUseTunnel } from "jsr:@knp/client";
const [udsPath, address] = Deno.args;
const tunnel = createSingleUseTunnel({ udsPath });
const conn = await tunnel.dial("tcp", address);
const writer = conn.writable.getWriter();
await writer.write(new TextEncoder().encode("GET /hello HTTP/1.1\\r\\nHost: backend\\r\\nConnection: close\\r\\n\\r\\n"));
console.log(await new Response(conn.readable).text());
await tunnel[Symbol.asyncDispose]();
`;

Deno.test("deno publish --dry-run passes and publishes no tests, helpers or keys", async () => {
  const listed = await publishedFiles(ROOT, { strict: true });
  assert.deepEqual([...listed.keys()].sort(), PUBLISHED);
  for (const [name, files] of listed) {
    assert.ok(files.some((f) => f.endsWith("/mod.ts")), name);
    assert.deepEqual(files.filter((f) => PRIVATE.test(f)), [], name);
  }
});

Deno.test("the registry holds the packages deno publish lists, unfurled", async () => {
  const dir = await Deno.makeTempDir({ prefix: "knp-jsr-" });
  try {
    const built = await buildRegistry(ROOT, dir);
    assert.deepEqual(built.map((p) => p.name).sort(), PUBLISHED);
    for (const pkg of built) {
      assert.deepEqual(pkg.unresolved, [], pkg.name);
      assert.deepEqual(pkg.files.filter((f) => PRIVATE.test(f)), [], pkg.name);
      const meta = JSON.parse(await Deno.readTextFile(join(dir, pkg.name, "meta.json")));
      assert.equal(meta.latest, pkg.version);
      const versionMeta = JSON.parse(
        await Deno.readTextFile(join(dir, pkg.name, `${pkg.version}_meta.json`)),
      );
      assert.deepEqual(Object.keys(versionMeta.manifest).sort(), pkg.files);
    }
    const tunnel = await Deno.readTextFile(join(dir, "@knp/client/0.1.0/tunnel.ts"));
    assert.match(tunnel, /from "jsr:@knp\/core@\^0\.1\.0\/errors"/);
    assert.doesNotMatch(tunnel, /from "@knp\//);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "jsr:@knp/server, jsr:@knp/agent and jsr:@knp/client run from an empty directory",
  async fn() {
    const work = await Deno.makeTempDir({ prefix: "knp-jsr-" });
    try {
      await runFromRegistry(work);
    } finally {
      await Deno.remove(work, { recursive: true });
    }
  },
});

async function runFromRegistry(work: string): Promise<void> {
  const [registry, app, denoDir, pkiDir] = ["registry", "app", "deno", "pki"].map((d) =>
    join(work, d)
  ) as [string, string, string, string];
  await buildRegistry(ROOT, registry);
  for (const d of [app, denoDir]) await Deno.mkdir(d);
  await Deno.symlink(await npmCache(), join(denoDir, "npm"));
  const pki = await writeTestPki(pkiDir, await generateTestPki());
  const uds = join(work, "s.sock");
  await using served = serveRegistryHandle(registry);
  await using backend = serveBackend();
  const env = { JSR_URL: served.url, DENO_DIR: denoDir, NO_COLOR: "1" };

  await using server = new Child(serverCommand(uds, pki), app, env);
  const started = await server.waitForLog("proxy server started");
  const agentPort = (started["listening"] as Record<string, number>)["agentPort"] ?? 0;
  await using _agent = new Child(agentCommand(agentPort, pki), app, env);
  await server.waitForLog("agent connected");

  await Deno.writeTextFile(join(app, "client.ts"), CLIENT_SCRIPT);
  const client = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...clientPermissions(uds), "client.ts", uds, `127.0.0.1:${backend.port}`],
    cwd: app,
    env,
    stdin: "null",
  }).output();
  const stdout = new TextDecoder().decode(client.stdout);
  assert.ok(client.success, new TextDecoder().decode(client.stderr));
  assert.match(stdout, /^HTTP\/1\.1 200 OK\r\n/);
  assert.match(stdout, /\r\n\r\nhello from the backend: \/hello\n/);
  // Nothing was written into the user's directory but the script.
  assert.deepEqual(await Array.fromAsync(Deno.readDir(app), (e) => e.name), ["client.ts"]);
}

/** `deno run <the server's own permission flags> jsr:@knp/server <flags>`, UDS frontend. */
function serverCommand(uds: string, pki: TestPkiFiles): string[] {
  const args = [
    `--uds-name=${uds}`,
    "--server-port=0",
    "--agent-port=0",
    "--health-port=0",
    "--admin-port=0",
    "--agent-bind-address=127.0.0.1",
    "--health-bind-address=127.0.0.1",
    `--cluster-cert=${pki.serverCert}`,
    `--cluster-key=${pki.serverKey}`,
    `--cluster-ca-cert=${pki.caCert}`,
  ];
  const permissions = serverRunFlags(args);
  assert.ok(permissions.length > 0, "the server's arguments parse");
  return ["run", ...permissions, "jsr:@knp/server", ...args];
}

/** `deno run <the agent's own permission flags> jsr:@knp/agent <flags>`. */
function agentCommand(agentPort: number, pki: TestPkiFiles): string[] {
  const args = [
    "--proxy-server-host=127.0.0.1",
    `--proxy-server-port=${agentPort}`,
    `--ca-cert=${pki.caCert}`,
    `--agent-cert=${pki.clientCert}`,
    `--agent-key=${pki.clientKey}`,
    "--health-server-host=127.0.0.1",
    "--health-server-port=0",
    "--admin-server-port=0",
  ];
  const permissions = agentPermissionFlags(args);
  assert.ok(permissions.length > 0, "the agent's arguments parse");
  return ["run", ...permissions, "jsr:@knp/agent", ...args];
}

function serveRegistryHandle(dir: string): AsyncDisposable & { url: string } {
  const { server, url } = serveRegistry(dir);
  return { url, [Symbol.asyncDispose]: () => server.shutdown() };
}

function serveBackend(): AsyncDisposable & { port: number } {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (req) => new Response(`hello from the backend: ${new URL(req.url).pathname}\n`),
  );
  return { port: server.addr.port, [Symbol.asyncDispose]: () => server.shutdown() };
}

// The client script: grpc-js reads its environment variables when it loads, and the tunnel is a
// gRPC connection over the server's UDS.
function clientPermissions(uds: string): string[] {
  return ["--allow-env", `--allow-net=unix:${uds}`, `--allow-read=${uds}`, `--allow-write=${uds}`];
}
