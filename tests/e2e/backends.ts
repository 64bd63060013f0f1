/**
 * The cluster-side endpoints that kube-apiserver reaches through knp in the e2e suite: an
 * admission webhook, a fake kubelet serving container logs, and an aggregated API server. They
 * are small HTTPS servers on node:https, because that lets each accepted socket turn Nagle off
 * (as Go servers do; otherwise delayed ACKs add ~40 ms per call and hide the proxy's latency).
 *
 * @module
 */

import { createServer, type Server } from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

/** A running HTTPS backend. */
export interface Backend extends AsyncDisposable {
  host: string;
  port: number;
  /** Requests served so far, by path prefix. */
  requests: Map<string, number>;
}

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

/** Starts an HTTPS server on `host`:0 with Nagle off on every socket. */
export async function serveHttps(
  host: string,
  tls: { cert: string; key: string },
  handler: Handler,
): Promise<Backend> {
  const requests = new Map<string, number>();
  const server: Server = createServer({
    cert: await Deno.readTextFile(tls.cert),
    key: await Deno.readTextFile(tls.key),
  }, (req, res) => {
    const prefix = (req.url ?? "/").split("?")[0]!.split("/").slice(0, 3).join("/");
    requests.set(prefix, (requests.get(prefix) ?? 0) + 1);
    handler(req, res);
  });
  server.on("secureConnection", (socket) => socket.setNoDelay(true));
  const sockets = new Set<import("node:stream").Duplex>();
  server.on("connection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    host,
    port,
    requests,
    async [Symbol.asyncDispose]() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

async function body(req: IncomingMessage): Promise<string> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of req) chunks.push(chunk as Uint8Array);
  return new TextDecoder().decode(
    chunks.reduce((a, b) => {
      const out = new Uint8Array(a.length + b.length);
      out.set(a);
      out.set(b, a.length);
      return out;
    }, new Uint8Array()),
  );
}

/** What the webhook does with each connection. */
export interface WebhookOptions {
  /** Answer with `Connection: close`, so kube-apiserver dials anew for every call. */
  closeEach: () => boolean;
  /** Called when a review arrives; the answer waits for the returned promise. */
  onReview?: () => Promise<void> | void;
}

/** A validating admission webhook at `/validate` that allows everything. */
export function webhookHandler(options: WebhookOptions): Handler {
  return (req, res) => {
    body(req).then(async (text) => {
      const review = JSON.parse(text);
      await options.onReview?.();
      const answer = JSON.stringify({
        apiVersion: "admission.k8s.io/v1",
        kind: "AdmissionReview",
        response: { uid: review.request?.uid ?? "", allowed: true },
      });
      const headers: Record<string, string> = { "content-type": "application/json" };
      if (options.closeEach()) headers.connection = "close";
      res.writeHead(200, headers);
      res.end(answer);
    }).catch((err) => {
      res.writeHead(400);
      res.end(String(err));
    });
  };
}

/** Deterministic bytes: the same `n` bytes for the same `seed`, for byte-exact checks. */
export function patternBytes(n: number, seed = 1): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    // Printable ASCII with newlines, so kubectl and logs treat it as text.
    out[i] = i % 80 === 79 ? 10 : 33 + ((x >>> 0) % 90);
  }
  return out;
}

/** A fake kubelet's container-log endpoint, with follow streams the test drives. */
export class FakeKubelet {
  /** The bytes a plain `kubectl logs` gets. */
  readonly log: Uint8Array;
  #follows: ServerResponse[] = [];
  #followWaiters: ((res: ServerResponse) => void)[] = [];
  /** Resolves each time a follow stream is closed by the client before the kubelet ended it. */
  clientClosed: PromiseWithResolvers<void> = Promise.withResolvers();

  constructor(log: Uint8Array) {
    this.log = log;
  }

  /** The handler for `/containerLogs/{namespace}/{pod}/{container}`. */
  readonly handler: Handler = (req, res) => {
    const url = new URL(req.url ?? "/", "https://kubelet");
    if (!url.pathname.startsWith("/containerLogs/")) {
      res.writeHead(404);
      res.end();
      return;
    }
    res.writeHead(200, { "content-type": "text/plain" });
    if (url.searchParams.get("follow") !== "true") {
      res.end(this.log);
      return;
    }
    res.write(this.log);
    res.on("close", () => {
      if (!res.writableEnded) this.clientClosed.resolve();
    });
    const waiter = this.#followWaiters.shift();
    if (waiter) waiter(res);
    else this.#follows.push(res);
  };

