/**
 * Interoperability with the real Go client library that kube-apiserver links:
 * `sigs.k8s.io/apiserver-network-proxy/konnectivity-client` (released v0.36.0, pinned in
 * `tests/interop/go.mod`). `tests/interop/main.go` is a small Go CLI that uses the library the
 * way kube-apiserver's egress selector does (one `CreateSingleUseGrpcTunnelWithContext` per
 * connection, `WithContextDialer` + insecure credentials + `WithBlock` over the UDS, mTLS over TCP,
 * `tunnel.DialContext(ctx, "tcp", target)`, the `net.Conn` handed to an `http.Transport`), runs ONE
 * scenario against OUR `server/main.ts` and `agent/main.ts` processes and prints one JSON line.
 *
 * The Go binary is built once per test process into `tests/interop/bin/` (git-ignored) with Go's
 * default module and build caches, so repeat runs only relink when something changed. Without `go`
 * on PATH every test here is registered as ignored.
 *
 * Note on dial IDs: the Go library picks every dial ID with `rand.Int63()`, i.e. uniformly in
 * [0, 2^63); the chance that one is ≤ 2^53 (exactly representable as a JS number) is 2^-10. Each
 * scenario below only succeeds if our server and agent echo the ID back bit-exact (the client
 * matches DIAL_RSP by ID and tears the tunnel down on an unknown one), so the 50 sequential dials of
 * `big-dialid` and the 100 of `concurrent` prove the int64 round trip beyond reasonable doubt. The
 * agent's "dial failed" log line additionally shows the ID it received, which we check is > 2^53.
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { startEchoBackend, startHttpBackend } from "./backends.ts";
import {
  type AgentProcess,
  awaitTables,
  CLOSED_PORT,
  type ServerProcess,
  startAgent,
  startServer,
} from "./framework.ts";

const INTEROP_DIR = fileURLToPath(new URL("./interop/", import.meta.url));

async function goVersion(): Promise<string | undefined> {
  try {
    const out = await new Deno.Command("go", { args: ["version"], stdout: "piped", stderr: "null" })
      .output();
    return out.success ? new TextDecoder().decode(out.stdout).trim() : undefined;
  } catch {
    return undefined;
  }
}

const GO = await goVersion();
if (!GO) {
  // deno-lint-ignore no-console
  console.log(
    "interop_test: `go` is not on PATH; the Go konnectivity-client interop tests are ignored",
  );
}

const opts = { ignore: !GO };

const builds = new Map<string, Promise<string>>();

/** `go build` of the module in `dir` into `out` (relative to `dir`), once per test process. */
function goBuild(dir: string, out: string): Promise<string> {
  let build = builds.get(dir);
  if (!build) {
    build = (async () => {
      const res = await new Deno.Command("go", {
        args: ["build", "-o", out, "."],
        cwd: dir,
        stdout: "piped",
        stderr: "piped",
      }).output();
      if (!res.success) {
        const dec = new TextDecoder();
        throw new Error(
          `go build in ${dir} failed (${res.code}):\n${dec.decode(res.stdout)}${
            dec.decode(res.stderr)
          }`,
        );
      }
      return `${dir}${out}`;
    })();
    builds.set(dir, build);
  }
  return build;
}

/** The interop CLI (konnectivity-client v0.36.0). */
function binary(): Promise<string> {
  return goBuild(INTEROP_DIR, "bin/interop");
}

/** The reusable-tunnel CLI (konnectivity-client v0.37.0, its own module). */
function reusableBinary(): Promise<string> {
  return goBuild(`${INTEROP_DIR}reusable/`, "../bin/interop-reusable");
}

/** The JSON line the Go CLI prints. */
interface InteropResult {
  ok: boolean;
  scenario: string;
  error: string;
  reason: string;
  measure: Record<string, unknown>;
}

/** A running scenario process with stderr watched line by line. */
class Scenario {
  readonly child: Deno.ChildProcess;
  readonly args: string[];
  #stderr = "";
  #stdout: Promise<string>;
  #stderrDone: Promise<void>;
  #waiters: { text: string; resolve: () => void }[] = [];

