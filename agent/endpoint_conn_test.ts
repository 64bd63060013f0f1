import assert from "node:assert/strict";
import { knpWindow } from "@knp/proto";
import type { FakeEndpoint } from "./_test_socket.ts";
import { harness, KiB, settle } from "./_test_harness.ts";

Deno.test("AgentClient on a backed-up link reads again only once the link took its queued DATA, while a connection with none queued reads at once", async () => {
  // Flow control with 64 KiB windows: the share mark is 4 windows of backlog (256 KiB).
  const h = harness({ writeMode: "instant", flow: { sendWindow: 64 * KiB, recvWindow: 64 * KiB } });
  const ids: bigint[] = [];
  for (let i = 1n; i <= 6n; i++) ids.push(await h.dial(i));
  const sockets = h.sockets as FakeEndpoint[];
  h.server.clear();
  h.server.end.pause(); // the link takes nothing for now
  for (const socket of sockets.slice(0, 5)) socket.push(new Uint8Array(64 * KiB));
  await settle();
  const backlog = h.link.bufferedBytes;
  assert.ok(backlog > 4 * 64 * KiB, `over the share mark: ${backlog} bytes queued on the link`);

  // Connection 1 gets credit for more, but its first 64 KiB are still queued: it does not read.
  h.server.end.send(knpWindow(ids[0]!, 64 * KiB));
  sockets[0]!.push(new Uint8Array(KiB).fill(7));
  // Connection 6 has nothing queued: its small reply is read and queued at once.
  sockets[5]!.push(new Uint8Array([1, 2, 3]));
  await settle();
  assert.equal(sockets[0]!.unread, KiB, "connection 1 waits for the link to take its DATA");
  assert.equal(sockets[5]!.unread, 0, "connection 6 read at once");
  assert.equal(h.link.bufferedBytes, backlog + 3);

  h.server.end.resume();
  await settle();
  await settle();
  assert.equal(sockets[0]!.unread, 0, "connection 1 read once the link took its DATA");
  const data = (id: bigint) =>
    h.server.of("DATA").filter((p) => p.data.connectId === id).map((p) => p.data.data.byteLength);
  const first = data(ids[0]!);
  assert.equal(first.at(-1), KiB, "connection 1's last DATA is the kilobyte it waited with");
  assert.equal(first.reduce((a, b) => a + b, 0), 65 * KiB);
  assert.deepEqual(data(ids[5]!), [3]);
  await h.close();
});
