/**
 * Connection-teardown reliability of the HTTP-CONNECT frontend and the client library, through
 * real proxy-server and proxy-agent processes and real sockets (issue 10, items 1, 6, 9 and 12):
 *
 * - a client that closes while its upload is stuck behind a backend that never reads ends its
 *   tunnel: gauges back to 0, the agent closes the backend socket despite the unflushed bytes;
 * - the Unix-socket accept loop survives running out of descriptors (EMFILE) and keeps serving;
 * - a slowloris of more heads than the limit does not lock out a well-behaved CONNECT;
 * - an agent killed mid-download is an error for the client, never a clean end: the client
 *   library's `readable` rejects with "agent … disconnected", an HTTP-CONNECT client over TCP
 *   gets a reset.
 *
 * Synchronisation is on the processes' log records and on socket events; nothing sleeps.
 */

import assert from "node:assert/strict";
import { createSingleUseTunnel, KnpError } from "@knp/client";
import { readSample } from "../server/metrics.ts";
import { procDirEntries } from "../testing/proc_files.ts";
import { startEchoBackend } from "./backends.ts";
import { endpointOf, havePython, openProxy, type RawConn, tunnel } from "./connect_client.ts";
import { type ServerProcess, startAgent, startServer } from "./framework.ts";

const NS = "konnectivity_network_proxy_server";
/** Debug records (the frontend's pause probe, connection and table records) need `-v` 4+. */
const DEBUG = "--v=5";
const HTTP_CONNECT = ["--mode=http-connect", DEBUG];
const decoder = new TextDecoder();

async function metric(server: ServerProcess, name: string): Promise<number> {
  const res = await server.health("/metrics");
  return readSample(await res.text(), `${NS}_${name}`) ?? 0;
}

/** A TCP backend that accepts and holds its connections without ever reading them. */
function startStuckBackend() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  const waiters: ((c: Deno.Conn) => void)[] = [];
  (async () => {
    for await (const conn of listener) {
      conns.push(conn);
      waiters.shift()?.(conn);
    }
  })().catch(() => {});
  return {
    address: `127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    /** The `i`-th accepted connection, once accepted. */
    accepted(i: number): Promise<Deno.Conn> {
      const conn = conns[i];
      if (conn) return Promise.resolve(conn);
      return new Promise((resolve) => waiters.push(resolve));
    },
    [Symbol.dispose]() {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
    },
  };
}

/** A TCP backend that streams bytes to every connection until the connection fails. */
function startStreamingBackend() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  const chunk = new Uint8Array(64 * 1024).fill(0x61);
  (async () => {
    for await (const conn of listener) {
      conns.add(conn);
      (async () => {
        while (true) await conn.write(chunk);
      })().catch(() => conns.delete(conn));
    }
  })().catch(() => {});
  return {
    address: `127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    [Symbol.dispose]() {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
    },
  };
}

/** Reads `conn` until it ends; resolves with the byte count and how it ended. */
async function readUntilEnd(conn: Deno.Conn): Promise<{ bytes: number; end: "eof" | Error }> {
  const buf = new Uint8Array(256 * 1024);
  let bytes = 0;
  try {
    while (true) {
      const n = await conn.read(buf);
      if (n === null) return { bytes, end: "eof" };
      bytes += n;
    }
  } catch (err) {
    return { bytes, end: err as Error };
  }
}

Deno.test("item 1: a client closing its stuck upload ends the tunnel; the agent cuts the backend", async () => {
  await using server = await startServer({ extraArgs: HTTP_CONNECT });
  await using agent = await startAgent(server, { extraArgs: [DEBUG] });
  await server.agents(1);
  using backend = startStuckBackend();
  const endpoint = await endpointOf(server);
  const conn = await tunnel(endpoint, backend.address);
  const held = await backend.accepted(0);

  // Upload until the frontend has been paused for a probe interval: the agent's window is spent
  // and nothing moves, since the backend never reads.
  const serverMark = server.process.mark();
  const paused = server.process.waitForLog(
    "http-connect client paused; probing whether it is still there",
    { from: serverMark },
  );
  let uploaded = 0;
  const chunk = new Uint8Array(256 * 1024).fill(0x62);
  const uploading = (async () => {
    while (true) uploaded += await conn.conn.write(chunk);
  })().catch(() => {});
  await paused;

  const agentMark = agent.process.mark();
  conn.close();
  await uploading;
  const closed = await server.process.waitForLog(
    (r) => r.msg === "http-connect connection closed",
    { from: serverMark },
  );
  assert.match(String(closed["error"]), /client went away/, JSON.stringify(closed));
  assert.equal(closed["connections"], 0, "http_connections back to 0");
  await server.process.waitForLog("tables empty", { from: serverMark });
  assert.equal(await metric(server, "established_connections"), 0);
  assert.equal(await metric(server, "http_connections"), 0);
  assert.equal(await metric(server, 'grpc_connections{service_method="Proxy"}'), 0);

  // The agent closes its backend socket although bytes are still queued for it; only then does
  // the backend start reading: it gets fewer bytes than the client uploaded, then the end.
  const agentClosed = await agent.process.waitForLog(
    (r) => r.msg === "endpoint connection closed" && r["by"] === "server",
    { from: agentMark },
  );
  assert.ok(agentClosed);
  const seen = await readUntilEnd(held);
  assert.equal(seen.end, "eof", `the backend saw its socket closed (${seen.end})`);
  assert.ok(seen.bytes < uploaded, `unflushed bytes were dropped: ${seen.bytes} < ${uploaded}`);
});

