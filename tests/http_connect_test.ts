// deno-lint-ignore-file no-console -- reports skipped tests
/**
 * The HTTP-CONNECT frontend (`--mode=http-connect`) against real proxy-server and proxy-agent
 * processes: upstream's integration scenarios (the gRPC ones of tests/integration_test.ts) with a
 * raw CONNECT client over the UDS (plaintext) and over TCP with mTLS, then curl as a client we did
 * not write.
 */

import assert from "node:assert/strict";
import { readSample } from "../server/metrics.ts";
import {
  checksum,
  type EchoBackend,
  firstMismatch,
  type HttpBackend,
  pattern,
  startEchoBackend,
  startHttpBackend,
} from "./backends.ts";
import {
  connect,
  connectHead,
  endpointOf,
  haveCurl,
  havePython,
  openProxy,
  type ProxyEndpoint,
  RawConn,
  run,
  startBlackhole,
  tunnel,
} from "./connect_client.ts";
import {
  type AgentProcess,
  awaitHttpConnections,
  awaitTables,
  CLOSED_PORT,
  httpStatus,
  type ServerProcess,
  startAgent,
  startServer,
} from "./framework.ts";
import { httpRequest } from "./http_client.ts";

const decoder = new TextDecoder();
const HTTP_CONNECT = ["--mode=http-connect"];
const NS = "konnectivity_network_proxy_server";

if (!havePython) console.log("skipping the pending-dial steps: python3 is not on PATH");
if (!haveCurl) console.log("skipping the curl steps: curl is not on PATH");

async function metric(server: ServerProcess, series: string): Promise<number> {
  const res = await server.health("/metrics");
  return readSample(await res.text(), series) ?? 0;
}

/** GET /success through a fresh tunnel; asserts nothing follows the 200 head. */
async function getSuccess(endpoint: ProxyEndpoint, backend: HttpBackend): Promise<void> {
  const conn = await tunnel(endpoint, backend.address);
  try {
    assert.equal(conn.buffered, 0, "no bytes buffered after the 200 head");
    // Stray bytes after the 200 head would come first in what the request reads (buffered bytes
    // are delivered first), so an exact status line shows there were none: no waiting needed.
    const res = await httpRequest(conn.asByteConn(), "GET", "/success");
    assert.equal(res.statusLine, "HTTP/1.1 200 OK", "no bytes before the backend speaks");
    assert.equal(res.status, 200);
    assert.equal(decoder.decode(res.body), "hello");
  } finally {
    conn.close();
  }
}

/** Writes `text` and reads it back from an echo tunnel. */
async function roundTrip(conn: RawConn, text: string): Promise<void> {
  await conn.write(text);
  assert.equal(decoder.decode(await conn.readExactly(text.length, 10_000)), text);
}

/**
 * A client that sends its request head one byte every 300 ms (its whole head would take over a
 * minute). Resolves with what the server did (an HTTP status, or "closed"), the answer's body, and
 * how much of the head had been written by then.
 */
function slowClient(endpoint: ProxyEndpoint, target: string) {
  let finished = false;
  let written = 0;
  const result = (async () => {
    const conn = await openProxy(endpoint);
    const bytes = new TextEncoder().encode(
      `CONNECT ${target} HTTP/1.1\r\nHost: x\r\nX-Slow: ${"s".repeat(200)}`,
    );
    const writing = (async () => {
      for (let i = 0; i < bytes.length && !finished; i++) {
        try {
          await conn.write(bytes.subarray(i, i + 1));
          written = i + 1;
        } catch {
          return;
        }
        await new Promise((r) => setTimeout(r, 300));
      }
    })();
    let outcome: number | "closed";
    let body = "";
    try {
      outcome = (await conn.readHead(30_000)).status;
      body = decoder.decode(await conn.readToEnd(5_000).catch(() => new Uint8Array()));
    } catch {
      outcome = "closed";
    }
    finished = true;
    const writtenWhenAnswered = written;
    conn.close();
    await writing;
    return { outcome, body, written: writtenWhenAnswered, total: bytes.length };
  })();
  return {
    result,
    get finished() {
      return finished;
    },
  };
}

/** A TCP client that never starts TLS; resolves with whether the server closed it within 20 s. */
async function silentTcpClient(port: number): Promise<boolean> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const raw = new RawConn(conn);
  const closed = await raw.waitForEof(20_000);
  raw.close();
  return closed;
}

interface Fixture {
  server: ServerProcess;
  endpoint: ProxyEndpoint;
  backend: HttpBackend;
  echo: EchoBackend;
}

