/**
 * `logPackets`: a {@linkcode PacketStream} that writes one trace record per packet sent and
 * received (type, dial or connection ID, byte count: `packetFields`), for klog's `-v=5` and
 * above. With a logger that has no `trace` (every level below 5) it returns the stream itself,
 * so the packet path costs nothing extra.
 *
 * ```ts
 * import { memoryPipe } from "@knp/transport/packet_stream";
 * import { nullLogger } from "@knp/core/log";
 *
 * const [a] = memoryPipe();
 * console.log(logPackets(a, nullLogger) === a); // true: nullLogger has no trace
 * ```
 *
 * @module
 */

import type { Logger } from "@knp/core/log";
import { packetFields } from "@knp/core/packet_log";
import type { PacketStream } from "./packet_stream.ts";
import { observePackets } from "./packet_tap.ts";

/**
 * Wraps `stream` so that each packet it carries is logged at trace level as "packet received"
 * or "packet sent" (with `peer`); `stream` itself when `log` does not trace.
 */
export function logPackets(stream: PacketStream, log: Logger): PacketStream {
  const trace = log.trace?.bind(log);
  if (trace === undefined) return stream;
  const peer = stream.peer;
  return observePackets(stream, {
    received: (packet) => trace("packet received", { peer, ...packetFields(packet) }),
    sent(packet, onSent) {
      trace("packet sent", { peer, ...packetFields(packet) });
      return onSent;
    },
  });
}
