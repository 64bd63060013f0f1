/**
 * An aggregated API behind an APIService: kube-apiserver proxies discovery, a GET, a watch and a
 * large response to it through knp.
 *
 * @module
 */

import { AggregatedApi, API_GROUP, type Backend, serveHttps } from "./backends.ts";
import { base64File, type KubeApi } from "./kube_api.ts";
import type { E2ePki } from "./pki.ts";

/** Size of the large object: at least 64 MiB through the tunnel. */
export const BIG_BYTES = 64 * 1024 * 1024 + 4321;

/** The aggregated API server, registered and Available. */
export interface WiredApi extends AsyncDisposable {
  server: AggregatedApi;
  backend: Backend;
}

/** Starts the aggregated API, registers its Service and APIService, and waits for Available and for
 * kube-apiserver's proxy handler to forward to it. */
export async function wireAggregatedApi(api: KubeApi, pki: E2ePki): Promise<WiredApi> {
  const server = new AggregatedApi(BIG_BYTES);
  const backend = await serveHttps(
    "127.0.0.2",
    { cert: pki.backendCert, key: pki.backendKey },
    server.handler,
  );
  await api.must("POST", "/api/v1/namespaces/default/services", {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name: "e2e-api" },
    spec: { type: "ExternalName", externalName: "127.0.0.2", ports: [{ port: backend.port }] },
  });
  const name = `v1.${API_GROUP}`;
  await api.must("POST", "/apis/apiregistration.k8s.io/v1/apiservices", {
    apiVersion: "apiregistration.k8s.io/v1",
    kind: "APIService",
    metadata: { name },
    spec: {
      group: API_GROUP,
      version: "v1",
      service: { namespace: "default", name: "e2e-api", port: backend.port },
      caBundle: await base64File(pki.caCert),
      groupPriorityMinimum: 1000,
      versionPriority: 15,
    },
  });
  await api.watchUntil(
    `/apis/apiregistration.k8s.io/v1/apiservices?fieldSelector=metadata.name%3D${name}`,
    (e) =>
      // deno-lint-ignore no-explicit-any
      (e.object?.status?.conditions ?? []).some((c: any) =>
        c.type === "Available" && c.status === "True"
      ),
  );
  // Available is written before the aggregator's proxy handler learns it (an informer later);
  // a GET sent in between gets "503 service unavailable" from kube-apiserver itself.
  await server.proxying.promise;
  return { server, backend, [Symbol.asyncDispose]: () => backend[Symbol.asyncDispose]() };
}