/** The scenarios that share one server and two agents. */
async function sharedScenarios(t: Deno.TestContext, f: Fixture): Promise<void> {
  const { server, endpoint, backend, echo } = f;
  const step = (name: string, fn: () => Promise<void>, ignore = false) =>
    t.step({ name, fn, ignore });

  // Started first: they stall for the header timeout (10 s) while every step below runs.
  const slow = slowClient(endpoint, backend.address);
  const silent = endpoint.kind === "tls" ? silentTcpClient(endpoint.port) : undefined;
  let tunnelsWhileSlow = 0;
  const countIfSlow = () => {
    if (!slow.finished) tunnelsWhileSlow++;
  };

  await step("GET /success; exactly the 200 head and nothing buffered after it", async () => {
    const from = server.process.mark();
    await getSuccess(endpoint, backend);
    countIfSlow();
    await awaitTables(server.process, (g) => g.established === 0, "the tunnel to end", { from });
    assert.equal(await metric(server, `${NS}_established_connections`), 0);
  });

  await step("a closed port answers 502 with connection refused", async () => {
    const before = await metric(server, `${NS}_dial_failure_count{reason="error_response"}`);
    const { head, body } = await connect(endpoint, `127.0.0.1:${CLOSED_PORT}`);
    assert.equal(head.status, 502, head.raw + body);
    assert.equal(head.headers["x-knp-error-kind"], "dial-refused");
    assert.match(body, /connection refused/);
    assert.equal(
      await metric(server, `${NS}_dial_failure_count{reason="error_response"}`),
      before + 1,
    );
  });

  await step("100 concurrent tunnels over two agents each get their own echo back", async () => {
    const results = await Promise.all(Array.from({ length: 100 }, async (_, i) => {
      const conn = await tunnel(endpoint, backend.address);
      try {
        const res = await httpRequest(
          conn.asByteConn(),
          "POST",
          "/echo",
          new TextEncoder().encode(`request-${i}`),
        );
        return decoder.decode(res.body);
      } finally {
        conn.close();
      }
    }));
    results.forEach((got, i) => assert.equal(got, `request-${i}`));
    countIfSlow();
  });

  await step("10 concurrent tunnels each download 10 x 1 MiB byte-exact", async () => {
    await Promise.all(Array.from({ length: 10 }, async () => {
      const conn = await tunnel(endpoint, backend.address);
      try {
        const res = await httpRequest(conn.asByteConn(), "GET", "/download?chunks=10&size=1048576");
        assert.equal(res.status, 200);
        assert.equal(res.body.length, 10 << 20);
        assert.equal(firstMismatch(res.body), -1);
      } finally {
        conn.close();
      }
    }));
    countIfSlow();
  });

  await step("a 10 MiB upload arrives byte-exact", async () => {
    const body = pattern(0, 10 << 20);
    const sum = checksum(body);
    const conn = await tunnel(endpoint, backend.address);
    try {
      const res = await httpRequest(conn.asByteConn(), "POST", "/upload", body);
      assert.equal(decoder.decode(res.body), `${body.length} ${sum.a}:${sum.b}`);
    } finally {
      conn.close();
    }
  });

  await step("raw TCP echo with partial reads", async () => {
    const conn = await tunnel(endpoint, echo.address);
    try {
      await conn.write("0123456789abcdefghijklmno"); // 25 bytes
      const a = await conn.readExactly(10);
      const b = await conn.readExactly(10);
      await conn.write("XYZ");
      const c = await conn.readExactly(8);
      assert.equal(decoder.decode(a) + decoder.decode(b), "0123456789abcdefghij");
      assert.equal(decoder.decode(c), "klmnoXYZ");
      const some = await (async () => {
        await conn.write("partial");
        return decoder.decode(await conn.readSome(3));
      })();
      assert.ok("partial".startsWith(some) && some.length > 0 && some.length <= 3, some);
      assert.equal(decoder.decode(await conn.readExactly(7 - some.length)), "partial".slice(3));
    } finally {
      conn.close();
    }
    countIfSlow();
  });

  await step(
    "a server-speaks-first backend: its first bytes come right after the 200",
    async () => {
      await using banner = startEchoBackend("220 banner\r\n");
      const conn = await openProxy(endpoint);
      try {
        await conn.write(connectHead(banner.address));
        const head = await conn.readHead();
        assert.equal(head.raw, "HTTP/1.1 200 Connection Established\r\n\r\n");
        assert.equal(decoder.decode(await conn.readExactly(12)), "220 banner\r\n");
        await roundTrip(conn, "after the banner");
      } finally {
        conn.close();
      }
    },
  );

  await step("a backend that writes and closes at once: 200, its bytes, then EOF", async () => {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const serving = (async () => {
      for await (const c of listener) {
        await c.write(new TextEncoder().encode("bye\r\n")).catch(() => 0);
        c.close();
      }
    })().catch(() => {});
    try {
      const conn = await openProxy(endpoint);
      try {
        const port = (listener.addr as Deno.NetAddr).port;
        await conn.write(connectHead(`127.0.0.1:${port}`));
        const head = await conn.readHead();
        assert.equal(head.raw, "HTTP/1.1 200 Connection Established\r\n\r\n");
        assert.equal(decoder.decode(await conn.readToEnd(5_000)), "bye\r\n");
      } finally {
        conn.close();
      }
    } finally {
      listener.close();
      await serving;
    }
  });

  await step("bytes pipelined after the CONNECT head reach the backend first", async () => {
    const conn = await openProxy(endpoint);
    try {
      await conn.write(connectHead(echo.address) + "pipelined!");
      const head = await conn.readHead();
      assert.equal(head.status, 200);
      assert.equal(decoder.decode(await conn.readExactly(10)), "pipelined!");
      await roundTrip(conn, "then more");
    } finally {
      conn.close();
    }
  });

  await step("close propagates both ways", async () => {
    // The backend closes: the client sees EOF.
    const a = await tunnel(endpoint, echo.address);
    await roundTrip(a, "before backend close");
    echo.closeAll();
    assert.equal(await a.waitForEof(5_000), true, "client sees EOF after the backend closed");
    a.close();

    // The client closes: the backend sees EOF.
    const closedBefore = echo.peerClosed;
    const from = server.process.mark();
    const b = await tunnel(endpoint, echo.address);
    await roundTrip(b, "before client close");
    b.close();
    await echo.peerClosedReaches(closedBefore + 1);
    await awaitTables(server.process, (g) => g.established === 0, "the tunnel to end", { from });
    assert.equal(await metric(server, `${NS}_established_connections`), 0);
    countIfSlow();
  });

  await step("a client that closes while its dial is pending leaves no pending dial", async () => {
    const hole = await startBlackhole();
    try {
      const frontendClose = `${NS}_dial_failure_count{reason="frontend_close"}`;
      const before = await metric(server, frontendClose);
      const conn = await openProxy(endpoint);
      const from = server.process.mark();
      await conn.write(connectHead(hole.address));
      await server.process.waitForLog("forwarding DIAL_REQ", { from });
      assert.equal(await metric(server, `${NS}_pending_backend_dials`), 1);
      conn.close();
      const ended = await awaitTables(
        server.process,
        (g) => g.pending === 0,
        "the pending dial to be gone",
        { from },
      );
      assert.equal(ended["state"], "pending", "the dial was still pending when it ended");
      const failure = await server.process.waitForLog("dial failure", { from });
      assert.equal(failure["reason"], "frontend_close", "the frontend's close removed the dial");
      assert.equal(await metric(server, `${NS}_pending_backend_dials`), 0);
      assert.equal(await metric(server, frontendClose), before + 1);
    } finally {
      await hole.stop();
    }
  }, !havePython);

  await step("malformed requests get 405/400/431 and do not disturb an open tunnel", async () => {
    const alongside = await tunnel(endpoint, echo.address);
    try {
      await roundTrip(alongside, "first");
      const cases: [string, string, number, RegExp | undefined][] = [
        ["GET", `GET /success HTTP/1.1\r\nHost: x\r\n\r\n`, 405, /^this proxy only supports/],
        ["bad target", "CONNECT not-a-target HTTP/1.1\r\nHost: x\r\n\r\n", 400, undefined],
        ["no Host", `CONNECT ${echo.address} HTTP/1.1\r\n\r\n`, 400, /Host/],
        ["garbage", "\x00\x01\x02 nonsense\r\n\r\n", 400, undefined],
        [
          "70 KiB of headers",
          `CONNECT ${echo.address} HTTP/1.1\r\nHost: x\r\n` +
          `X-Big: ${"b".repeat(70 * 1024)}\r\n\r\n`,
          431,
          undefined,
        ],
      ];
      for (const [what, head, status, body] of cases) {
        const res = await connect(endpoint, "", { head });
        assert.equal(res.head.status, status, `${what}: ${res.head.raw}${res.body}`);
        assert.equal(res.head.headers["connection"], "close", what);
        if (body) assert.match(res.body, body, what);
        await roundTrip(alongside, `still fine after ${what}`);
      }
      countIfSlow();
    } finally {
      alongside.close();
    }
  });

  await step(
    "a client sending one byte every 300 ms gets 408 from the header timeout",
    async () => {
      // One more tunnel while the slow client is still dribbling, if it is.
      await getSuccess(endpoint, backend);
      countIfSlow();
      const { outcome, body, written, total } = await slow.result;
      assert.equal(outcome, 408, "the header timeout answers 408");
      assert.match(body, /request head not received in time/, "the bound that fired");
      // Every byte arrived well within any idle bound: only a bound on the whole head ends it.
      assert.ok(written < total, `answered with ${written} of ${total} head bytes sent`);
      assert.ok(tunnelsWhileSlow >= 3, `${tunnelsWhileSlow} tunnel steps ran meanwhile`);
    },
  );

  if (silent) {
    await step("a TCP client that never starts TLS is closed by the handshake bound", async () => {
      assert.ok(await silent, "still open after 20 s (node's own default is 120 s)");
      const record = await server.process.waitForLog((r) =>
        r.msg === "TLS handshake failed on the HTTP-CONNECT frontend" &&
        /timeout/i.test(String(r["error"]))
      );
      assert.match(String(record["error"]), /timeout/i, "the handshake bound fired");
    });
  }

  await step("every client connection is gone from http_connections", async () => {
    await awaitHttpConnections(server.process, 0);
    assert.equal(await metric(server, `${NS}_http_connections`), 0);
  });
}

