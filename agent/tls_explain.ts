/**
 * Explains a server connection that failed because of a certificate's validity window. A TLS
 * library reports such failures vaguely: the side whose certificate was rejected sees a reset or
 * `write EPIPE`, and the rejecting side a generic verification error. So after a failed attempt
 * the agent checks its own certificate (an expired one is why the server hung up) and, when the
 * error is about the server's certificate, fetches that certificate without verifying it to say
 * which one expired and when. The error passed on names the file or the peer and the time.
 *
 * @module
 */

import tls from "node:tls";
import { errorMessage, KnpError } from "@knp/core/errors";
import { leafValidityProblem, validityProblem } from "@knp/transport/cert_validity";
import { currentTlsMaterial, type TlsMaterial, type TlsSource } from "@knp/transport/tls_files";
import type { ServerConnector } from "./client_set.ts";

/** Where the agent connects and with which material. */
export interface TlsExplainTarget {
  host: string;
  port: number;
  tls?: TlsMaterial | TlsSource | undefined;
  /** Bound on the probe that fetches the server's certificate. @default 5000 */
  probeTimeoutMs?: number;
}

/** The path of the agent's certificate file, when the material comes from files. */
function certPath(source: TlsMaterial | TlsSource | undefined): string {
  const paths = (source as { paths?: { cert?: string } } | undefined)?.paths;
  return paths?.cert ?? "(in memory)";
}

/**
 * The server's leaf certificate problem ("expired at ...") seen by a handshake that does not
 * verify it, or `undefined` when it is valid or cannot be fetched within the bound.
 */
function serverCertificateProblem(target: TlsExplainTarget): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = tls.connect({
      host: target.host,
      port: target.port,
      rejectUnauthorized: false,
      ALPNProtocols: ["h2", "http/1.1"],
      ...(/^[\d.:]+$/.test(target.host) ? {} : { servername: target.host }),
    });
    const done = (problem: string | undefined) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(problem);
    };
    const timer = setTimeout(() => done(undefined), target.probeTimeoutMs ?? 5000);
    socket.once("error", () => done(undefined));
    socket.once("secureConnect", () => {
      const peer = socket.getPeerCertificate();
      if (!peer?.valid_to) return done(undefined);
      const notBefore = new Date(peer.valid_from);
      const notAfter = new Date(peer.valid_to);
      const subject = peer.subject?.CN ? `CN=${peer.subject.CN}` : "its certificate";
      switch (validityProblem(notBefore, notAfter)) {
        case "expired":
          return done(`${subject} expired at ${notAfter.toISOString()}`);
        case "not yet valid":
          return done(`${subject} is not valid before ${notBefore.toISOString()}`);
        default:
          return done(undefined);
      }
    });
  });
}

/** Rewrites a failed attempt's error when a certificate's validity window explains it. */
export async function explainTlsFailure(err: unknown, target: TlsExplainTarget): Promise<unknown> {
  if (target.tls === undefined) return err;
  const own = leafValidityProblem(currentTlsMaterial(target.tls).cert);
  const message = errorMessage(err);
  if (own !== undefined) {
    return new KnpError(
      "HANDSHAKE",
      `${message} (this agent's certificate ${certPath(target.tls)} ${own}: ` +
        `the server rejects it)`,
      { cause: err },
    );
  }
  if (!/certif|verify|tls|ssl/i.test(message)) return err;
  const peer = await serverCertificateProblem(target);
  if (peer === undefined) return err;
  return new KnpError(
    "HANDSHAKE",
    `rejected the certificate of server ${target.host}:${target.port}: ${peer} (${message})`,
    { cause: err },
  );
}

/** Wraps a connector so a failure caused by a certificate's validity names it. */
export function explainingTlsFailures(
  connect: ServerConnector,
  target: TlsExplainTarget,
): ServerConnector {
  return async (address) => {
    try {
      return await connect(address);
    } catch (err) {
      throw await explainTlsFailure(err, address ? { ...target, host: address.host } : target);
    }
  };
}
