import assert from "node:assert/strict";
import { generateCa } from "@knp/testing/certs";
import {
  newChallenge,
  proofPayload,
  signProof,
  verifyAgentChain,
  verifyProof,
} from "./agent_proof.ts";

Deno.test("agent proof: a certificate from the cluster CA and a signature with its key verify", async () => {
  const ca = await generateCa({ commonName: "cluster-ca" });
  const agent = await ca.issue({ commonName: "agent-1", usage: "client" });
  const leaf = verifyAgentChain(agent.certPem, ca.certPem);
  const challenge = newChallenge();
  const payload = proofPayload("server-1", "agent-1", challenge);
  assert.ok(verifyProof(leaf, payload, signProof(agent.keyPem, payload)));
});

Deno.test("agent proof: another CA's certificate, a wrong key or a replayed proof are refused", async () => {
  const ca = await generateCa({ commonName: "cluster-ca" });
  const other = await generateCa({ commonName: "other-ca" });
  const stranger = await other.issue({ commonName: "agent-x", usage: "client" });
  assert.throws(
    () => verifyAgentChain(stranger.certPem, ca.certPem),
    /"CN=agent-x" \(issuer "O=knp, CN=other-ca"\) is not signed by --cluster-ca-cert/,
  );
  assert.throws(() => verifyAgentChain("", ca.certPem), /no certificate/);

  const agent = await ca.issue({ commonName: "agent-1", usage: "client" });
  const leaf = verifyAgentChain(agent.certPem, ca.certPem);
  const payload = proofPayload("server-1", "agent-1", newChallenge());
  // Signed with someone else's key.
  assert.equal(verifyProof(leaf, payload, signProof(stranger.keyPem, payload)), false);
  // A proof for another challenge, server or agent ID does not carry over.
  const good = signProof(agent.keyPem, payload);
  assert.equal(verifyProof(leaf, proofPayload("server-1", "agent-1", newChallenge()), good), false);
  assert.equal(verifyProof(leaf, proofPayload("server-2", "agent-1", "x"), good), false);
  assert.equal(verifyProof(leaf, payload, "not base64 at all"), false);
});

Deno.test("agent proof: an expired certificate is refused", async () => {
  const ca = await generateCa({ commonName: "cluster-ca" });
  const agent = await ca.issue({ commonName: "agent-1", usage: "client", validDays: 1 });
  const later = new Date(Date.now() + 3 * 86_400_000);
  assert.throws(() => verifyAgentChain(agent.certPem, ca.certPem, later), /expired at \d{4}-/);
});
