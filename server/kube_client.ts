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

import type { KnpError } from "@knp/core/errors";
import { describeError, kubeConfigError, loadKubeConfig, withSignal } from "@knp/cli/kube_client";
import { realTimers, type Timers } from "@knp/core/timers";

export { describeError, IN_CLUSTER_DIR, kubeClientNeeds } from "@knp/cli/kube_client";

/** What token authentication is, for the errors about its API (see `@knp/cli/kube_client`). */
const TOKEN_AUTH = { flag: "--agent-namespace", what: "token authentication" };

/** The flag an error about the API names: `--kubeconfig`, or the flag that enabled token auth. */
function configError(kubeconfig: string, text: string, cause?: unknown): KnpError {
  return kubeConfigError(kubeconfig, TOKEN_AUTH, text, cause);
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

/**
 * Loads `--kubeconfig` (in-cluster configuration when empty) into a {@linkcode KubeClient}.
 *
 * @throws {KnpError} `CONFIG` naming the flag when the configuration cannot be loaded
 */
export async function loadKubeClient(kubeconfig: string): Promise<KubeClient> {
  const { k8s, kc, server } = await loadKubeConfig(kubeconfig, TOKEN_AUTH);
  const opts = withSignal;
  const auth = kc.makeApiClient(k8s.AuthenticationV1Api);
  const versions = kc.makeApiClient(k8s.VersionApi);
  return {
    server,
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
