/**
 * Talking to the e2e kube-apiserver: JSON calls with the admin certificate, watches read as
 * they arrive, and `kubectl` with a generated kubeconfig.
 *
 * @module
 */

import { join } from "node:path";
import type { E2ePki } from "./pki.ts";

/** The answer of one API call. */
export interface ApiResult {
  status: number;
  // deno-lint-ignore no-explicit-any
  body: any;
  text: string;
}

/** A small client for the e2e API server. */
export class KubeApi {
  readonly url: string;
  readonly #client: Deno.HttpClient;

  constructor(url: string, client: Deno.HttpClient) {
    this.url = url;
    this.#client = client;
  }

  /** One JSON call; never throws for an HTTP error status. */
  async call(method: string, path: string, body?: unknown): Promise<ApiResult> {
    const init: RequestInit & { client: Deno.HttpClient } = {
      method,
      client: this.#client,
      headers: {
        "content-type": method === "PATCH" ? "application/merge-patch+json" : "application/json",
      },
    };
    if (body !== undefined) init.body = JSON.stringify(body);
    const res = await fetch(this.url + path, init);
    const text = await res.text();
    let parsed: unknown = undefined;
    try {
      parsed = JSON.parse(text);
    } catch { /* not JSON */ }
    return { status: res.status, body: parsed, text };
  }

  /** A call that must succeed (2xx). */
  async must(method: string, path: string, body?: unknown): Promise<ApiResult> {
    const r = await this.call(method, path, body);
    if (r.status < 200 || r.status > 299) {
      throw new Error(`${method} ${path} -> ${r.status}: ${r.text.slice(0, 2000)}`);
    }
    return r;
  }

  /** Raw bytes of a GET. */
  async bytes(path: string): Promise<{ status: number; bytes: Uint8Array }> {
    const res = await fetch(this.url + path, { client: this.#client });
    return { status: res.status, bytes: new Uint8Array(await res.arrayBuffer()) };
  }

  /**
   * Watches `path` (a collection with `watch=true`) and resolves with the first event for which
   * `done` is true; the watch is closed then.
   */
  async watchUntil(
    path: string,
    // deno-lint-ignore no-explicit-any
    done: (event: { type: string; object: any }) => boolean,
  ): Promise<{ type: string; object: unknown }> {
    const ac = new AbortController();
    const sep = path.includes("?") ? "&" : "?";
    const res = await fetch(`${this.url}${path}${sep}watch=true`, {
      client: this.#client,
      signal: ac.signal,
    });
    if (!res.ok || !res.body) throw new Error(`watch ${path} -> ${res.status}`);
    let rest = "";
    try {
      for await (const chunk of res.body.pipeThrough(new TextDecoderStream())) {
        const lines = (rest + chunk).split("\n");
        rest = lines.pop() ?? "";
        for (const line of lines) {
          if (!line.trim()) continue;
          const event = JSON.parse(line);
          if (done(event)) return event;
        }
      }
    } finally {
      ac.abort();
    }
    throw new Error(`watch ${path} ended before the awaited event`);
  }
}

/** Writes a kubeconfig for `kubectl` with the admin certificate. */
export async function writeKubeconfig(dir: string, url: string, pki: E2ePki): Promise<string> {
  const path = join(dir, "kubeconfig");
  const config = {
    apiVersion: "v1",
    kind: "Config",
    clusters: [{ name: "e2e", cluster: { server: url, "certificate-authority": pki.caCert } }],
    users: [{
      name: "admin",
      user: { "client-certificate": pki.adminCert, "client-key": pki.adminKey },
    }],
    contexts: [{ name: "e2e", context: { cluster: "e2e", user: "admin" } }],
    "current-context": "e2e",
  };
  await Deno.writeTextFile(path, JSON.stringify(config));
  return path;
}

/** Base64 of a file (for `caBundle` fields). */
export async function base64File(path: string): Promise<string> {
  return (await Deno.readFile(path)).toBase64();
}
