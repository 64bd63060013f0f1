/**
 * The server's Kubernetes API client, for agent token reviews: `--kubeconfig` (or the in-cluster
 * configuration when it is empty) loaded by `@kubernetes/client-node`, a bounded reachability
 * check the server awaits at start, one TokenReview call, and the Deno permissions all of that
 * needs ({@linkcode kubeClientNeeds}).
 *
 * `--kube-api-content-type` is accepted for compatibility, but `@kubernetes/client-node` speaks
 * JSON only: requests are always `application/json`.
 *
 * `@kubernetes/client-node` is imported only when a client is made: its dependencies read the
 * environment when they load (`debug` lists all of it), so token authentication needs the whole
 * of `--allow-env`, and a server without it never loads the library.
 *
 * @module
 */

import { dirname, isAbsolute, join } from "node:path";
import { load as loadYaml } from "js-yaml";
import { KnpError } from "@knp/core/errors";
import type { PermissionNeed } from "@knp/cli/permissions";
import { realTimers, type Timers } from "@knp/core/timers";

/** Where a pod's service-account credentials are mounted (the in-cluster configuration). */
export const IN_CLUSTER_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

/** The flag an error about the API names: `--kubeconfig`, or the flag that enabled token auth. */
function configError(kubeconfig: string, text: string, cause?: unknown): KnpError {
  // One line: a YAML error goes on with an excerpt of the file.
  const detail = text.split("\n")[0]!.trim();
  const message = kubeconfig !== ""
    ? `--kubeconfig: ${kubeconfig}: ${detail}`
    : `--agent-namespace: token authentication needs a Kubernetes API: ${detail}`;
  return new KnpError("CONFIG", message, cause === undefined ? undefined : { cause });
}

/** What one TokenReview said (`status` of an `authentication.k8s.io/v1` TokenReview). */
export interface TokenReviewStatus {
  authenticated?: boolean | undefined;
  error?: string | undefined;
  audiences?: string[] | undefined;
  user?: {
    username?: string | undefined;
    extra?: Record<string, string[]> | undefined;
  } | undefined;
}

/** The Kubernetes API calls token authentication makes. */
export interface KubeClient {
  /** The API server's URL, for logs. */
  readonly server: string;
  /** Creates a TokenReview; throws on a transport or HTTP error (never for a refusal). */
  reviewToken(token: string, audiences: string[], signal: AbortSignal): Promise<TokenReviewStatus>;
  /** `GET /version`: resolves when the API answers, throws otherwise. */
  version(signal: AbortSignal): Promise<string>;
}

/** An already-resolved value shaped as client-node's (rxjs-like) `Observable`. */
function observed<T>(value: T) {
  return { toPromise: () => Promise.resolve(value) };
}

/** Per-request options of client-node's object-parameter APIs that add an abort signal. */
function withSignal(signal: AbortSignal) {
  return {
    middleware: [{
      pre: (ctx: { setSignal(s: AbortSignal): void }) => {
        ctx.setSignal(signal);
        return observed(ctx);
      },
      post: <T>(ctx: T) => observed(ctx),
    }],
    middlewareMergeStrategy: "append" as const,
  };
}

/**
 * Loads `--kubeconfig` (in-cluster configuration when empty) into a {@linkcode KubeClient}.
 *
 * @throws {KnpError} `CONFIG` naming the flag when the configuration cannot be loaded
 */
