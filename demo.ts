// deno-lint-ignore-file no-console -- a binary's entry point writes to the terminal
/**
 * `deno task demo`: the embedded default. Starts a real proxy-server process (gRPC frontend on a
 * Unix socket, agent port on loopback with mTLS), a real proxy-agent process, and a sample HTTP
 * backend, all with throwaway certificates made at start; then sends requests through the tunnel
 * with the client library and prints what came back and how long it took. No Kubernetes needed.
 *
 * Permissions: `deno task demo` gives this process only what it needs (run the deno binary,
 * grpc-js's environment variables, loopback and the demo socket (net, read), and write to
 * `/tmp` for the throwaway certificates); the server and agent processes it starts get exactly
 * the set their flags need (`serverPermissionFlags`/`agentPermissionFlags`, via tests/framework.ts).
 * The frontend socket has a fixed path so that the task can name it in `--allow-net=unix:...`.
 *
 * @module
 */

import { createSingleUseTunnel, createTunnel, DialError } from "@knp/client";
import type { TunnelConn } from "./client/tunnel_conn.ts";
import { startAgent, startServer } from "./tests/framework.ts";
import { startHttpBackend } from "./tests/backends.ts";
import { httpRequest } from "./tests/http_client.ts";

async function httpGet(conn: TunnelConn, path: string) {
  const r = await httpRequest(conn, "GET", path);
  return { status: r.statusLine, body: r.body };
}

function ms(start: number): string {
  return `${(performance.now() - start).toFixed(1)} ms`;
}

const t0 = performance.now();
console.log("knp demo: starting proxy-server, proxy-agent and a sample HTTP backend on loopback");
await using backend = startHttpBackend();
/** The frontend socket (fixed, so `deno task demo` can allow exactly it). */
const UDS = "/tmp/knp-demo.socket";
// A later --uds-name wins (pflag), so this replaces the framework's temporary socket path.
await using server = await startServer({ frontend: "uds", extraArgs: [`--uds-name=${UDS}`] });
await using agent = await startAgent(server.agentPort);
console.log(`  server: frontend unix:${UDS}, agents 127.0.0.1:${server.agentPort}`);
console.log(`  agent : connected (health http://127.0.0.1:${agent.healthPort}/readyz)`);
console.log(`  backend: http://${backend.address}  (ready after ${ms(t0)})\n`);

console.log("1. single-use tunnels (one gRPC connection per dial, as kube-apiserver does)");
for (let i = 1; i <= 3; i++) {
  const start = performance.now();
  const tunnel = createSingleUseTunnel({ udsPath: UDS });
  const conn = await tunnel.dial("tcp", backend.address);
  const { status, body } = await httpGet(conn, "/success");
  await tunnel.done;
  console.log(
    `   GET /success -> ${status} body=${JSON.stringify(new TextDecoder().decode(body))} in ${
      ms(start)
    }`,
  );
}

console.log("\n2. one tunnel carrying 20 dials");
{
  const start = performance.now();
  await using tunnel = createTunnel({ udsPath: UDS });
  const results = await Promise.all(
    Array.from(
      { length: 20 },
      async () => httpGet(await tunnel.dial("tcp", backend.address), "/success"),
    ),
  );
  const ok = results.filter((r) => r.status.includes("200")).length;
  console.log(`   ${ok}/20 answered 200 in ${ms(start)}`);
}

console.log("\n3. 10 MiB download through the tunnel");
{
  const start = performance.now();
  const tunnel = createSingleUseTunnel({ udsPath: UDS });
  const conn = await tunnel.dial("tcp", backend.address);
  const { status, body } = await httpGet(conn, "/download?chunks=10&size=1048576");
  const secs = (performance.now() - start) / 1000;
  console.log(
    `   ${status}: ${body.length} bytes in ${ms(start)} (${
      (body.length / secs / 1e6).toFixed(0)
    } MB/s)`,
  );
}

console.log("\n4. a dial to a closed port");
{
  const start = performance.now();
  try {
    await createSingleUseTunnel({ udsPath: UDS }).dial("tcp", "127.0.0.1:1");
    console.log("   unexpected: the dial succeeded");
    Deno.exitCode = 1;
  } catch (err) {
    const reason = err instanceof DialError ? err.reason : "?";
    console.log(
      `   failed as expected in ${ms(start)}: reason=${reason} error=${
        JSON.stringify((err as Error).message)
      }`,
    );
  }
}

console.log(`\ndemo finished in ${ms(t0)}`);
