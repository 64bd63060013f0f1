/**
 * Service-account token authentication of agents, as upstream's `--agent-namespace`,
 * `--agent-service-account` and `--authentication-audience`: the agent sends
 * `authorization: Bearer <token>`, the server asks the Kubernetes API with a TokenReview (audience
 * `--authentication-audience`) and admits `system:serviceaccount:<ns>:<sa>` only. Refusals keep
 * upstream's wording.
 *
 * Unlike upstream (one TokenReview per connect), reviews are shared: an answer is cached by the
 * token's SHA-256 until the token's `exp` (read from the JWT without verifying it, only as a bound;
 * at most {@linkcode TokenAuthOptions.maxCacheTtlMs}), concurrent reviews of one token are one
 * request, and requests to the API are rate-limited by `--kubeconfig-qps` / `--kubeconfig-burst`
 * (a queued review waits its turn, bounded). A refusal is cached for a moment only and an API
 * error not at all. A revoked token (its service account deleted, say) stays admitted until its
 * cache entry expires.
 *
 * @module
 */

import { createHash } from "node:crypto";
import type { Logger } from "@knp/core/log";
import { nullLogger } from "@knp/core/log";
import { errorMessage } from "@knp/core/errors";
import { realTimers, type Timers } from "@knp/core/timers";
import { AUTHORIZATION_KEY, BEARER_PREFIX } from "@knp/proto";
import {
  type AgentAuthenticator,
  type AgentCredentials,
  type AgentIdentity,
  unauthenticated,
} from "./agent_auth.ts";
import {
  checkKubeApiReachable,
  describeError,
  type KubeClient,
  loadKubeClient,
  TokenBucket,
  type TokenReviewStatus,
} from "./kube_client.ts";

/** The `extra` key of a node-bound token naming its node. */
export const NODE_NAME_EXTRA = "authentication.kubernetes.io/node-name";

/** Upstream's prefix of every refusal that comes from a review. */
const VALIDATE = "Failed to validate authentication token, err:";

/** Options of {@linkcode TokenAuthenticator}. */
export interface TokenAuthOptions {
  /** `--agent-namespace`. */
  namespace: string;
  /** `--agent-service-account`. */
  serviceAccount: string;
  /** `--authentication-audience`. */
  audience: string;
  /** The Kubernetes API. */
  client: KubeClient;
  /** `--kubeconfig` (empty: in-cluster), named by start-up errors. @default "" */
  kubeconfig?: string;
  /** `--kubeconfig-qps` (0: 5). */
  qps?: number;
  /** `--kubeconfig-burst` (0: 10). */
  burst?: number;
  /** Monotonic clock and timers. @default realTimers */
  timers?: Timers;
  /** Wall clock in ms, to compare with a token's `exp`. @default Date.now */
  wallClock?: () => number;
  /** Longest time an admitted token is cached. @default 600000 */
  maxCacheTtlMs?: number;
  /** How long a refusal is cached. @default 2000 */
  refusalTtlMs?: number;
  /** Most cached tokens (least recently used go first). @default 10000 */
  maxEntries?: number;
  /** Longest wait for a turn under the rate limit. @default 10000 */
  maxQueueWaitMs?: number;
  /** Bound on one TokenReview request. @default 10000 */
  reviewTimeoutMs?: number;
  logger?: Logger;
}

type Outcome = { identity: AgentIdentity } | { refusal: string };

/** The bearer token of the credentials, or upstream's refusal. */
export function bearerToken(credentials: AgentCredentials): string {
  const values = credentials.metadata(AUTHORIZATION_KEY);
  if (values.length === 0) {
    throw unauthenticated(
      `Authentication context was not found in metadata (no "${AUTHORIZATION_KEY}" on the ` +
        `${credentials.link} link)`,
    );
  }
  if (values.length > 1) throw unauthenticated(`too many (${values.length}) tokens are received`);
  const value = values[0]!;
  if (!value.startsWith(BEARER_PREFIX)) {
    throw unauthenticated(`received token does not have "${BEARER_PREFIX}" prefix`);
  }
  return value.slice(BEARER_PREFIX.length);
}

/** The `exp` claim (seconds) of a JWT, read without verifying anything; undefined if none. */
export function unverifiedExpiry(token: string): number | undefined {
  const payload = token.split(".")[1];
  if (payload === undefined) return undefined;
  try {
    const json = JSON.parse(new TextDecoder().decode(Uint8Array.fromBase64(payload, {
      alphabet: "base64url",
    })));
    return typeof json?.exp === "number" && Number.isFinite(json.exp) ? json.exp : undefined;
  } catch {
    return undefined;
  }
}