  constructor(bin: string, args: string[]) {
    this.args = args;
    const child = new Deno.Command(bin, { args, stdin: "null", stdout: "piped", stderr: "piped" })
      .spawn();
    this.child = child;
    this.#stdout = new Response(child.stdout).text();
    this.#stderrDone = (async () => {
      const dec = new TextDecoder();
      for await (const chunk of child.stderr) {
        this.#stderr += dec.decode(chunk, { stream: true });
        this.#waiters = this.#waiters.filter((w) => {
          if (!this.#stderr.includes(w.text)) return true;
          w.resolve();
          return false;
        });
      }
    })();
  }

  /** Resolves once stderr contains `text`; rejects after `timeoutMs` or when the process exits. */
  waitForStderr(text: string, timeoutMs: number): Promise<void> {
    if (this.#stderr.includes(text)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`no ${JSON.stringify(text)} on stderr within ${timeoutMs} ms`)),
        timeoutMs,
      );
      this.#waiters.push({
        text,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      });
      this.child.status.then(async (s) => {
        await this.#stderrDone;
        if (!this.#stderr.includes(text)) {
          clearTimeout(timer);
          reject(new Error(`scenario exited (${s.code}) before ${JSON.stringify(text)}`));
        }
      });
    });
  }

  /** Waits for the process (killing it after `timeoutMs`) and parses its JSON line. */
  async result(timeoutMs = 90_000): Promise<{ code: number; result: InteropResult; log: string }> {
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        this.child.kill("SIGKILL");
      } catch { /* exited */ }
    }, timeoutMs);
    const status = await this.child.status;
    clearTimeout(timer);
    const stdout = await this.#stdout;
    await this.#stderrDone;
    const log = `interop ${this.args.join(" ")}\n--- stdout\n${stdout}--- stderr\n${this.#stderr}`;
    if (timedOut) throw new Error(`scenario killed after ${timeoutMs} ms\n${log}`);
    const line = stdout.trim().split("\n").at(-1) ?? "";
    let result: InteropResult;
    try {
      result = JSON.parse(line);
    } catch {
      throw new Error(`no JSON result (exit ${status.code})\n${log}`);
    }
    return { code: status.code, result, log };
  }
}

/** Asserts the scenario passed (exit 0, ok) and returns its result. */
async function expectOk(
  args: string[],
  server: ServerProcess,
  agentLog?: () => string,
  bin?: string,
): Promise<InteropResult> {
  const { code, result, log } = await new Scenario(bin ?? await binary(), args).result();
  if (code !== 0 || !result.ok) {
    assert.fail(
      `scenario failed: ${JSON.stringify(result)}\n${log}\n--- server log\n${server.process.log}` +
        (agentLog ? `\n--- agent log\n${agentLog()}` : ""),
    );
  }
  return result;
}

/** A server with one agent connected, and the Go CLI's arguments for its frontend. */
interface Stack extends AsyncDisposable {
  server: ServerProcess;
  agent: AgentProcess;
  /** `-uds PATH`, or `-addr HOST:PORT -ca -cert -key` for the TCP frontend with mTLS. */
  frontendArgs: string[];
  /** The Go CLI's arguments for one scenario: frontend, `-scenario`, `extra`, `-target`. */
  args(scenario: string, target: string, ...extra: string[]): string[];
  /** Runs one scenario of the interop CLI and asserts it passed (logs on failure). */
  run(scenario: string, target: string, ...extra: string[]): Promise<InteropResult>;
}

/** Starts a server with the given frontend and one agent; disposing stops the agent first. */
async function startStack(frontend: "uds" | "tcp" = "uds"): Promise<Stack> {
  await using resources = new AsyncDisposableStack();
  // Debug level logs every change of the connection tables (awaited by expectServerClean).
  const server = resources.use(await startServer({ frontend, extraArgs: ["--v=5"] }));
  const agent = resources.use(await startAgent(server.agentPort));
  const frontendArgs = frontend === "uds" ? ["-uds", server.udsPath] : [
    "-addr",
    `127.0.0.1:${server.serverPort}`,
    "-ca",
    server.pki.caCert,
    "-cert",
    server.pki.clientCert,
    "-key",
    server.pki.clientKey,
  ];
  const args = (scenario: string, target: string, ...extra: string[]) => [
    ...frontendArgs,
    "-scenario",
    scenario,
    ...extra,
    "-target",
    target,
  ];
  const owned = resources.move();
  return {
    server,
    agent,
    frontendArgs,
    args,
    run: (scenario, target, ...extra) =>
      expectOk(args(scenario, target, ...extra), server, () => agent.process.log),
    [Symbol.asyncDispose]: () => owned.disposeAsync(),
  };
}

