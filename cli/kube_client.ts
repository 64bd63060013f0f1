/**
 * The binaries' Kubernetes API client configuration: `--kubeconfig` (or the in-cluster
 * configuration when it is empty) loaded by `@kubernetes/client-node`, the per-request abort
 * signal client-node's object-parameter APIs accept, and the Deno permissions all of that needs
 * ({@linkcode kubeClientNeeds}). Used by the server's token reviews and lease controller and by
 * the agent's lease counter.
 *
 * `@kubernetes/client-node` is imported only when a configuration is loaded: its dependencies
 * read the environment when they load (`debug` lists all of it), so a binary that uses it needs
 * the whole of `--allow-env`, and one that does not never loads the library.
 *
 * @module
 */

import { dirname, isAbsolute, join } from "node:path";
import { load as loadYaml } from "js-yaml";
import { KnpError } from "@knp/core/errors";
import type { PermissionNeed } from "./permissions.ts";

/** Where a pod's service-account credentials are mounted (the in-cluster configuration). */
export const IN_CLUSTER_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

/** `@kubernetes/client-node`'s module. */
export type KubeModule = typeof import("@kubernetes/client-node");

/** What uses the API: the flag that turned it on and what it is, for error lines. */
export interface KubePurpose {
  /** E.g. `"--agent-namespace"`, `"--enable-lease-controller"`. */
  flag: string;
  /** E.g. `"token authentication"`, `"the lease controller"`. */
  what: string;
}

/** A loaded configuration: the library, its `KubeConfig` and the API server's URL. */
export interface LoadedKubeConfig {
  /** The library. */
  k8s: KubeModule;
  /** The loaded configuration. */
  kc: InstanceType<KubeModule["KubeConfig"]>;
  /** The current cluster's server URL. */
  server: string;
}

/** An error about the API, naming `--kubeconfig` or the flag that needs the API. */
export function kubeConfigError(
  kubeconfig: string,
  purpose: KubePurpose,
  text: string,
  cause?: unknown,
): KnpError {
  // One line: a YAML error goes on with an excerpt of the file.
  const detail = text.split("\n")[0]!.trim();
  const message = kubeconfig !== ""
    ? `--kubeconfig: ${kubeconfig}: ${detail}`
    : `${purpose.flag}: ${purpose.what} needs a Kubernetes API: ${detail}`;
  return new KnpError("CONFIG", message, cause === undefined ? undefined : { cause });
}

/**
 * Loads `--kubeconfig` (the in-cluster configuration when empty).
 *
 * @throws {KnpError} `CONFIG` naming the flag when the configuration cannot be loaded
 */
export async function loadKubeConfig(
  kubeconfig: string,
  purpose: KubePurpose,
): Promise<LoadedKubeConfig> {
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
    throw kubeConfigError(
      kubeconfig,
      purpose,
      err instanceof Error ? err.message : String(err),
      err,
    );
  }
  const cluster = kc.getCurrentCluster();
  if (!cluster?.server) {
    throw kubeConfigError(kubeconfig, purpose, "no current cluster with a server URL");
  }
  return { k8s, kc, server: cluster.server };
}

/** An already-resolved value shaped as client-node's (rxjs-like) `Observable`. */
function observed<T>(value: T) {
  return { toPromise: () => Promise.resolve(value) };
}

/**
 * Per-request options of client-node's object-parameter APIs that add an abort signal (pass as
 * the API method's second argument).
 */
// deno-lint-ignore no-explicit-any -- the middleware's structural type matches client-node's
export function withSignal(signal: AbortSignal): any {
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

/** The HTTP status of a client-node `ApiException` (its `code`), if `err` is one. */
export function apiStatusOf(err: unknown): number | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "number" && code >= 100 && code < 600 ? code : undefined;
}

/**
 * One line for a failed API call: a client-node `ApiException` as its status and the API's
 * message, anything else as {@linkcode describeError}.
 */
export function describeApiError(err: unknown): string {
  const status = apiStatusOf(err);
  if (status !== undefined) {
    const body = (err as { body?: unknown }).body;
    let message = (body as { message?: unknown } | null)?.message;
    if (message === undefined && typeof body === "string") {
      try {
        message = JSON.parse(body)?.message;
      } catch {
        message = body.trim().slice(0, 200);
      }
    }
    return `HTTP ${status}${message ? `: ${message}` : ""}`;
  }
  return err instanceof Error ? describeError(err) : String(err);
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
 * The permissions a Kubernetes client needs: the whole environment (client-node's dependencies
 * list it when they load), read on `kubeconfig` and the files it references (or the in-cluster
 * service-account directory), and net to the API server's `host:port`. The kubeconfig is read to
 * find those; when it cannot be read yet, only the read on it is listed (granting that reveals
 * the rest).
 *
 * @param kubeconfig `--kubeconfig` (empty: in-cluster).
 * @param flag The flag that turns the client on, named by the in-cluster reasons.
 */
export function kubeClientNeeds(kubeconfig: string, flag = "--agent-namespace"): PermissionNeed[] {
  const reason = kubeconfig !== "" ? "--kubeconfig" : `${flag} (in-cluster API)`;
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
    } catch { /* unreadable or invalid: the binary says so at start */ }
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
