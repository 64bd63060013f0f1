/**
 * `kubectl logs` through knp: a Node whose InternalIP is 127.0.0.3, a Pod bound to it, and a fake
 * kubelet there; kube-apiserver dials the kubelet through the `cluster` egress.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { KubeApi } from "./kube_api.ts";
import { type Backend, FakeKubelet, patternBytes, serveHttps } from "./backends.ts";
import type { E2ePki } from "./pki.ts";

/** A fake kubelet registered as a Node with one Pod bound to it. */
export interface WiredKubelet extends AsyncDisposable {
  kubelet: FakeKubelet;
  backend: Backend;
}

/** Starts the fake kubelet and creates its Node, the default ServiceAccount and the Pod. */
export async function wireKubelet(api: KubeApi, pki: E2ePki): Promise<WiredKubelet> {
  const kubelet = new FakeKubelet(patternBytes(80 * 3300, 3)); // whole lines: kubectl prints by line;
  const backend = await serveHttps(
    "127.0.0.3",
    { cert: pki.backendCert, key: pki.backendKey },
    kubelet.handler,
  );
  await api.must("POST", "/api/v1/nodes", {
    apiVersion: "v1",
    kind: "Node",
    metadata: { name: "e2e-node" },
  });
  await api.must("PATCH", "/api/v1/nodes/e2e-node/status", {
    status: {
      addresses: [{ type: "InternalIP", address: "127.0.0.3" }],
      daemonEndpoints: { kubeletEndpoint: { Port: backend.port } },
    },
  });
  const sa = await api.call("POST", "/api/v1/namespaces/default/serviceaccounts", {
    apiVersion: "v1",
    kind: "ServiceAccount",
    metadata: { name: "default" },
  });
  assert.ok(sa.status === 201 || sa.status === 409, sa.text);
  await api.must("POST", "/api/v1/namespaces/default/pods", {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name: "e2e-pod" },
    spec: {
      nodeName: "e2e-node",
      automountServiceAccountToken: false,
      containers: [{ name: "c", image: "registry.invalid/none" }],
    },
  });
  return { kubelet, backend, [Symbol.asyncDispose]: () => backend[Symbol.asyncDispose]() };
}

/** Runs kubectl and collects its stdout; `stdin` closed. */
export function kubectl(bin: string, kubeconfig: string, args: string[]): Deno.ChildProcess {
  return new Deno.Command(bin, {
    args: [`--kubeconfig=${kubeconfig}`, ...args],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
}

/** Reads from `reader` until `n` bytes have arrived; returns them (and keeps the reader). */
export async function readExactly(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  n: number,
): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`stream ended after ${got} of ${n} bytes`);
    if (got + value.length > n) throw new Error(`got ${got + value.length} bytes, expected ${n}`);
    out.set(value, got);
    got += value.length;
  }
  return out;
}
