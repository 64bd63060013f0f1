/**
 * Admission-webhook scenarios of the e2e suite: kube-apiserver calls a validating webhook behind
 * a Service reference, through knp, with keep-alive and with a new connection per call, and the
 * same webhook under faults (the agent killed mid-call, restarted; the server restarted; no agent).
 *
 * @module
 */

import assert from "node:assert/strict";
import type { E2ePki } from "./pki.ts";
import { base64File, type KubeApi } from "./kube_api.ts";
import { type Backend, serveHttps, webhookHandler } from "./backends.ts";
import type { E2eProcess } from "./process.ts";

/** The namespace whose ConfigMap creations the webhook reviews. */
export const WEBHOOK_NS = "webhooked";

/** A webhook wired into the API server, with switches the scenarios flip. */
export interface WiredWebhook extends AsyncDisposable {
  backend: Backend;
  /** Reviews answered. */
  reviews: () => number;
  /** Answer with `Connection: close`. */
  closeEach: boolean;
  /** When set, each review waits for this promise before answering. */
  gate: Promise<void> | undefined;
  /** Resolves at the next review that arrives. */
  nextReview: () => Promise<void>;
}

/** Starts the webhook backend and registers Service, namespace and webhook configuration. */
export async function wireWebhook(api: KubeApi, pki: E2ePki): Promise<WiredWebhook> {
  let reviews = 0;
  let arrivals: PromiseWithResolvers<void>[] = [];
  const wired = {
    closeEach: false,
    gate: undefined as Promise<void> | undefined,
  } as WiredWebhook;
  const backend = await serveHttps(
    "127.0.0.2",
    { cert: pki.backendCert, key: pki.backendKey },
    webhookHandler({
      closeEach: () => wired.closeEach,
      onReview: async () => {
        for (const a of arrivals) a.resolve();
        arrivals = [];
        if (wired.gate) await wired.gate;
        reviews++;
      },
    }),
  );
  Object.assign(wired, {
    backend,
    reviews: () => reviews,
    nextReview: () => {
      const p = Promise.withResolvers<void>();
      arrivals.push(p);
      return p.promise;
    },
    [Symbol.asyncDispose]: () => backend[Symbol.asyncDispose](),
  });
  await api.must("POST", "/api/v1/namespaces/default/services", {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name: "e2e-webhook" },
    spec: { type: "ExternalName", externalName: "127.0.0.2", ports: [{ port: backend.port }] },
  });
  await api.must("POST", "/api/v1/namespaces", {
    apiVersion: "v1",
    kind: "Namespace",
    metadata: { name: WEBHOOK_NS },
  });
  await api.must("POST", "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations", {
    apiVersion: "admissionregistration.k8s.io/v1",
    kind: "ValidatingWebhookConfiguration",
    metadata: { name: "e2e.knp.dev" },
    webhooks: [{
      name: "configmaps.e2e.knp.dev",
      clientConfig: {
        service: {
          namespace: "default",
          name: "e2e-webhook",
          path: "/validate",
          port: backend.port,
        },
        caBundle: await base64File(pki.caCert),
      },
      rules: [{
        operations: ["CREATE"],
        apiGroups: [""],
        apiVersions: ["v1"],
        resources: ["configmaps"],
      }],
      namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": WEBHOOK_NS } },
      failurePolicy: "Fail",
      sideEffects: "None",
      admissionReviewVersions: ["v1"],
      timeoutSeconds: 10,
    }],
  });
  return wired;
}

let seq = 0;

/** Creates one ConfigMap in the webhooked namespace: one webhook call. */
export function createConfigMap(api: KubeApi) {
  return api.call("POST", `/api/v1/namespaces/${WEBHOOK_NS}/configmaps`, {
    apiVersion: "v1",
    kind: "ConfigMap",
    metadata: { name: `cm-${Date.now()}-${seq++}` },
    data: { k: "v" },
  });
}

/**
 * kube-apiserver loads webhook configurations through an informer and says nothing when it has:
 * create probe objects until the webhook sees one (bounded by count, no timer).
 */
export async function awaitWebhookActive(api: KubeApi, webhook: WiredWebhook): Promise<void> {
  for (let i = 0; i < 2000; i++) {
    const before = webhook.reviews();
    const r = await createConfigMap(api);
    assert.equal(r.status, 201, r.text);
    if (webhook.reviews() > before) return;
  }
  throw new Error("the webhook configuration never took effect");
}

/** Dial requests the knp server has forwarded so far (from its -v=5 log lines). */
export function dialsForwarded(server: E2eProcess): number {
  return server.records().filter((r) => r.msg === "forwarding DIAL_REQ").length;
}

/**
 * `n` webhook calls that must all succeed; returns how many dials knp forwarded meanwhile.
 */
export async function webhookCalls(
  api: KubeApi,
  webhook: WiredWebhook,
  server: E2eProcess,
  n: number,
): Promise<{ dials: number; reviews: number }> {
  const dials0 = dialsForwarded(server);
  const reviews0 = webhook.reviews();
  const failures: string[] = [];
  for (let i = 0; i < n; i++) {
    const r = await createConfigMap(api);
    if (r.status !== 201) failures.push(`${r.status} ${r.text.slice(0, 300)}`);
  }
  assert.deepEqual(failures, [], `${failures.length} of ${n} webhook calls failed`);
  return { dials: dialsForwarded(server) - dials0, reviews: webhook.reviews() - reviews0 };
}