export async function loadKubeClient(kubeconfig: string): Promise<KubeClient> {
  const k8s = await import("@kubernetes/client-node");
  const kc = new k8s.KubeConfig();
  try {
    if (kubeconfig !== "") {
      kc.loadFromFile(kubeconfig);
    } else {
      if (!Deno.env.get("KUBERNETES_SERVICE_HOST") || !Deno.env.get("KUBERNETES_SERVICE_PORT")) {
        throw new Error(
          "no --kubeconfig, and not in a cluster (KUBERNETES_SERVICE_HOST and " +
            "KUBERNETES_SERVICE_PORT are not set)",
        );
      }
      kc.loadFromCluster();
    }
  } catch (err) {
    throw configError(kubeconfig, err instanceof Error ? err.message : String(err), err);
  }
  const cluster = kc.getCurrentCluster();
  if (!cluster?.server) throw configError(kubeconfig, "no current cluster with a server URL");
  // deno-lint-ignore no-explicit-any -- the middleware's structural type matches client-node's
  const opts = (signal: AbortSignal) => withSignal(signal) as any;
  const auth = kc.makeApiClient(k8s.AuthenticationV1Api);
  const versions = kc.makeApiClient(k8s.VersionApi);
  return {
    server: cluster.server,
    async reviewToken(token, audiences, signal) {
      const review = await auth.createTokenReview({
        body: {
          apiVersion: "authentication.k8s.io/v1",
          kind: "TokenReview",
          spec: { token, audiences },
        },
      }, opts(signal));
      return (review.status ?? {}) as TokenReviewStatus;
    },
    async version(signal) {
      return (await versions.getCode({}, opts(signal))).gitVersion;
    },
  };
}

/**
 * Resolves when the API answers `GET /version` within `timeoutMs`.
 *
 * @throws {KnpError} `CONFIG` naming the flag when it does not
 */
export async function checkKubeApiReachable(
  client: KubeClient,
  kubeconfig: string,
  timeoutMs = 10_000,
): Promise<string> {
  const ac = new AbortController();
  const timer = setTimeout(
    () => ac.abort(new Error(`no answer within ${timeoutMs} ms`)),
    timeoutMs,
  );
  try {
    return await client.version(ac.signal);
  } catch (err) {
    const why = ac.signal.aborted ? String(ac.signal.reason?.message ?? ac.signal.reason) : (
      err instanceof Error ? describeError(err) : String(err)
    );
    throw configError(kubeconfig, `the API server ${client.server} is unreachable: ${why}`, err);
  } finally {
    clearTimeout(timer);
  }
}

/** An error's message with its causes (undici hides the socket error in `cause`). */
export function describeError(err: Error): string {
  const parts = [err.message];
  let cause: unknown = err.cause;
  for (let i = 0; i < 3 && cause instanceof Error; i++) {
    if (!parts.includes(cause.message)) parts.push(cause.message);
    cause = cause.cause;
  }
  return parts.join(": ");
}

/** The `host:port` of an API server URL (default ports filled in). */
function hostPort(server: string): string | undefined {
  try {
    const url = new URL(server);
    const port = url.port || (url.protocol === "http:" ? "80" : "443");
    return `${url.hostname}:${port}`;
  } catch {
    return undefined;
  }
}

/** A kubeconfig's current cluster server and the files it references. */
function kubeconfigRefs(path: string): { server?: string; files: string[] } {
  // deno-lint-ignore no-explicit-any -- a kubeconfig is untyped YAML
  const doc = loadYaml(Deno.readTextFileSync(path)) as any;
  const root = dirname(path);
  const abs = (f: unknown) =>
    typeof f === "string" && f !== "" ? [isAbsolute(f) ? f : join(root, f)] : [];
  const named = (list: unknown, name: unknown) =>
    Array.isArray(list) ? list.find((e) => e?.name === name) : undefined;
  const context = named(doc?.contexts, doc?.["current-context"])?.context;
  const cluster = named(doc?.clusters, context?.cluster)?.cluster;
  const user = named(doc?.users, context?.user)?.user;
  return {
    ...(typeof cluster?.server === "string" ? { server: cluster.server } : {}),
    files: [
      ...abs(cluster?.["certificate-authority"]),
      ...abs(user?.["client-certificate"]),
      ...abs(user?.["client-key"]),
      ...abs(user?.tokenFile),
      ...abs(user?.["auth-provider"]?.config?.tokenFile),
    ],
  };
}