/** What a review's status means for `namespace`/`serviceAccount` (upstream's checks, in order). */
export function reviewOutcome(
  status: TokenReviewStatus,
  namespace: string,
  serviceAccount: string,
): Outcome {
  const refuse = (why: string): Outcome => ({ refusal: `${VALIDATE}lookup failed: ${why}` });
  if (status.error) return refuse(status.error);
  if (!status.authenticated) return refuse("service account jwt not valid");
  const username = status.user?.username ?? "";
  const parts = username.split(":");
  if (parts.length !== 4) return refuse(`unexpected username format (${JSON.stringify(username)})`);
  if (parts[0] !== "system" || parts[1] !== "serviceaccount") {
    return refuse(`username returned is not a service account (${JSON.stringify(username)})`);
  }
  if (parts[2] !== namespace) {
    return refuse(
      `incoming request from ${JSON.stringify(parts[2])} namespace. ` +
        `Expected ${JSON.stringify(namespace)}`,
    );
  }
  if (parts[3] !== serviceAccount) {
    return refuse(
      `incoming request from ${JSON.stringify(parts[3])} service account. ` +
        `Expected ${JSON.stringify(serviceAccount)}`,
    );
  }
  const node = status.user?.extra?.[NODE_NAME_EXTRA]?.[0];
  return { identity: { kind: "service-account", name: username, node, names: [username] } };
}

/** Authenticates agents by TokenReview of their bearer token, cached, coalesced, rate-limited. */
export class TokenAuthenticator implements AgentAuthenticator {
  /** For the start-up log. */
  readonly description: string;
  readonly #o: TokenAuthOptions;
  readonly #timers: Timers;
  readonly #bucket: TokenBucket;
  readonly #cache = new Map<string, { outcome: Outcome; expiresAt: number }>();
  readonly #inflight = new Map<string, Promise<Outcome>>();
  readonly #log: Logger;
  #reviews = 0;

  /** Reviews tokens through `options.client` (see {@linkcode TokenAuthOptions}). */
  constructor(options: TokenAuthOptions) {
    this.#o = options;
    this.#timers = options.timers ?? realTimers;
    this.#bucket = new TokenBucket(options.qps ?? 0, options.burst ?? 0, this.#timers);
    this.#log = options.logger ?? nullLogger;
    this.description = `service-account token (TokenReview by ${options.client.server}: ` +
      `system:serviceaccount:${options.namespace}:${options.serviceAccount}, ` +
      `audience ${JSON.stringify(options.audience)})`;
  }

  /** TokenReview requests sent so far. */
  get reviews(): number {
    return this.#reviews;
  }

  /** Cached tokens. */
  get cached(): number {
    return this.#cache.size;
  }

  /** The identity the bearer token proves; throws `UNAUTHENTICATED` with the reason. */
  async authenticate(credentials: AgentCredentials): Promise<AgentIdentity> {
    const token = bearerToken(credentials);
    const key = createHash("sha256").update(token).digest("hex");
    const outcome = this.#fromCache(key) ?? await this.#shared(key, token);
    if ("refusal" in outcome) throw unauthenticated(outcome.refusal);
    return outcome.identity;
  }