Deno.test("item 6: the Unix-socket accept loop survives EMFILE and keeps accepting", async () => {
  await using server = await startServer({ extraArgs: HTTP_CONNECT });
  await using agent = await startAgent(server);
  await server.agents(1);
  await using echo = startEchoBackend();
  const endpoint = await endpointOf(server);
  // Lower the running server's descriptor limit to what it holds now plus a few.
  const pid = server.process.child.pid;
  const open = procDirEntries(`/proc/${pid}/fd`).length;
  const limit = open + 8;
  const prlimit = await new Deno.Command("prlimit", {
    args: [`--pid=${pid}`, `--nofile=${limit}:${limit}`],
  }).output();
  assert.ok(prlimit.success, decoder.decode(prlimit.stderr));

  const mark = server.process.mark();
  const failed = server.process.waitForLog("http-connect accept failed; retrying", { from: mark });
  const hogs: RawConn[] = [];
  for (let i = 0; i < 24; i++) hogs.push(await openProxy(endpoint));
  const record = await failed;
  assert.match(String(record["error"]), /too many open files|os error 24/i, JSON.stringify(record));

  // Free the descriptors: the server sees each hog end; then a new CONNECT is served.
  for (const hog of hogs) hog.close();
  const conn = await tunnel(endpoint, echo.address);
  try {
    await conn.write("still accepting");
    assert.equal(decoder.decode(await conn.readExactly(15)), "still accepting");
  } finally {
    conn.close();
  }
  assert.ok(agent);
});

Deno.test("item 9: a slowloris beyond the head limit does not lock out a legitimate CONNECT", async () => {
  await using server = await startServer({ extraArgs: HTTP_CONNECT });
  await using agent = await startAgent(server);
  await server.agents(1);
  await using echo = startEchoBackend();
  const endpoint = await endpointOf(server);
  const SLOW = 1_100; // the default limit is 1024 heads in progress
  const mark = server.process.mark();
  // Every slow connection accepted: as many "opened" records (evicted ones close meanwhile).
  const allOpen = server.process.waitForState((records) => {
    const opened = records.slice(mark).filter((r) => r.msg === "http-connect connection opened");
    return opened.length >= SLOW ? opened[SLOW - 1] : undefined;
  }, `${SLOW} accepted connections`);
  const slow: RawConn[] = [];
  try {
    for (let i = 0; i < SLOW; i++) {
      const c = await openProxy(endpoint);
      slow.push(c);
      await c.write("CONNECT 127.0.0.1:80 HTTP/1.1\r\n"); // and never the rest
    }
    await allOpen;
    const conn = await tunnel(endpoint, echo.address);
    try {
      await conn.write("served");
      assert.equal(decoder.decode(await conn.readExactly(6)), "served");
    } finally {
      conn.close();
    }
    // The oldest slow head made room: it was answered 503 with the reason in the status line.
    const head = await slow[0]!.readHead();
    assert.equal(head.status, 503, head.raw);
    assert.match(
      head.statusLine,
      /^HTTP\/1\.1 503 Service Unavailable: server overloaded: too many connections sending request headers \(limit 1024\); the oldest is closed \[knp: kind=server-overloaded server=test-server\]$/,
    );
  } finally {
    for (const c of slow) c.close();
  }
  assert.ok(agent);
});

Deno.test("item 12: an agent SIGKILLed mid-download is an error for the client library", async () => {
  await using server = await startServer();
  await using agent = await startAgent(server, { agentId: "doomed-agent" });
  await server.agents(1);
  using backend = startStreamingBackend();
  const conn = await createSingleUseTunnel({ udsPath: server.udsPath })
    .dial("tcp", backend.address, { timeoutMs: 30_000 });
  const reader = conn.readable.getReader();
  const first = await reader.read();
  assert.ok(first.value && first.value.byteLength > 0, "the download started");
  agent.process.kill("SIGKILL");
  let bytes = first.value.byteLength;
  const err = await (async () => {
    while (true) {
      const { value, done } = await reader.read();
      if (done) return new Error(`a clean end after ${bytes} bytes`);
      bytes += value.byteLength;
    }
  })().catch((e: unknown) => e);
  assert.ok(err instanceof KnpError, String(err));
  assert.equal(err.code, "TUNNEL_CLOSED");
  assert.match(err.message, /agent doomed-agent disconnected/);
  await conn.closed;
});

