/**
 * The HTML of the live status page (`/status` on the admin port): plain HTML and a little script
 * that reads `/status.json` every second (and after a drain) and renders it with `textContent`
 * only (no markup from data). After each render the page sets `data-refreshes` on `<body>` and
 * dispatches a `knp-status` event; after a drain and the render that follows it, `knp-drained`
 * (what the browser test awaits).
 *
 * @module
 */

const STYLE = `
body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin-top: 1.5em; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 2px 8px; }
th { background: #f3f3f3; text-align: left; } .num { text-align: right; }
.bad { color: #b00; font-weight: bold; } .ok { color: #070; font-weight: bold; }
.draining { color: #a60; font-weight: bold; } pre { margin: 0; font-size: 12px; }
dl { display: grid; grid-template-columns: max-content auto; gap: 2px 12px; }
dt { font-weight: bold; }
`;

const SCRIPT = `
const $ = (id) => document.getElementById(id);
let refreshes = 0;
function cell(row, text, cls) {
  const td = row.insertCell(); td.textContent = text == null ? "" : String(text);
  if (cls) td.className = cls; return td;
}
function fill(tbody, items, render) {
  tbody.replaceChildren();
  for (const item of items) render(tbody.insertRow(), item);
}
async function drain(agentId) {
  const r = await fetch("/status/agents/" + encodeURIComponent(agentId) + "/drain", {
    method: "POST", headers: { "X-KNP-Action": "drain" } });
  $("message").textContent = JSON.stringify(await r.json());
  await refresh();
  document.body.dataset.drained = agentId;
  dispatchEvent(new CustomEvent("knp-drained", { detail: agentId }));
}
function renderAgent(row, a) {
  row.dataset.agent = a.agentId;
  cell(row, a.agentId, "agent-id"); cell(row, a.stream, "num");
  const ids = [...a.identifiers.host, ...a.identifiers.ipv4, ...a.identifiers.ipv6,
    ...a.identifiers.cidr, a.identifiers.defaultRoute ? "default-route" : ""].filter(Boolean);
  cell(row, ids.join(", "), "identifiers"); cell(row, a.zone, "zone");
  cell(row, a.draining ? "draining (" + a.drainedBy + ")" : "serving",
    a.draining ? "state draining" : "state");
  cell(row, a.openConnections, "num open");
  cell(row, a.bytes.toAgent, "num bytes-to"); cell(row, a.bytes.fromAgent, "num bytes-from");
  const button = document.createElement("button");
  button.textContent = "drain"; button.className = "drain"; button.disabled = a.draining;
  button.onclick = () => drain(a.agentId);
  row.insertCell().append(button);
}
function renderDial(row, d) {
  row.dataset.dial = d.dialId;
  cell(row, d.startedAt.slice(11, 23)); cell(row, d.dialId, "dial-id");
  cell(row, d.address, "address"); cell(row, d.frontend.userAgent);
  cell(row, d.phase, "phase"); cell(row, d.agentId, "agent");
  cell(row, d.route ? d.route.strategy + " of " + d.route.candidates + (d.route.draining ?
    " (" + d.route.draining + " draining)" : "") + ", load " + d.route.load : "", "why");
  cell(row, d.dialResponse ? (d.dialResponse.ok ? "ok" : d.dialResponse.kind + ": " +
    d.dialResponse.error) : "", d.dialResponse && !d.dialResponse.ok ? "bad" : "");
  cell(row, d.bytes.toAgent, "num"); cell(row, d.bytes.toFrontend, "num");
  cell(row, d.close ? d.close.reason : ""); cell(row, d.durations.dialMs, "num");
}
function render(s) {
  $("server").textContent = s.serverId + " (server count " + s.serverCount + ")";
  $("ready").textContent = s.ready ? "ready" : "not ready";
  $("ready").className = s.ready ? "ok" : "bad";
  $("readiness").textContent = s.readiness.join("\\n");
  $("agent-count").textContent = s.counts.agentStreams;
  $("pending").textContent = s.counts.pendingDials;
  $("established").textContent = s.counts.establishedConnections;
  $("frontends").textContent = s.counts.frontendStreams;
  $("bytes-to-agents").textContent = s.bytes.toAgent;
  $("bytes-from-agents").textContent = s.bytes.fromAgent;
  fill($("agents"), s.agents, renderAgent);
  fill($("errors"), s.recentErrors, (row, e) => {
    cell(row, e.at.slice(11, 23)); cell(row, e.kind); cell(row, e.dialId || e.agentId);
    cell(row, e.text, "bad");
  });
  fill($("dials"), s.dials, renderDial);
  $("updated").textContent = s.time;
}
async function refresh() {
  try {
    const r = await fetch("/status.json", { cache: "no-store" });
    render(await r.json());
    $("message-error").textContent = "";
  } catch (err) { $("message-error").textContent = "refresh failed: " + err; }
  document.body.dataset.refreshes = String(++refreshes);
  dispatchEvent(new CustomEvent("knp-status", { detail: refreshes }));
}
refresh(); setInterval(refresh, 1000);
`;

/** The page. */
export const STATUS_HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>knp proxy-server status</title>
<style>${STYLE}</style></head>
<body>
<h1>knp proxy-server <span id="server"></span>: <span id="ready"></span></h1>
<p>Updated <span id="updated"></span>. <span id="message"></span>
<span id="message-error" class="bad"></span></p>
<dl>
<dt>agent streams</dt><dd id="agent-count"></dd>
<dt>pending dials</dt><dd id="pending"></dd>
<dt>established connections</dt><dd id="established"></dd>
<dt>frontend streams</dt><dd id="frontends"></dd>
<dt>bytes to agents</dt><dd id="bytes-to-agents"></dd>
<dt>bytes from agents</dt><dd id="bytes-from-agents"></dd>
</dl>
<h2>Readiness</h2><pre id="readiness"></pre>
<h2>Agents</h2>
<table><thead><tr><th>agent ID</th><th>stream</th><th>identifiers</th><th>zone</th><th>state</th>
<th>open connections</th><th>bytes to</th><th>bytes from</th><th></th></tr></thead>
<tbody id="agents"></tbody></table>
<h2>Recent errors</h2>
<table><thead><tr><th>time</th><th>kind</th><th>dial / agent</th><th>error</th></tr></thead>
<tbody id="errors"></tbody></table>
<h2>Recent dials (<a href="/debug/dials">all, JSON</a>)</h2>
<table><thead><tr><th>time</th><th>dial ID</th><th>address</th><th>user agent</th><th>phase</th>
<th>agent</th><th>why</th><th>DIAL_RSP</th><th>bytes up</th><th>bytes down</th><th>close</th>
<th>dial ms</th></tr></thead>
<tbody id="dials"></tbody></table>
<script>${SCRIPT}</script>
</body></html>
`;
