/**
 * The hooks through which a tunnel reports its dials, connections and bytes
 * ({@linkcode TunnelOptions.metrics}). `@knp/client/metrics` implements them with prom-client;
 * this module loads nothing, so tunnels without metrics cost nothing.
 *
 * @module
 */

/** What a tunnel reports; every hook is called synchronously and must not throw. */
export interface TunnelMetrics {
  /** A tunnel (one gRPC connection) was created. */
  tunnelOpened(): void;
  /** A tunnel closed (its `done` resolved). */
  tunnelClosed(): void;
  /** A dial ended after `ms` milliseconds: succeeded, or failed with `error`. */
  dialEnded(ms: number, error?: unknown): void;
  /** A dialed connection closed (only connections whose dial succeeded). */
  connectionClosed(): void;
  /** `count` payload bytes were sent to, or received from, the remote end. */
  bytes(direction: "sent" | "received", count: number): void;
}