Deno.test("item 12: an agent SIGKILLed mid-download resets the HTTP-CONNECT client (TCP)", async () => {
  await using server = await startServer({ frontend: "tcp", extraArgs: HTTP_CONNECT });
  await using agent = await startAgent(server);
  await server.agents(1);
  using backend = startStreamingBackend();
  const conn = await tunnel(await endpointOf(server), backend.address);
  try {
    assert.ok((await conn.readSome(1024)).byteLength > 0, "the download started");
    agent.process.kill("SIGKILL");
    const seen = await readUntilEnd(conn.conn);
    assert.ok(seen.end instanceof Deno.errors.ConnectionReset, `ended with ${seen.end}`);
  } finally {
    conn.close();
  }
});

Deno.test("HTTP-CONNECT over TCP: a client paused behind a slow backend is kept, then every byte arrives", async () => {
  await using server = await startServer({ frontend: "tcp", extraArgs: HTTP_CONNECT });
  await using _agent = await startAgent(server, { extraArgs: [DEBUG] });
  await server.agents(1);
  using backend = startStuckBackend();
  const conn = await tunnel(await endpointOf(server), backend.address);
  const held = await backend.accepted(0);
  const mark = server.process.mark();
  // The client uploads 48 MiB while the backend reads nothing: the frontend stops reading and
  // probes the client. Two probes later (the second a second after the first), the backend reads.
  const total = 48 * 1024 * 1024;
  const uploading = (async () => {
    const chunk = new Uint8Array(256 * 1024);
    for (let sent = 0; sent < total; sent += chunk.length) {
      chunk.fill((sent / chunk.length) & 0xff);
      for (let off = 0; off < chunk.length;) off += await conn.conn.write(chunk.subarray(off));
    }
  })();
  await server.process.waitForLog(
    (r) => r.msg === "http-connect client still paused" && Number(r["probes"]) >= 2,
    { from: mark },
  );
  const seen = await readSomeBytes(held, total);
  await uploading;
  assert.equal(seen.bytes, total, "every uploaded byte reached the backend");
  assert.ok(seen.ordered, "the bytes arrived in order");
  assert.ok(
    !server.process.records.slice(mark).some((r) => r.msg === "http-connect connection closed"),
    "the paused client's tunnel was closed",
  );
  conn.close();
});

/** Reads exactly `total` bytes of the pattern the upload above writes; checks their order. */
async function readSomeBytes(conn: Deno.Conn, total: number) {
  const buf = new Uint8Array(256 * 1024);
  let bytes = 0;
  let ordered = true;
  while (bytes < total) {
    const n = await conn.read(buf);
    if (n === null) break;
    for (let i = 0; i < n; i += 4096) {
      if (buf[i] !== (Math.floor((bytes + i) / (256 * 1024)) & 0xff)) ordered = false;
    }
    bytes += n;
  }
  return { bytes, ordered };
}

/** A python3 client: CONNECT over TLS, upload until the proxy stops taking bytes, close, exit. */
const PY_UPLOADER = `
import socket, ssl, sys
port, ca, cert, key, target = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context(cafile=ca); ctx.load_cert_chain(cert, key); ctx.check_hostname = False
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
s.sendall(("CONNECT %s HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n" % target).encode())
head = b""
while b"\\r\\n\\r\\n" not in head: head += s.recv(1024)
s.settimeout(2)
try:
    while True: s.send(b"x" * 65536)
except socket.timeout:
    pass
s.close()
`;

Deno.test({
  name:
    "HTTP-CONNECT over TCP: a client that leaves cleanly behind its stuck upload is cut at --knp-paused-tunnel-timeout",
  ignore: !havePython,
  async fn() {
    await using server = await startServer({
      frontend: "tcp",
      extraArgs: [...HTTP_CONNECT, "--knp-paused-tunnel-timeout=3s"],
    });
    await using agent = await startAgent(server, { extraArgs: [DEBUG] });
    await server.agents(1);
    using backend = startStuckBackend();
    const mark = server.process.mark();
    const agentMark = agent.process.mark();
    // The client's FIN waits behind its unsent bytes (the server's window is shut), so only the
    // paused-tunnel timeout can end this tunnel.
    const py = new Deno.Command("python3", {
      args: [
        "-c",
        PY_UPLOADER,
        String(server.serverPort),
        server.pki.caCert,
        server.pki.clientCert,
        server.pki.clientKey,
        backend.address,
      ],
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const { success, stderr } = await py.output();
    assert.ok(success, new TextDecoder().decode(stderr));
    const closed = await server.process.waitForLog(
      (r) => r.msg === "http-connect connection closed",
      { from: mark },
    );
    assert.match(
      String(closed["error"]),
      /tunnel stalled: the far end took none of the client's bytes for 3000 ms/,
    );
    assert.equal(closed["connections"], 0, "http_connections back to 0");
    await server.process.waitForLog("tables empty", { from: mark });
    assert.equal(await metric(server, "established_connections"), 0);
    await agent.process.waitForLog(
      (r) => r.msg === "endpoint connection closed" && r["by"] === "server",
      { from: agentMark },
    );
  },
});