/** Reads an environment variable the plan needs; undefined when unset or not granted. */
function envOrUndefined(name: string): string | undefined {
  try {
    // Asked first, so that an interactive `deno run` does not prompt for it.
    if (Deno.permissions.querySync({ name: "env", variable: name }).state !== "granted") {
      return undefined;
    }
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}

/**
 * The permissions token authentication needs: the whole environment (client-node's dependencies
 * list it when they load), read on `kubeconfig` and the files it references (or the in-cluster
 * service-account directory), and net to the API server's `host:port`. The kubeconfig is read to
 * find those; when it cannot be read yet, only the read on it is listed (granting that reveals
 * the rest).
 */
export function kubeClientNeeds(kubeconfig: string): PermissionNeed[] {
  const reason = kubeconfig !== "" ? "--kubeconfig" : "--agent-namespace (in-cluster API)";
  const needs: PermissionNeed[] = [{ kind: "env", reason: "@kubernetes/client-node" }];
  let server: string | undefined;
  if (kubeconfig !== "") {
    needs.push({ kind: "read", value: kubeconfig, reason });
    try {
      if (Deno.permissions.querySync({ name: "read", path: kubeconfig }).state !== "granted") {
        throw new Error("not readable yet");
      }
      const refs = kubeconfigRefs(kubeconfig);
      server = refs.server;
      for (const file of refs.files) needs.push({ kind: "read", value: file, reason });
    } catch { /* unreadable or invalid: the server says so at start */ }
  } else {
    needs.push({ kind: "read", value: IN_CLUSTER_DIR, reason });
    const host = envOrUndefined("KUBERNETES_SERVICE_HOST");
    const port = envOrUndefined("KUBERNETES_SERVICE_PORT");
    if (host && port) server = `https://${host.includes(":") ? `[${host}]` : host}:${port}`;
  }
  const target = server === undefined ? undefined : hostPort(server);
  if (target !== undefined) needs.push({ kind: "net", value: target, reason });
  return needs;
}

/**
 * The client's request rate limit, as client-go's: a token bucket of `burst` tokens refilled at
 * `qps` per second. Callers queue in order; one that waits longer than its bound gives up.
 */
export class TokenBucket {
  readonly #qps: number;
  readonly #burst: number;
  readonly #timers: Timers;
  #tokens: number;
  #last: number;
  #wake: number | undefined;
  readonly #waiters: { resolve(ok: boolean): void; timer: number }[] = [];

  /** `qps` and `burst` of 0 (or less) mean client-go's defaults: 5 and 10. */
  constructor(qps: number, burst: number, timers: Timers = realTimers) {
    this.#qps = qps > 0 ? qps : 5;
    this.#burst = burst > 0 ? burst : 10;
    this.#timers = timers;
    this.#tokens = this.#burst;
    this.#last = timers.now();
  }

  /** Requests waiting for their turn. */
  get waiting(): number {
    return this.#waiters.length;
  }

  /** Resolves `true` when the caller may send, `false` when `maxWaitMs` passed first. */
  take(maxWaitMs: number): Promise<boolean> {
    this.#refill();
    if (this.#waiters.length === 0 && this.#tokens >= 1) {
      this.#tokens -= 1;
      return Promise.resolve(true);
    }
    return new Promise((resolve) => {
      const waiter = { resolve, timer: 0 };
      waiter.timer = this.#timers.setTimeout(() => {
        this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
        if (this.#waiters.length === 0) this.#stopWake();
        resolve(false);
      }, maxWaitMs);
      this.#waiters.push(waiter);
      this.#schedule();
    });
  }

  /** Refuses every waiter and stops the timers. */
  close(): void {
    this.#stopWake();
    for (const w of this.#waiters.splice(0)) {
      this.#timers.clearTimeout(w.timer);
      w.resolve(false);
    }
  }

  #refill(): void {
    const now = this.#timers.now();
    this.#tokens = Math.min(this.#burst, this.#tokens + (now - this.#last) * this.#qps / 1000);
    this.#last = now;
  }

  #stopWake(): void {
    if (this.#wake !== undefined) this.#timers.clearTimeout(this.#wake);
    this.#wake = undefined;
  }

  #schedule(): void {
    if (this.#wake !== undefined || this.#waiters.length === 0) return;
    const ms = Math.max(0, Math.ceil((1 - this.#tokens) * 1000 / this.#qps));
    this.#wake = this.#timers.setTimeout(() => {
      this.#wake = undefined;
      this.#refill();
      while (this.#waiters.length > 0 && this.#tokens >= 1) {
        this.#tokens -= 1;
        const w = this.#waiters.shift()!;
        this.#timers.clearTimeout(w.timer);
        w.resolve(true);
      }
      this.#schedule();
    }, ms);
  }
}