/** One sample of the server's /metrics, or undefined. */
async function metric(server: ServerProcess, series: string): Promise<number | undefined> {
  const res = await server.health("/metrics");
  const text = await res.text();
  for (const line of text.split("\n")) {
    if (line.startsWith(series + " ")) return Number(line.slice(series.length + 1));
  }
  return undefined;
}

const NS = "konnectivity_network_proxy_server";

/**
 * Waits until the server holds no pending dial, established connection or frontend stream (its
 * latest table record at `--v=5` says so), then asserts its /metrics agree.
 */
async function expectServerClean(server: ServerProcess, timeoutMs = 5_000): Promise<void> {
  try {
    await awaitTables(
      server.process,
      (g) => g.pending === 0 && g.established === 0 && g.frontends === 0,
      "server tables to drain",
      { timeoutMs },
    );
  } catch (err) {
    throw new Error(`${err}\n--- server log\n${server.process.log}`);
  }
  const pending = await metric(server, `${NS}_pending_backend_dials`);
  const established = await metric(server, `${NS}_established_connections`);
  const proxy = await metric(server, `${NS}_grpc_connections{service_method="Proxy"}`);
  assert.deepEqual(
    { pending, established, proxy: proxy ?? 0 },
    { pending: 0, established: 0, proxy: 0 },
    "server tables drained",
  );
}

function assertNoPanic(log: string, who: string): void {
  assert.doesNotMatch(log, /panic|uncaught|unhandled/i, `${who} log mentions a crash:\n${log}`);
}

/**
 * A loopback port whose connect() hangs: the Go helper listens with backlog 0 and fills the
 * accept queue with connections it never accepts, so the kernel drops further SYNs.
 */
async function startBlackhole(): Promise<AsyncDisposable & { address: string }> {
  const child = new Deno.Command(await binary(), {
    args: ["-serve-blackhole"],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`blackhole helper exited: ${text}`);
    text += value;
  }
  reader.releaseLock();
  const port = Number(text.trim());
  return {
    address: `127.0.0.1:${port}`,
    async [Symbol.asyncDispose]() {
      try {
        await child.stdin.close();
      } catch { /* gone */ }
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
      await child.status;
      await child.stdout.cancel().catch(() => {});
    },
  };
}

// ---------------------------------------------------------------------------------------------
// UDS frontend (kube-apiserver's usual configuration).

Deno.test("interop(uds): GET /success through the Go client", opts, async () => {
  await using backend = startHttpBackend();
  await using stack = await startStack();
  const r = await stack.run("get", backend.address);
  assert.equal(r.measure.dials, 1);
  await expectServerClean(stack.server);
});

Deno.test(
  "interop(uds): 50 sequential dials with random int63 dial IDs round-trip exactly",
  opts,
  async () => {
    await using backend = startHttpBackend();
    await using stack = await startStack();
    // Each of the 50 dials uses a fresh rand.Int63() ID (> 2^53 with probability 1 - 2^-10 each).
    // A DIAL_RSP whose ID came back altered (e.g. rounded through a JS number) is "unknown" to the
    // client, which then closes the tunnel: the GET would fail with reason "tunnelclosed".
    const r = await stack.run("big-dialid", backend.address, "-n", "50");
    assert.equal(r.measure.dials, 50);

    // Observe IDs on our side: the agent logs the dial ID of a failed dial. Three failed dials make
    // the chance that none of them is > 2^53 2^-30. The client matched each DIAL_RSP (reason
    // "endpoint", not "tunnelclosed"/"timeout"), so those large IDs round-tripped bit-exact.
    for (let i = 0; i < 3; i++) {
      const refused = await stack.run("refused", `127.0.0.1:${CLOSED_PORT}`);
      assert.equal(refused.reason, "endpoint");
    }
    const ids = [...stack.agent.process.log.matchAll(/"dialID":"?(\d+)"?/g)].map((m) =>
      BigInt(m[1]!)
    );
    if (ids.length > 0) {
      assert.ok(
        ids.some((id) => id > 2n ** 53n),
        `no logged dial ID above 2^53: ${ids.join(", ")}`,
      );
    }
    await expectServerClean(stack.server);
  },
);

