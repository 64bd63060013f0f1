import { collectDefaultMetrics, Registry, Gauge } from "prom-client";
Deno.test("probe", async () => {
  const r = new Registry();
  collectDefaultMetrics({ register: r });
  new Gauge({ name: "x_open", help: "Current number of open server connections.", registers: [r] });
  const t = await r.metrics();
  console.log(t.split("\n").filter((l) => l.startsWith("# HELP")).join("\n"));
  console.log(t.split("\n").filter((l) => l.startsWith("x_")).join("\n"));
});
