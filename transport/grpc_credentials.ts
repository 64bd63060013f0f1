/**
 * Server TLS with hot reload for grpc-js: {@linkcode TlsSourceCertificateProvider} feeds a
 * {@linkcode TlsSource} into grpc-js's certificate-provider credentials, and
 * {@linkcode reloadingServerCredentials} adds the {@linkcode TlsPolicy} on top (through
 * `grpc_private.ts`, the one module using grpc-js private API).
 *
 * @module
 */

import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import { isTlsSource, type TlsMaterial, type TlsSource } from "./tls_files.ts";
import { secureContextOptions, type TlsPolicy } from "./tls_policy.ts";
import { PolicyServerCredentials } from "./grpc_private.ts";

type CaListener = grpc.experimental.CaCertificateUpdateListener;
type IdentityListener = grpc.experimental.IdentityCertificateUpdateListener;

/**
 * A grpc-js `CertificateProvider` over a {@linkcode TlsSource}: it hands grpc-js the current
 * identity (cert + key) and CA, and every later change. It listens to the source only while
 * grpc-js listens to it.
 */
export class TlsSourceCertificateProvider implements grpc.experimental.CertificateProvider {
  readonly #source: TlsSource;
  readonly #caListeners = new Set<CaListener>();
  readonly #identityListeners = new Set<IdentityListener>();
  #unsubscribe: (() => void) | undefined;

  /** Serves the material of `source`. */
  constructor(source: TlsSource) {
    this.#source = source;
  }

  #caUpdate(material: TlsMaterial): grpc.experimental.CaCertificateUpdate | null {
    return material.ca ? { caCertificate: Buffer.from(material.ca) } : null;
  }

  #identityUpdate(material: TlsMaterial): grpc.experimental.IdentityCertificateUpdate | null {
    return material.cert && material.key
      ? { certificate: Buffer.from(material.cert), privateKey: Buffer.from(material.key) }
      : null;
  }

  #sync(): void {
    const listening = this.#caListeners.size + this.#identityListeners.size > 0;
    if (listening && !this.#unsubscribe) {
      this.#unsubscribe = this.#source.onChange((material) => {
        const identity = this.#identityUpdate(material);
        const ca = this.#caUpdate(material);
        for (const l of [...this.#identityListeners]) l(identity);
        for (const l of [...this.#caListeners]) l(ca);
      });
    } else if (!listening && this.#unsubscribe) {
      this.#unsubscribe();
      this.#unsubscribe = undefined;
    }
  }

  /** Called by grpc-js: `listener` gets the CA now and on every change. */
  addCaCertificateListener(listener: CaListener): void {
    this.#caListeners.add(listener);
    this.#sync();
    listener(this.#caUpdate(this.#source.current()));
  }

  /** Called by grpc-js: stops updating `listener`. */
  removeCaCertificateListener(listener: CaListener): void {
    this.#caListeners.delete(listener);
    this.#sync();
  }

  /** Called by grpc-js: `listener` gets the cert and key now and on every change. */
  addIdentityCertificateListener(listener: IdentityListener): void {
    this.#identityListeners.add(listener);
    this.#sync();
    listener(this.#identityUpdate(this.#source.current()));
  }

  /** Called by grpc-js: stops updating `listener`. */
  removeIdentityCertificateListener(listener: IdentityListener): void {
    this.#identityListeners.delete(listener);
    this.#sync();
  }
}

/**
 * Server credentials for `tls` (fixed or reloading) and `policy`: grpc-js's certificate-provider
 * credentials fed by a {@linkcode TlsSourceCertificateProvider}, requiring and verifying client
 * certificates when the material has a CA (mTLS); with `clientCertificates: "requested"` the
 * handshake asks for a client certificate but lets every client in, and the caller verifies what
 * it got (to say why a certificate is refused, and who it names). Only the given CA is used to verify clients
 * (never the system roots: Deno sends every `ca` certificate in the server's chain).
 *
 * @throws {KnpError} `CONFIG` when the material has no certificate or no key
 */
export function reloadingServerCredentials(
  tls: TlsMaterial | TlsSource,
  policy: TlsPolicy = {},
  clientCertificates: "required" | "requested" = "required",
): grpc.ServerCredentials {
  const source: TlsSource = isTlsSource(tls)
    ? tls
    : { current: () => tls, onChange: () => () => {} };
  const initial = source.current();
  // Throws for a missing cert or key.
  secureContextOptions(initial, policy);
  const provider = new TlsSourceCertificateProvider(source);
  const mtls = initial.ca !== undefined;
  // grpc-js 1.14.7's declaration names the parameters (ca, identity), but the implementation
  // passes them on as (identity, ca): the first is the identity provider, the second the CA one.
  const inner = grpc.experimental.createCertificateProviderServerCredentials(
    provider,
    mtls ? provider : null,
    mtls && clientCertificates === "required",
  );
  return new PolicyServerCredentials(
    inner,
    () => secureContextOptions(source.current()),
    policy,
  );
}
