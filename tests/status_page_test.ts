/**
 * The live status page in headless Chromium (Debian's `chromium`, driven by npm:playwright-core):
 * a real server and two real agents carry tunnels; the page's numbers match the server's
 * `/metrics`; clicking "drain" on one agent shows it draining and the next dials all go to the
 * other agent. A screenshot is kept under the test's temp dir (its path is printed). Skipped
 * without chromium unless `KNP_E2E_REQUIRED=1`.
 *
 * @module
 */

import assert from "node:assert/strict";
import { chromium, type Page } from "./playwright.ts";
import { startAgent, startServer } from "./framework.ts";
import { endpointOf, type RawConn, tunnel } from "./connect_client.ts";
import { startEchoBackend } from "./backends.ts";

const CHROMIUM = "/usr/bin/chromium";
const haveChromium = await Deno.stat(CHROMIUM).then(() => true, () => false);
const required = Deno.env.get("KNP_E2E_REQUIRED") === "1";
const NS = "konnectivity_network_proxy_server";

/** A sample of an exposition text; fails when absent. */
function sample(text: string, series: string): number {
  const line = text.split("\n").find((l) => l.startsWith(series + " "));
  assert.ok(line, `${series} missing from /metrics`);
  return Number(line.slice(series.length + 1));
}

/** Resolves after the page's next `name` event. */
function pageEvent(page: Page, name: string): Promise<unknown> {
  return page.evaluate(
    `new Promise((resolve) => addEventListener(${JSON.stringify(name)}, resolve, { once: true }))`,
  );
}

/**
 * Resolves after a render of `/status.json` fetched after this call: the second render from now
 * (the first may come from a fetch already under way).
 */
async function freshRender(page: Page): Promise<void> {
  await pageEvent(page, "knp-status");
  await pageEvent(page, "knp-status");
}

/** Opens a tunnel to the echo backend and echoes `n` bytes through it. */
async function echoed(
  endpoint: Awaited<ReturnType<typeof endpointOf>>,
  address: string,
  n: number,
) {
  const conn = await tunnel(endpoint, address);
  await conn.write(new Uint8Array(n).fill(7));
  assert.equal((await conn.readExactly(n)).length, n);
  return conn;
}

Deno.test({
  name: "status page: numbers match /metrics; drain from the page moves new dials",
  ignore: !haveChromium && !required,
  async fn() {
    assert.ok(
      haveChromium,
      `${CHROMIUM} is required (KNP_E2E_REQUIRED=1): apt-get install chromium`,
    );
    const dir = await Deno.makeTempDir({ prefix: "knp-status-page-" });
    await using echo = startEchoBackend();
    await using server = await startServer({ extraArgs: ["--mode=http-connect"] });
    await using _a = await startAgent(server, {
      agentId: "agent-a",
      extraArgs: ["--agent-identifiers=zone=zone-1"],
    });
    await using _b = await startAgent(server, { agentId: "agent-b" });
    await server.agents(2);
    const endpoint = await endpointOf(server);
    const conns: RawConn[] = [];
    for (let i = 0; i < 6; i++) conns.push(await echoed(endpoint, echo.address, 100));

    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
    try {
      const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
      const admin = `http://127.0.0.1:${server.adminPort}`;
      await page.goto(`${admin}/status`);
      await freshRender(page); // every tunnel above is established

      const shown = async (id: string) => Number(await page.textContent(`#${id}`));
      const metrics = await (await fetch(`${admin}/metrics`)).text();
      assert.equal(await shown("established"), sample(metrics, `${NS}_established_connections`));
      assert.equal(await shown("established"), 6);
      assert.equal(await shown("pending"), sample(metrics, `${NS}_pending_backend_dials`));
      assert.equal(
        await shown("agent-count"),
        sample(metrics, `${NS}_ready_backends{proxy_strategy="default"}`),
      );
      assert.equal(
        await shown("bytes-from-agents"),
        sample(metrics, `knp_server_proxied_bytes_total{direction="agent_to_client"}`),
      );
      assert.equal(
        await shown("bytes-to-agents"),
        sample(metrics, `knp_server_proxied_bytes_total{direction="client_to_agent"}`),
      );
      assert.equal(await shown("bytes-from-agents"), 600);
      const openA = Number(await page.textContent('tr[data-agent="agent-a"] .open'));
      const openB = Number(await page.textContent('tr[data-agent="agent-b"] .open'));
      assert.equal(openA + openB, 6);
      assert.equal(await page.textContent('tr[data-agent="agent-a"] .zone'), "zone-1");
      assert.equal(await page.textContent("#ready"), "ready");

      // The page fires knp-drained after the POST's answer and the render that follows it.
      const drained = pageEvent(page, "knp-drained");
      await page.click('tr[data-agent="agent-a"] button.drain');
      await drained;
      assert.equal(
        await page.textContent('tr[data-agent="agent-a"] .state'),
        "draining (status-page)",
      );
      assert.equal(await page.textContent('tr[data-agent="agent-b"] .state'), "serving");

      for (let i = 0; i < 4; i++) conns.push(await echoed(endpoint, echo.address, 10));
      await freshRender(page);
      const agents = await page.evaluate(
        `[...document.querySelectorAll("#dials tr .agent")].slice(0, 4).map((c) => c.textContent)`,
      );
      assert.deepEqual(agents, ["agent-b", "agent-b", "agent-b", "agent-b"]);
      const after = await (await fetch(`${admin}/metrics`)).text();
      assert.equal(await shown("established"), sample(after, `${NS}_established_connections`));
      assert.equal(Number(await page.textContent('tr[data-agent="agent-b"] .open')), openB + 4);
      const shot = `${dir}/status-page.png`;
      await page.screenshot({ path: shot, fullPage: true });
      // deno-lint-ignore no-console
      console.log(`status page screenshot: ${shot}`);
    } finally {
      await browser.close();
      for (const c of conns) c.close();
    }
  },
});