  /**
   * `GET /version` within `timeoutMs`; throws `CONFIG` naming the flag when it fails.
   *
   * @param kubeconfig `--kubeconfig`, for the message (default: the one the options gave)
   */
  async checkKubeApiReachable(
    kubeconfig: string = this.#o.kubeconfig ?? "",
    timeoutMs = 10_000,
  ): Promise<void> {
    const version = await checkKubeApiReachable(this.#o.client, kubeconfig, timeoutMs);
    this.#log.info("Kubernetes API reachable for token reviews", {
      server: this.#o.client.server,
      version,
    });
  }

  /** Refuses queued reviews and stops the rate limiter's timers. */
  close(): void {
    this.#bucket.close();
  }

  #fromCache(key: string): Outcome | undefined {
    const entry = this.#cache.get(key);
    if (entry === undefined) return undefined;
    this.#cache.delete(key);
    if (entry.expiresAt <= this.#timers.now()) return undefined;
    this.#cache.set(key, entry); // most recently used last
    return entry.outcome;
  }

  #store(key: string, outcome: Outcome, ttlMs: number): void {
    if (!(ttlMs > 0)) return;
    this.#cache.delete(key);
    this.#cache.set(key, { outcome, expiresAt: this.#timers.now() + ttlMs });
    const max = this.#o.maxEntries ?? 10_000;
    for (const oldest of this.#cache.keys()) {
      if (this.#cache.size <= max) break;
      this.#cache.delete(oldest);
    }
  }

  #shared(key: string, token: string): Promise<Outcome> {
    let pending = this.#inflight.get(key);
    if (pending === undefined) {
      pending = this.#review(key, token).finally(() => this.#inflight.delete(key));
      this.#inflight.set(key, pending);
    }
    return pending;
  }

  async #review(key: string, token: string): Promise<Outcome> {
    if (!await this.#bucket.take(this.#o.maxQueueWaitMs ?? 10_000)) {
      throw unauthenticated(
        `token review throttled (--kubeconfig-qps/--kubeconfig-burst; ` +
          `${this.#bucket.waiting} reviews waiting)`,
      );
    }
    const status = await this.#ask(token);
    const outcome = reviewOutcome(status, this.#o.namespace, this.#o.serviceAccount);
    this.#log.debug("agent token reviewed", {
      username: status.user?.username,
      ...("refusal" in outcome ? { refusal: outcome.refusal } : {}),
    });
    if ("refusal" in outcome) {
      this.#store(key, outcome, this.#o.refusalTtlMs ?? 2_000);
    } else {
      this.#store(key, outcome, this.#successTtl(token));
    }
    return outcome;
  }

  /** Until the token's `exp`, at most `maxCacheTtlMs`; a token without `exp` gets the maximum. */
  #successTtl(token: string): number {
    const max = this.#o.maxCacheTtlMs ?? 600_000;
    const exp = unverifiedExpiry(token);
    if (exp === undefined) return max;
    return Math.min(max, exp * 1000 - (this.#o.wallClock ?? Date.now)());
  }

  /** One TokenReview, bounded; an API failure is upstream's "Failed to authenticate request". */
  async #ask(token: string): Promise<TokenReviewStatus> {
    const ac = new AbortController();
    const bound = this.#o.reviewTimeoutMs ?? 10_000;
    const timer = this.#timers.setTimeout(
      () => ac.abort(new Error(`no answer in ${bound} ms`)),
      bound,
    );
    this.#reviews++;
    try {
      return await this.#o.client.reviewToken(token, [this.#o.audience], ac.signal);
    } catch (err) {
      const why = ac.signal.aborted
        ? errorMessage(ac.signal.reason)
        : err instanceof Error
        ? describeError(err)
        : String(err);
      this.#log.warn("token review failed", { server: this.#o.client.server, error: why });
      throw unauthenticated(`${VALIDATE}Failed to authenticate request. err:${why}`, err);
    } finally {
      this.#timers.clearTimeout(timer);
    }
  }
}

/** The token-authentication subset of the server's options. */
export interface TokenAuthFlags {
  /** `--agent-namespace`: expected service-account namespace; empty turns token auth off. */
  agentNamespace: string;
  /** `--agent-service-account`: expected service-account name. */
  agentServiceAccount: string;
  /** `--authentication-audience`: the audience token reviews ask for. */
  authenticationAudience: string;
  /** `--kubeconfig`: the Kubernetes client's configuration; empty means in-cluster. */
  kubeconfig: string;
  /** `--kubeconfig-qps`: token reviews per second; 0 means 5. */
  kubeconfigQps: number;
  /** `--kubeconfig-burst`: token reviews in a burst; 0 means 10. */
  kubeconfigBurst: number;
  /**
   * `--kube-api-content-type`: accepted, no effect (the client speaks JSON).
   * @default "application/vnd.kubernetes.protobuf"
   */
  kubeApiContentType: string;
}

/**
 * The token authenticator the flags configure, or `undefined` when token authentication is off
 * (`--agent-namespace` empty). Loads `--kubeconfig` (in-cluster configuration when empty); the
 * server then awaits {@linkcode TokenAuthenticator.checkKubeApiReachable} before it listens.
 *
 * @throws {KnpError} `CONFIG` naming the flag when the configuration cannot be loaded
 */
export async function tokenAuthenticatorFromOptions(
  o: TokenAuthFlags,
  logger: Logger,
): Promise<TokenAuthenticator | undefined> {
  if (o.agentNamespace === "") return undefined;
  const client = await loadKubeClient(o.kubeconfig);
  if (o.kubeApiContentType !== "" && o.kubeApiContentType !== "application/json") {
    logger.debug("--kube-api-content-type is accepted but the Kubernetes client speaks JSON", {
      contentType: o.kubeApiContentType,
    });
  }
  return new TokenAuthenticator({
    namespace: o.agentNamespace,
    serviceAccount: o.agentServiceAccount,
    audience: o.authenticationAudience,
    client,
    kubeconfig: o.kubeconfig,
    qps: o.kubeconfigQps,
    burst: o.kubeconfigBurst,
    logger,
  });
}
