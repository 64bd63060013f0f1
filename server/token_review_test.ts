/**
 * Tests of the TokenReview authenticator against a stand-in kube-apiserver: a real HTTPS server
 * (node:https, client certificates required) on 127.0.0.1 that serves `GET /version` and
 * `POST /apis/authentication.k8s.io/v1/tokenreviews` from a table. The real kube-apiserver is
 * covered by tests/e2e_auth_test.ts. Time (cache expiry, rate limit) is an injected clock.
 *
 * @module
 */

import assert from "node:assert/strict";
import { fakeTimers } from "@knp/testing/fakes";
import https from "node:https";
import type { ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { generateTestPki, type TestPkiFiles, writeTestPki } from "@knp/testing/certs";
import { KnpError } from "@knp/core/errors";
import type { AgentCredentials } from "./agent_auth.ts";
import { loadKubeClient, type TokenReviewStatus } from "./kube_client.ts";
import {
  TokenAuthenticator,
  tokenAuthenticatorFromOptions,
  type TokenAuthOptions,
} from "./token_review.ts";
import { nullLogger } from "@knp/core/log";

/** A stand-in for kube-apiserver's TokenReview API. */
class StandInApiServer {
  readonly reviews: { token: string; audiences: string[] }[] = [];
  readonly answers = new Map<string, TokenReviewStatus | number>();
  /** While set, review answers wait for it. */
  hold: Promise<void> | undefined;
  #server: https.Server;
  #reviewSeen: (() => void)[] = [];

  constructor(files: TestPkiFiles) {
    this.#server = https.createServer({
      cert: Deno.readTextFileSync(files.serverCert),
      key: Deno.readTextFileSync(files.serverKey),
      ca: Deno.readTextFileSync(files.caCert),
      requestCert: true,
      rejectUnauthorized: true,
    }, (req, res) => {
      let body = "";
      req.on("data", (c) => body += c);
      req.on("end", () => this.#answer(req.method ?? "", req.url ?? "", body, res));
    });
  }

  async listen(): Promise<string> {
    await new Promise<void>((r) => this.#server.listen(0, "127.0.0.1", r));
    return `https://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
  }

  /** Resolves once `n` reviews have arrived. */
  reviewed(n: number): Promise<void> {
    if (this.reviews.length >= n) return Promise.resolve();
    return new Promise((r) => this.#reviewSeen.push(() => this.reviews.length >= n && r()));
  }

  async #answer(method: string, url: string, body: string, res: ServerResponse) {
    const json = (status: number, obj: unknown) => {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(obj));
    };
    if (method === "GET" && url === "/version") return json(200, { gitVersion: "v0-stand-in" });
    if (method !== "POST" || url !== "/apis/authentication.k8s.io/v1/tokenreviews") {
      return json(404, { kind: "Status", message: "not found" });
    }
    const review = JSON.parse(body);
    this.reviews.push({ token: review.spec.token, audiences: review.spec.audiences });
    for (const f of this.#reviewSeen) f();
    await this.hold;
    const answer = this.answers.get(review.spec.token) ?? { authenticated: false };
    if (typeof answer === "number") return json(answer, { kind: "Status", message: "boom" });
    json(201, { ...review, status: answer });
  }

  close(): Promise<void> {
    this.#server.closeAllConnections();
    return new Promise((r) => this.#server.close(() => r()));
  }
}

/** A JWT-shaped token (unsigned: only the stand-in reads it) with an `exp` in seconds. */
function jwt(name: string, exp?: number): string {
  const b64 = (o: unknown) =>
    new TextEncoder().encode(JSON.stringify(o)).toBase64({
      alphabet: "base64url",
      omitPadding: true,
    });
  return `${b64({ alg: "RS256" })}.${b64({ sub: name, ...(exp ? { exp } : {}) })}.sig`;
}

function creds(...authorization: string[]): AgentCredentials {
  return {
    metadata: (k) => (k === "authorization" ? authorization : []),
    peer: "127.0.0.1:1",
    link: "gRPC",
  };
}

const SA = (ns: string, sa: string, node?: string): TokenReviewStatus => ({
  authenticated: true,
  user: {
    username: `system:serviceaccount:${ns}:${sa}`,
    ...(node ? { extra: { "authentication.kubernetes.io/node-name": [node] } } : {}),
  },
});

async function withStandIn(
  fn: (
    ctx: { api: StandInApiServer; kubeconfig: string; dir: string; files: TestPkiFiles },
  ) => Promise<void>,
) {
  const dir = await Deno.makeTempDir({ prefix: "knp-tokenreview-" });
  const files = await writeTestPki(dir, await generateTestPki());
  const api = new StandInApiServer(files);
  const url = await api.listen();
  const kubeconfig = join(dir, "kubeconfig");
  // Relative paths: client-node resolves them against the kubeconfig's directory.
  await Deno.writeTextFile(
    kubeconfig,
    `apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: ${url}\n` +
      `    certificate-authority: ca.crt\nusers:\n- name: u\n  user:\n` +
      `    client-certificate: client.crt\n    client-key: client.key\ncontexts:\n` +
      `- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\n`,
  );
  try {
    await fn({ api, kubeconfig, dir, files });
  } finally {
    await api.close();
    await Deno.remove(dir, { recursive: true });
  }
}

async function authenticator(kubeconfig: string, extra: Partial<TokenAuthOptions> = {}) {
  return new TokenAuthenticator({
    namespace: "kube-system",
    serviceAccount: "konnectivity-agent",
    audience: "system:konnectivity-server",
    client: await loadKubeClient(kubeconfig),
    ...extra,
  });
}

async function refusal(p: Promise<unknown>): Promise<string> {
  const err = await p.then(() => undefined, (e) => e);
  assert.ok(err instanceof KnpError, `expected a refusal, got ${err}`);
  assert.equal(err.code, "UNAUTHENTICATED");
  return err.message;
}

Deno.test("token review: the expected service account is admitted, with its node", async () => {
  await withStandIn(async ({ api, kubeconfig }) => {
    const auth = await authenticator(kubeconfig);
    const token = jwt("good");
    api.answers.set(token, SA("kube-system", "konnectivity-agent", "node-1"));
    const identity = await auth.authenticate(creds(`Bearer ${token}`));
    assert.deepEqual(identity, {
      kind: "service-account",
      name: "system:serviceaccount:kube-system:konnectivity-agent",
      node: "node-1",
      names: ["system:serviceaccount:kube-system:konnectivity-agent"],
    });
    assert.deepEqual(api.reviews, [{ token, audiences: ["system:konnectivity-server"] }]);
    auth.close();
  });
});

Deno.test("token review: every refusal keeps upstream's wording", async () => {
  await withStandIn(async ({ api, kubeconfig }) => {
    const auth = await authenticator(kubeconfig);
    assert.match(
      await refusal(auth.authenticate(creds())),
      /^Authentication context was not found in metadata/,
    );
    assert.equal(
      await refusal(auth.authenticate(creds("Bearer a", "Bearer b"))),
      "too many (2) tokens are received",
    );
    assert.equal(
      await refusal(auth.authenticate(creds("Basic abc"))),
      'received token does not have "Bearer " prefix',
    );
    assert.equal(api.reviews.length, 0, "metadata refusals never reach the API");
    const cases: [TokenReviewStatus | number, string | RegExp][] = [
      [{ error: "token expired" }, "lookup failed: token expired"],
      [{ authenticated: false }, "lookup failed: service account jwt not valid"],
      [
        { authenticated: true, user: { username: "alice" } },
        /lookup failed: unexpected username format/,
      ],
      [
        { authenticated: true, user: { username: "system:node:n1:x" } },
        /lookup failed: username returned is not a service account/,
      ],
      [
        SA("default", "konnectivity-agent"),
        'lookup failed: incoming request from "default" namespace. Expected "kube-system"',
      ],
      [
        SA("kube-system", "other"),
        'lookup failed: incoming request from "other" service account. Expected "konnectivity-agent"',
      ],
      [500, /^Failed to authenticate request\. err:.*500/],
    ];
    for (const [i, [answer, text]] of cases.entries()) {
      const token = jwt(`case-${i}`);
      api.answers.set(token, answer);
      const message = await refusal(auth.authenticate(creds(`Bearer ${token}`)));
      const prefix = "Failed to validate authentication token, err:";
      assert.ok(message.startsWith(prefix), message);
      if (typeof text === "string") assert.equal(message.slice(prefix.length), text);
      else assert.match(message.slice(prefix.length), text);
    }
    auth.close();
  });
});

Deno.test("token review: one review serves every agent with the token until its exp", async () => {
  await withStandIn(async ({ api, kubeconfig }) => {
    const { clock, timers } = fakeTimers(1_000);
    let wall = 1_700_000_000_000;
    const auth = await authenticator(kubeconfig, { timers, wallClock: () => wall });
    const token = jwt("shared", wall / 1000 + 60);
    api.answers.set(token, SA("kube-system", "konnectivity-agent"));
    api.hold = new Promise<void>((release) => {
      // 1000 concurrent agents with one token: one request, released once it arrived.
      api.reviewed(1).then(() => release());
    });
    const many = await Promise.all(
      Array.from({ length: 1000 }, () => auth.authenticate(creds(`Bearer ${token}`))),
    );
    assert.equal(many.length, 1000);
    assert.equal(api.reviews.length, 1);
    api.hold = undefined;
    await auth.authenticate(creds(`Bearer ${token}`));
    assert.equal(api.reviews.length, 1, "cached");
    clock.tick(59_000);
    wall += 59_000;
    await auth.authenticate(creds(`Bearer ${token}`));
    assert.equal(api.reviews.length, 1, "still before exp");
    clock.tick(1_000);
    wall += 1_000;
    await auth.authenticate(creds(`Bearer ${token}`));
    assert.equal(api.reviews.length, 2, "reviewed again at exp");
    auth.close();
  });
});

Deno.test("token review: the cache is capped in time and entries (LRU)", async () => {
  await withStandIn(async ({ api, kubeconfig }) => {
    const { clock, timers } = fakeTimers(1_000);
    const auth = await authenticator(kubeconfig, { timers, maxCacheTtlMs: 5_000, maxEntries: 2 });
    const [a, b, c] = ["a", "b", "c"].map((n) => jwt(n, 4_000_000_000));
    for (const t of [a!, b!, c!]) api.answers.set(t, SA("kube-system", "konnectivity-agent"));
    await auth.authenticate(creds(`Bearer ${a}`));
    await auth.authenticate(creds(`Bearer ${b}`));
    await auth.authenticate(creds(`Bearer ${a}`)); // a is now the most recently used
    await auth.authenticate(creds(`Bearer ${c}`)); // evicts b
    assert.equal(auth.cached, 2);
    assert.equal(api.reviews.length, 3);
    await auth.authenticate(creds(`Bearer ${a}`));
    assert.equal(api.reviews.length, 3, "a stayed");
    await auth.authenticate(creds(`Bearer ${b}`));
    assert.equal(api.reviews.length, 4, "b was evicted");
    clock.tick(5_000);
    await auth.authenticate(creds(`Bearer ${b}`));
    assert.equal(api.reviews.length, 5, "the time cap applies to a far exp");
    auth.close();
  });
});

Deno.test("token review: refusals are cached briefly, API failures not at all", async () => {
  await withStandIn(async ({ api, kubeconfig }) => {
    const { clock, timers } = fakeTimers(1_000);
    const auth = await authenticator(kubeconfig, { timers, refusalTtlMs: 2_000 });
    const bad = jwt("bad");
    api.answers.set(bad, { authenticated: false });
    await refusal(auth.authenticate(creds(`Bearer ${bad}`)));
    await refusal(auth.authenticate(creds(`Bearer ${bad}`)));
    assert.equal(api.reviews.length, 1);
    clock.tick(2_000);
    await refusal(auth.authenticate(creds(`Bearer ${bad}`)));
    assert.equal(api.reviews.length, 2);
    const flaky = jwt("flaky");
    api.answers.set(flaky, 503);
    await refusal(auth.authenticate(creds(`Bearer ${flaky}`)));
    api.answers.set(flaky, SA("kube-system", "konnectivity-agent"));
    await auth.authenticate(creds(`Bearer ${flaky}`));
    assert.equal(api.reviews.length, 4, "the failure was not cached");
    auth.close();
  });
});

Deno.test("token review: reviews beyond qps/burst wait their turn, bounded", async () => {
  await withStandIn(async ({ api, kubeconfig }) => {
    const { clock, timers } = fakeTimers(1_000);
    const auth = await authenticator(kubeconfig, {
      timers,
      qps: 1,
      burst: 1,
      maxQueueWaitMs: 1_500,
    });
    const [a, b, c] = ["a", "b", "c"].map((n) => jwt(n));
    for (const t of [a!, b!, c!]) api.answers.set(t, SA("kube-system", "konnectivity-agent"));
    await auth.authenticate(creds(`Bearer ${a}`)); // the burst
    const second = auth.authenticate(creds(`Bearer ${b}`));
    const third = auth.authenticate(creds(`Bearer ${c}`));
    assert.equal(api.reviews.length, 1, "b and c wait for tokens");
    clock.tick(1_000); // one token: b goes
    await second;
    assert.equal(api.reviews.length, 2);
    clock.tick(500); // c waited its bound
    assert.match(await refusal(third), /^token review throttled/);
    assert.equal(api.reviews.length, 2);
    // Agents with cached tokens are not affected by the queue.
    await auth.authenticate(creds(`Bearer ${a}`));
    auth.close();
  });
});

Deno.test("token review: qps 0 means client-go's 5 qps, burst 10", async () => {
  await withStandIn(async ({ api, kubeconfig }) => {
    const { clock, timers } = fakeTimers(1_000);
    const auth = await authenticator(kubeconfig, { timers, qps: 0, burst: 0 });
    const tokens = Array.from({ length: 11 }, (_, i) => jwt(`t${i}`));
    for (const t of tokens) api.answers.set(t, SA("kube-system", "konnectivity-agent"));
    const all = tokens.map((t) => auth.authenticate(creds(`Bearer ${t}`)));
    await api.reviewed(10);
    assert.equal(api.reviews.length, 10);
    clock.tick(199);
    assert.equal(api.reviews.length, 10);
    clock.tick(1);
    await Promise.all(all);
    assert.equal(api.reviews.length, 11);
    auth.close();
  });
});

Deno.test("token review: the factory is off without --agent-namespace and names the flag when it cannot work", async () => {
  await withStandIn(async ({ api, kubeconfig, dir }) => {
    const flags = {
      agentNamespace: "kube-system",
      agentServiceAccount: "konnectivity-agent",
      authenticationAudience: "aud",
      kubeconfig,
      kubeconfigQps: 0,
      kubeconfigBurst: 0,
      kubeApiContentType: "application/vnd.kubernetes.protobuf",
    };
    assert.equal(
      await tokenAuthenticatorFromOptions({ ...flags, agentNamespace: "" }, nullLogger),
      undefined,
    );
    const auth = await tokenAuthenticatorFromOptions(flags, nullLogger);
    await auth!.checkKubeApiReachable();
    auth!.close();
    const configError = async (p: Promise<unknown>) => {
      const err = await p.then(() => undefined, (e) => e);
      assert.ok(err instanceof KnpError && err.code === "CONFIG", String(err));
      assert.ok(!err.message.includes("\n"), "one line");
      return err.message;
    };
    const missing = join(dir, "missing");
    assert.match(
      await configError(
        tokenAuthenticatorFromOptions({ ...flags, kubeconfig: missing }, nullLogger),
      ),
      new RegExp(`^--kubeconfig: ${missing}: `),
    );
    const broken = join(dir, "broken");
    await Deno.writeTextFile(broken, "clusters: [\n");
    assert.match(
      await configError(
        tokenAuthenticatorFromOptions({ ...flags, kubeconfig: broken }, nullLogger),
      ),
      new RegExp(`^--kubeconfig: ${broken}: `),
    );
    if (!Deno.env.get("KUBERNETES_SERVICE_HOST")) {
      assert.match(
        await configError(tokenAuthenticatorFromOptions({ ...flags, kubeconfig: "" }, nullLogger)),
        /^--agent-namespace: token authentication needs a Kubernetes API: no --kubeconfig, and not in a cluster/,
      );
    }
    // An API that does not answer: a closed port.
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const closedPort = (listener.addr as Deno.NetAddr).port;
    listener.close();
    const unreachable = join(dir, "unreachable");
    await Deno.writeTextFile(
      unreachable,
      (await Deno.readTextFile(kubeconfig)).replace(
        /server: .*/,
        `server: https://127.0.0.1:${closedPort}`,
      ),
    );
    const down = await tokenAuthenticatorFromOptions(
      { ...flags, kubeconfig: unreachable },
      nullLogger,
    );
    assert.match(
      await configError(down!.checkKubeApiReachable()),
      new RegExp(
        `^--kubeconfig: ${unreachable}: the API server https://127.0.0.1:${closedPort} is unreachable: `,
      ),
    );
    down!.close();
    assert.equal(api.reviews.length, 0);
  });
});