Deno.test("interop(uds): dial to a closed port fails with reason endpoint", opts, async () => {
  await using stack = await startStack();
  const target = `127.0.0.1:${CLOSED_PORT}`;
  const r = await stack.run("refused", target);
  assert.match(r.error, /connection refused/);
  assert.equal(r.reason, "endpoint");
  assert.equal(r.measure.tunnel_done, true);
  await expectServerClean(stack.server);
});

Deno.test(
  "interop(uds): request context cancelled while the agent dials → reason context, no leak",
  opts,
  async () => {
    await using blackhole = await startBlackhole();
    await using backend = startHttpBackend();
    await using stack = await startStack();
    const { server, agent } = stack;
    const cancelAfter = 300;
    const from = server.process.mark();
    const r = await stack.run(
      "cancel-pending",
      blackhole.address,
      "-cancel-after",
      String(cancelAfter),
    );
    assert.equal(r.reason, "context");
    assert.equal(r.error, "dial timeout, context");
    // The client's cancel removed the dial while it was pending (not the agent's dial timeout).
    const failure = await server.process.waitForLog("dial failure", { from });
    assert.equal(failure["reason"], "frontend_close", JSON.stringify(failure));
    const ended = await server.process.waitForLog("frontend connection ended", { from });
    assert.equal(ended["state"], "pending", JSON.stringify(ended));
    assert.equal(r.measure.tunnel_done, true);

    // The client sent DIAL_CLS and closed its stream: the pending dial must be gone.
    await expectServerClean(server);
    assert.equal(await metric(server, `${NS}_dial_failure_count{reason="frontend_close"}`), 1);

    // The server keeps working.
    await stack.run("get", backend.address);

    // After the agent's 5 s dial timeout (it logs "dial failed" and then sends its late DIAL_RSP
    // on the same stream, ahead of any later one) the server must drop the DIAL_RSP for the
    // forgotten dial quietly; the server and agent still work afterwards.
    await agent.process.waitForLog("dial failed");
    await stack.run("get", backend.address);
    await expectServerClean(server);
    assertNoPanic(server.process.log, "server");
    assertNoPanic(agent.process.log, "agent");
  },
);

Deno.test(
  "interop(uds): 100 concurrent tunnels each read back their own body",
  opts,
  async () => {
    await using backend = startHttpBackend();
    await using stack = await startStack();
    const r = await stack.run("concurrent", backend.address, "-n", "100");
    assert.equal(r.measure.ok_count, 100);
    await expectServerClean(stack.server);
  },
);

/** `-chunks 10 -size 1048576`: 10 MiB in 1 MiB chunks, for download and upload. */
const TEN_MIB = ["-chunks", "10", "-size", "1048576"];

Deno.test("interop(uds): 10 MiB download is byte-exact", opts, async () => {
  await using backend = startHttpBackend();
  await using stack = await startStack();
  const r = await stack.run("download", backend.address, ...TEN_MIB);
  assert.equal(r.measure.bytes, 10 * 1048576);
  assert.equal(r.measure.first_bad, -1);
  await expectServerClean(stack.server);
});

Deno.test("interop(uds): 10 MiB upload checksum matches", opts, async () => {
  await using backend = startHttpBackend();
  await using stack = await startStack();
  const r = await stack.run("upload", backend.address, ...TEN_MIB);
  assert.equal(r.measure.got, r.measure.want);
  await expectServerClean(stack.server);
});

Deno.test(
  "interop(uds): client-side conn.Close() returns promptly without error and ends the tunnel",
  opts,
  async () => {
    await using echo = startEchoBackend();
    await using stack = await startStack();
    const r = await stack.run("close-client", echo.address);
    assert.ok((r.measure.close_ms as number) < 10_000);
    assert.equal(r.measure.tunnel_done, true);
    await expectServerClean(stack.server);
  },
);

