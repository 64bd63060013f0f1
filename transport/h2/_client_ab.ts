/**
 * A targeted A/B measurement of the native HTTP/2 client against grpc-js's, end to end (not part
 * of the suite): a knp agent with `--knp-fast-link=false` (its gRPC link) to a knp server, or to
 * upstream's Go server (`KNP_UPSTREAM_SERVER`), the agent's `--knp-grpc-transport` switched
 * between runs, and the client library's `grpcTransport` on the server's gRPC frontend (UDS).
 * Each run: one tunneled connection downloads then uploads `MiB` MiB through an HTTP backend;
 * MB/s and the agent's CPU seconds (/proc) are printed per run, runs interleaved.
 * It runs with the `bench` task's permissions (`P` below); it reads the agent's `/proc/<pid>/stat`
 * through `cat` (`testing/proc_files.ts`).
 *
 * ```sh
 * P="--allow-run --allow-net --allow-read --allow-write --allow-env --allow-sys"
 * flock /tmp/knp/bench.lock deno run $P transport/h2/_client_ab.ts knp 512 2 grpc-js,native
 * flock /tmp/knp/bench.lock deno run $P transport/h2/_client_ab.ts knp-grpcjs 512 1
 * KNP_UPSTREAM_SERVER=/path/proxy-server flock /tmp/knp/bench.lock \
 *   deno run $P transport/h2/_client_ab.ts upstream 512 2
 * ```
 *
 * @module
 */

import { createSingleUseTunnel } from "@knp/client";
import { startHttpBackend } from "../../tests/backends.ts";
import { startAgent, startServer } from "../../tests/framework.ts";
import { startUpstreamServer } from "../../tests/ha/fleet.ts";
import { cpuSeconds } from "../../bench/wire.ts";

type T = "native" | "grpc-js";
const [pair = "knp", mib = "512", rounds = "2", clients = "grpc-js"] = Deno.args;
const BYTES = Number(mib) * 2 ** 20;

async function download(udsPath: string, backend: string, client: T): Promise<number> {
  const conn = await createSingleUseTunnel({ udsPath, grpcTransport: client }).dial("tcp", backend);
  const w = conn.writable.getWriter();
  const start = performance.now();
  await w.write(
    new TextEncoder().encode(
      `GET /download?chunks=${mib}&size=1048576 HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n`,
    ),
  );
  let got = 0;
  for await (const chunk of conn.readable) got += chunk.length;
  const mbps = got / 1e6 / ((performance.now() - start) / 1000);
  if (got < BYTES) throw new Error(`short download ${got}`);
  return mbps;
}

async function upload(udsPath: string, backend: string, client: T): Promise<number> {
  const conn = await createSingleUseTunnel({ udsPath, grpcTransport: client }).dial("tcp", backend);
  const w = conn.writable.getWriter();
  const start = performance.now();
  await w.write(
    new TextEncoder().encode(
      `POST /upload HTTP/1.1\r\nHost: b\r\nConnection: close\r\nContent-Length: ${BYTES}\r\n\r\n`,
    ),
  );
  const piece = new Uint8Array(256 * 1024).fill(1);
  for (let at = 0; at < BYTES; at += piece.length) await w.write(piece);
  for await (const _ of conn.readable) { /* the answer */ }
  return BYTES / 1e6 / ((performance.now() - start) / 1000);
}

async function serverOf(): Promise<{ udsPath: string; agentPort: number } & AsyncDisposable> {
  if (pair === "upstream") return await startUpstreamServer("ab-upstream");
  // "knp-grpcjs": the knp server's gRPC listeners on grpc-js instead of its native transport.
  const transport = pair === "knp-grpcjs" ? ["--knp-grpc-transport=grpc-js"] : [];
  return await startServer({ extraArgs: ["--knp-fast-link=false", ...transport] });
}

await using backend = startHttpBackend();
await using server = await serverOf();
for (let r = 0; r < Number(rounds); r++) {
  for (const agentT of ["grpc-js", "native"] as T[]) {
    for (const client of clients.split(",") as T[]) {
      await using agent = await startAgent(server.agentPort, {
        extraArgs: ["--knp-fast-link=false", `--knp-grpc-transport=${agentT}`],
      });
      await agent.ready();
      const pid = agent.process.child.pid;
      await download(server.udsPath, backend.address, client); // warm-up
      const cpu0 = cpuSeconds(pid);
      const down = await download(server.udsPath, backend.address, client);
      const cpu1 = cpuSeconds(pid);
      const up = await upload(server.udsPath, backend.address, client);
      const cpu2 = cpuSeconds(pid);
      // deno-lint-ignore no-console
      console.log(
        `${pair} round ${r} agent=${agentT} client=${client}: download ${down.toFixed(0)} MB/s ` +
          `(agent ${(cpu1 - cpu0).toFixed(2)} s CPU), upload ${up.toFixed(0)} MB/s ` +
          `(agent ${(cpu2 - cpu1).toFixed(2)} s CPU) for ${mib} MiB`,
      );
    }
  }
}