for (const frontend of ["uds", "tcp"] as const) {
  const label = frontend === "uds" ? "UDS" : "TCP+mTLS";

  Deno.test(`http-connect over ${label}: upstream scenarios`, async (t) => {
    await using backend = startHttpBackend();
    await using echo = startEchoBackend();
    // Debug level logs "forwarding DIAL_REQ" once a dial is pending.
    const extraArgs = [...HTTP_CONNECT, "--v=5"];
    await using server = await startServer({ frontend, extraArgs });
    await using _a1 = await startAgent(server.agentPort);
    await using _a2 = await startAgent(server.agentPort);
    const endpoint = await endpointOf(server);
    await sharedScenarios(t, { server, endpoint, backend, echo });

    if (frontend !== "tcp") return;
    const curlBase = [
      "-sS",
      "--max-time",
      "20",
      "-p",
      "-x",
      `https://localhost:${server.serverPort}`,
      "--proxy-cacert",
      server.pki.caCert,
    ];
    const withCert = [
      ...curlBase,
      "--proxy-cert",
      server.pki.clientCert,
      "--proxy-key",
      server.pki.clientKey,
    ];
    await t.step({
      name: "curl through the mTLS frontend gets hello",
      ignore: !haveCurl,
      async fn() {
        const r = await run("curl", [...withCert, `http://${backend.address}/success`]);
        assert.equal(r.code, 0, r.stderr);
        assert.equal(r.stdout, "hello");
      },
    });
    await t.step({
      name: "curl without a client certificate fails",
      ignore: !haveCurl,
      async fn() {
        const r = await run("curl", [...curlBase, `http://${backend.address}/success`]);
        assert.notEqual(r.code, 0, r.stdout);
        assert.notEqual(r.stdout, "hello");
      },
    });
    await t.step({
      name: "curl to a closed port: (56) CONNECT tunnel failed, response 502",
      ignore: !haveCurl,
      async fn() {
        const r = await run("curl", [...withCert, `http://127.0.0.1:${CLOSED_PORT}/`]);
        assert.equal(r.code, 56, r.stderr);
        assert.match(r.stderr, /curl: \(56\) CONNECT tunnel failed, response 502/);
      },
    });
  });

  Deno.test(
    `http-connect over ${label}: after an agent restart, new tunnels work`,
    async () => {
      await using backend = startHttpBackend();
      await using server = await startServer({ frontend, extraArgs: HTTP_CONNECT });
      const endpoint = await endpointOf(server);
      const first: AgentProcess = await startAgent(server.agentPort);
      await getSuccess(endpoint, backend);
      await first.process.stop();
      await server.agents(0);
      assert.equal(await server.status("/readyz"), 500);
      const none = await connect(endpoint, backend.address);
      assert.equal(none.head.status, 500);
      assert.ok(
        none.body.startsWith("currently no tunnels available: No agent available\n"),
        none.body,
      );
      await using _second = await startAgent(server.agentPort);
      await server.agents(1);
      assert.equal(await server.status("/readyz"), 200);
      await getSuccess(endpoint, backend);
    },
  );

  Deno.test(
    `http-connect over ${label}: after a server restart, the agent reconnects`,
    async () => {
      await using backend = startHttpBackend();
      const first = await startServer({ frontend, extraArgs: HTTP_CONNECT });
      // The agent retries the port it was given: the new server binds the one the first reported.
      const agentPort = first.agentPort;
      await using agent = await startAgent(agentPort);
      await getSuccess(await endpointOf(first), backend);
      await first[Symbol.asyncDispose]();
      await agent.notReady();
      assert.equal(await httpStatus(`http://127.0.0.1:${agent.healthPort}/readyz`), 503);
      await using second = await startServer({ frontend, agentPort, extraArgs: HTTP_CONNECT });
      await agent.ready();
      await getSuccess(await endpointOf(second), backend);
    },
  );
}