Deno.test(
  "interop(uds): remote close (Connection: close) reaches the client as EOF and ends the tunnel",
  opts,
  async () => {
    await using backend = startHttpBackend();
    await using stack = await startStack();
    const r = await stack.run("close-remote", backend.address);
    assert.equal(r.measure.tunnel_done, true);
    await expectServerClean(stack.server);
  },
);

Deno.test(
  "interop(uds): a second DialContext on a single-use tunnel fails with tunnelstarted",
  opts,
  async () => {
    await using echo = startEchoBackend();
    await using stack = await startStack();
    const r = await stack.run("single-use", echo.address);
    assert.equal(r.reason, "tunnelstarted");
    await expectServerClean(stack.server);
  },
);

Deno.test(
  "interop(uds): agent killed mid-download → the Go reader fails promptly, no hang",
  opts,
  async () => {
    await using backend = startHttpBackend();
    await using stack = await startStack();
    const { server, agent } = stack;
    const scenario = new Scenario(
      await binary(),
      stack.args("mid-transfer", backend.address, "-chunks", "2000", "-size", "1048576"),
    );
    try {
      await scenario.waitForStderr("STARTED", 30_000);
    } catch (err) {
      const { log } = await scenario.result(25_000).catch((e) => ({ log: String(e) }));
      throw new Error(`${err}\n${log}\n--- server log\n${server.process.log}`);
    }
    const from = server.process.mark();
    agent.process.kill("SIGKILL");
    const { code, result, log } = await scenario.result(25_000);
    const details = `${JSON.stringify(result)}\n${log}\n--- server log\n${server.process.log}`;
    // The cause: the server saw the agent go and ended the client's established connection.
    const gone = await server.process.waitForLog("agent disconnected", { from });
    const ended = await server.process.waitForLog("frontend connection ended", { from });
    assert.equal(ended["state"], "established", details);
    const records = server.process.records;
    assert.ok(records.indexOf(gone) < records.indexOf(ended), `the agent went first\n${details}`);
    assert.notEqual(result.error, "", details);
    assert.equal(code, 0, details);
    assert.ok(result.ok, details);
    assert.ok((result.measure.bytes as number) < 2000 * 1048576);
    await expectServerClean(server);
  },
);

// ---------------------------------------------------------------------------------------------
// TCP frontend with mutual TLS.

Deno.test("interop(tcp+mTLS): get, refused and 10 MiB download", opts, async () => {
  await using backend = startHttpBackend();
  await using stack = await startStack("tcp");

  const get = await stack.run("get", backend.address);
  assert.equal(get.measure.dials, 1);

  const refused = await stack.run("refused", `127.0.0.1:${CLOSED_PORT}`);
  assert.match(refused.error, /connection refused/);
  assert.equal(refused.reason, "endpoint");

  const download = await stack.run("download", backend.address, ...TEN_MIB);
  assert.equal(download.measure.bytes, 10 * 1048576);
  assert.equal(download.measure.first_bad, -1);
  await expectServerClean(stack.server);
});

// ---------------------------------------------------------------------------------------------
// Reusable tunnel: CreateGRPCTunnel is not in the v0.36 release line (HEAD-only when the
// reference was written); it shipped in konnectivity-client v0.37.0, so it is exercised by a
// separate module (tests/interop/reusable) pinned to that release. One gRPC ClientConn carries
// one Proxy stream per DialContext, so the server sees many concurrent streams on one HTTP/2
// connection.

for (const frontend of ["uds", "tcp"] as const) {
  Deno.test(
    `interop(${frontend}): reusable tunnel (v0.37.0 CreateGRPCTunnel), 50 concurrent dials on one connection`,
    opts,
    async () => {
      await using backend = startHttpBackend();
      await using stack = await startStack(frontend);
      const r = await expectOk(
        [
          ...stack.frontendArgs,
          "-n",
          "50",
          "-target",
          backend.address,
          "-refused",
          `127.0.0.1:${CLOSED_PORT}`,
        ],
        stack.server,
        () => stack.agent.process.log,
        await reusableBinary(),
      );
      assert.equal(r.measure.transport_connections, 1);
      assert.equal(r.measure.refused_reason, "endpoint");
      assert.equal(r.measure.dials, 5 + 50 + 1);
      await expectServerClean(stack.server);
    },
  );
}