  /** Resolves with the next follow stream kube-apiserver opens. */
  nextFollow(): Promise<ServerResponse> {
    const ready = this.#follows.shift();
    if (ready) return Promise.resolve(ready);
    return new Promise((resolve) => this.#followWaiters.push(resolve));
  }
}

/** The aggregated API group the e2e APIService registers. */
export const API_GROUP = "e2e.knp.dev";

/** An aggregated API server: discovery, a `widgets` list and watch, and one large object. */
export class AggregatedApi {
  readonly big: Uint8Array;
  #watchers = new Set<ServerResponse>();

  /** `bigBytes` is the size of the large object's JSON (at least 64 MiB in the suite). */
  constructor(bigBytes: number) {
    const prefix = `{"apiVersion":"${API_GROUP}/v1","kind":"Widget","metadata":{"name":"big",` +
      `"namespace":"default"},"data":"`;
    const suffix = '"}\n';
    const fill = patternBytes(bigBytes - prefix.length - suffix.length, 7).map((b) =>
      b === 10 || b === 34 || b === 92 ? 97 : b
    );
    const enc = new TextEncoder();
    this.big = new Uint8Array(bigBytes);
    this.big.set(enc.encode(prefix));
    this.big.set(fill, prefix.length);
    this.big.set(enc.encode(suffix), bigBytes - suffix.length);
  }

  /** Sends a watch event to every open watch. */
  emit(type: "ADDED" | "MODIFIED", name: string): void {
    const line = JSON.stringify({ type, object: widget(name) }) + "\n";
    for (const w of this.#watchers) w.write(line);
  }

  #watcherWaiters: (() => void)[] = [];

  /**
   * Resolves on the first request kube-apiserver's OpenAPI v3 controller sends through the
   * APIService's proxy handler. That handler answers 503 in-process until it has seen the
   * APIService Available, a step that lags the status kube-apiserver writes; a request reaching
   * this server proves the handler now forwards.
   */
  readonly proxying: PromiseWithResolvers<void> = Promise.withResolvers<void>();

  /** The number of open watch streams. */
  get watchers(): number {
    return this.#watchers.size;
  }

  /** Resolves once more than `count` watch streams are open. */
  nextWatcher(count: number): Promise<void> {
    if (this.#watchers.size > count) return Promise.resolve();
    return new Promise((resolve) => this.#watcherWaiters.push(resolve));
  }

  readonly handler: Handler = (req, res) => {
    const url = new URL(req.url ?? "/", "https://api");
    const json = (value: unknown) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify(value));
    };
    const gv = `${API_GROUP}/v1`;
    const path = url.pathname;
    if (path.startsWith("/openapi/")) this.proxying.resolve();
    if (path === "/apis") return json(groupList());
    if (path === `/apis/${API_GROUP}`) return json(groupList().groups[0]);
    if (path === `/apis/${gv}`) return json(resourceList());
    if (path === `/apis/${gv}/namespaces/default/widgets/big`) {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(this.big);
      return;
    }
    if (path === `/apis/${gv}/namespaces/default/widgets`) {
      if (url.searchParams.get("watch") === "true" || url.searchParams.get("watch") === "1") {
        res.writeHead(200, { "content-type": "application/json" });
        res.write(JSON.stringify({ type: "ADDED", object: widget("first") }) + "\n");
        this.#watchers.add(res);
        for (const w of this.#watcherWaiters.splice(0)) w();
        res.on("close", () => this.#watchers.delete(res));
        return;
      }
      return json({
        apiVersion: gv,
        kind: "WidgetList",
        metadata: { resourceVersion: "1" },
        items: [widget("first")],
      });
    }
    res.writeHead(404, { "content-type": "application/json" });
    res.end(JSON.stringify({ kind: "Status", apiVersion: "v1", status: "Failure", code: 404 }));
  };
}

function widget(name: string) {
  return {
    apiVersion: `${API_GROUP}/v1`,
    kind: "Widget",
    metadata: { name, namespace: "default", resourceVersion: "1" },
  };
}

function groupList() {
  const version = { groupVersion: `${API_GROUP}/v1`, version: "v1" };
  return {
    kind: "APIGroupList",
    apiVersion: "v1",
    groups: [{ name: API_GROUP, versions: [version], preferredVersion: version }],
  };
}

function resourceList() {
  return {
    kind: "APIResourceList",
    apiVersion: "v1",
    groupVersion: `${API_GROUP}/v1`,
    resources: [{
      name: "widgets",
      singularName: "widget",
      namespaced: true,
      kind: "Widget",
      verbs: ["get", "list", "watch"],
    }],
  };
}
