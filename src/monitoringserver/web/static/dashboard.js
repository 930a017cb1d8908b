// monitoringserver cluster dashboard (seed 003). Vanilla JS, no build step.
// Auth: the token is exchanged once for the HttpOnly `ms_session` cookie (POST /api/v1/session);
// every request and the /ws/dashboard WebSocket then carry the cookie, never the token itself.
"use strict";

const METRICS = ["cpu_usage_percent", "memory_usage_percent", "disk_usage_percent"];
const LABELS = { cpu_usage_percent: "CPU %", memory_usage_percent: "Memory %", disk_usage_percent: "Disk %" };
const COLORS = { cpu_usage_percent: "#4fa3ff", memory_usage_percent: "#3ecf8e", disk_usage_percent: "#f5b041" };
const MAX_CHARTS = 12;
const MAX_LOG_LINES = 1000;
const PING_MS = 4000;

const $ = (sel) => document.querySelector(sel);
const state = { ws: null, pingTimer: null, statsTimer: null, retryMs: 1000, metrics: {},
  history: {}, charts: {}, pinned: null, pinnedHistory: null, logs: [], sources: { nodes: [], loggers: [], log_levels: [] }, stopped: false };

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

async function api(method, path, body) {
  const opts = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) { opts.body = JSON.stringify(body); opts.headers["Content-Type"] = "application/json"; }
  const resp = await fetch(path, opts);
  let data = null;
  try { data = await resp.json(); } catch (_e) { data = null; }
  return { ok: resp.ok, status: resp.status, data };
}

// ---- login ---------------------------------------------------------------------------
function showLogin(message) {
  stopLive();
  $("#login").hidden = false; $("#tabs").hidden = true;
  document.querySelectorAll(".tabpane").forEach((p) => { p.hidden = true; });
  $("#login-error").textContent = message || "";
}

function showApp() {
  $("#login").hidden = true; $("#tabs").hidden = false;
  selectTab("overview");
  state.stopped = false;
  connect();
  refreshStats();
  state.statsTimer = setInterval(refreshStats, 10000);
}

$("#login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const r = await api("POST", "/api/v1/session", { token: $("#token").value.trim() });
  $("#token").value = "";
  if (r.ok) showApp(); else showLogin((r.data && r.data.error) || `sign-in failed (${r.status})`);
});

$("#logout").addEventListener("click", async () => { await api("DELETE", "/api/v1/session"); showLogin(""); });

// ---- tabs ----------------------------------------------------------------------------
function selectTab(name) {
  document.querySelectorAll(".tab").forEach((b) => b.classList.toggle("active", b.dataset.tab === name));
  document.querySelectorAll(".tabpane").forEach((p) => { p.hidden = p.id !== name; });
  if (name === "logs") renderLogs();
}
document.querySelectorAll(".tab").forEach((b) => b.addEventListener("click", () => selectTab(b.dataset.tab)));

// ---- live connection -----------------------------------------------------------------
function setConn(on, text) { const c = $("#conn"); c.className = "conn " + (on ? "on" : "off"); c.textContent = text; }

function stopLive() {
  state.stopped = true;
  clearInterval(state.pingTimer); clearInterval(state.statsTimer);
  if (state.ws) { state.ws.onclose = null; state.ws.close(); state.ws = null; }
  setConn(false, "offline");
}

function connect() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${proto}//${location.host}/ws/dashboard`);
  state.ws = ws;
  ws.onopen = () => {
    setConn(true, "live"); state.retryMs = 1000;
    clearInterval(state.pingTimer);
    state.pingTimer = setInterval(() => { if (ws.readyState === 1) ws.send("ping"); }, PING_MS);
  };
  ws.onmessage = (ev) => handle(JSON.parse(ev.data));
  ws.onclose = (ev) => {
    clearInterval(state.pingTimer);
    setConn(false, "reconnecting");
    if (ev.code === 4401 || ev.code === 4403) { showLogin("Your session is not valid any more."); return; }
    if (!state.stopped) setTimeout(connect, state.retryMs);
    state.retryMs = Math.min(state.retryMs * 2, 30000);
  };
}

function handle(msg) {
  if (msg.type === "initial") {
    state.sources = msg.data.log_sources || state.sources;
    state.logs = (msg.data.logs || []).map(normLog).slice(-MAX_LOG_LINES);
    applyMetrics(msg.data.metrics, msg.data.history);
    fillFilters(); renderLogs(); refreshStats();
  } else if (msg.type === "update") {
    applyMetrics(msg.data.metrics, msg.data.history);
  } else if (msg.type === "new_logs") {
    const lines = msg.logs.map((l) => normLog(Object.assign({ node_id: msg.node_id }, l)));
    state.logs.push(...lines);
    if (state.logs.length > MAX_LOG_LINES) state.logs.splice(0, state.logs.length - MAX_LOG_LINES);
    for (const l of lines) learnSource(l);
    if ($("#f-live").checked) appendLogs(lines.filter(matches));
  } else if (msg.type === "error") {
    setConn(false, msg.error);
  }
}

// ---- nodes, stats, charts ------------------------------------------------------------
function applyMetrics(metrics, history) {
  state.metrics = (metrics && metrics.nodes) || {};
  state.history = history || {};
  renderNodes(); renderCharts(); fillServiceNodes(); renderServices();
  if (state.pinned && !state.history[state.pinned]) loadPinned();
}

// Updates carry the history of the first nodes only; a clicked node beyond them is fetched.
async function loadPinned() {
  const id = state.pinned;
  const r = await api("GET", `/api/dashboard/history/${encodeURIComponent(id)}`);
  if (id !== state.pinned) return;
  state.pinnedHistory = r.ok ? r.data : null;
  renderCharts();
}

async function selectNode(id) {
  state.pinned = id;
  document.querySelectorAll("#nodes tbody tr").forEach((tr) => tr.classList.toggle("selected", tr.dataset.node === id));
  if (!state.history[id]) await loadPinned();
  renderCharts();
  const c = state.charts[id];
  if (c) { c.card.scrollIntoView({ block: "nearest" }); }
}

function pct(v) {
  if (v === null || v === undefined) return el("span", { class: "muted" }, "–");
  const cls = v >= 95 ? "crit" : v >= 80 ? "hi" : "";
  const bar = el("span", { class: "bar" }, el("i", { class: cls, style: `width:${Math.min(100, v)}%` }));
  return el("span", {}, bar, `${v.toFixed(1)} %`);
}

function ago(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  return new Date(ms).toLocaleString();
}

function renderNodes() {
  const body = $("#nodes tbody");
  body.replaceChildren();
  const ids = Object.keys(state.metrics);
  $("#no-nodes").hidden = ids.length > 0;
  for (const id of ids) {
    const n = state.metrics[id];
    const name = el("td", {}, el("strong", {}, id));
    if (n.hostname && n.hostname !== id) name.append(el("div", { class: "muted" }, n.hostname));
    const tr = el("tr", { "data-node": id, class: id === state.pinned ? "selected" : "" }, name,
      el("td", {}, el("span", { class: `badge ${n.status}` }, n.status)),
      el("td", {}, pct(n.cpu_usage_percent)), el("td", {}, pct(n.memory_usage_percent)),
      el("td", {}, pct(n.disk_usage_percent)),
      el("td", { title: n.last_seen }, ago(n.last_seen_ms)));
    tr.addEventListener("click", () => selectNode(id));
    body.append(tr);
  }
}

async function refreshStats() {
  const r = await api("GET", "/api/dashboard/stats");
  if (r.status === 401) { showLogin("Please sign in."); return; }
  if (!r.ok) return;
  const s = r.data;
  const items = [["Active nodes", s.active_nodes], ["Nodes", s.total_nodes], ["Series", s.series],
    ["Samples", s.samples], ["Uptime", fmtUptime(s.uptime_s)], ["Live clients", s.websocket_clients]];
  if (s.total_services) items.push(["Services", s.total_services]);
  if (s.log_lines !== undefined) items.push(["Log lines", s.log_lines]);
  $("#stats").replaceChildren(...items.map(([k, v]) =>
    el("div", { class: "stat" }, el("div", { class: "v" }, typeof v === "number" ? v.toLocaleString() : v), el("div", { class: "k" }, k))));
}

function fmtUptime(s) {
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : `${m}m ${Math.floor(s % 60)}s`;
}

function fmtTick(t, step) {
  const opts = step < 60 ? { hour: "2-digit", minute: "2-digit", second: "2-digit" } : { hour: "2-digit", minute: "2-digit" };
  return new Date(t * 1000).toLocaleTimeString([], opts);
}

function chartData(h) {
  const rows = (h && h.history) || [];
  return [rows.map((r) => r.ts_ms / 1000), ...METRICS.map((m) => rows.map((r) => r[m]))];
}

function renderCharts() {
  const box = $("#charts");
  const ids = Object.keys(state.history).slice(0, MAX_CHARTS);
  const pinnedData = state.history[state.pinned] || state.pinnedHistory;
  if (state.pinned && pinnedData && !ids.includes(state.pinned)) ids.unshift(state.pinned);
  for (const id of Object.keys(state.charts)) {
    if (!ids.includes(id)) { state.charts[id].plot.destroy(); state.charts[id].card.remove(); delete state.charts[id]; }
  }
  for (const id of ids) {
    const data = chartData(state.history[id] || (id === state.pinned ? pinnedData : null));
    const existing = state.charts[id];
    if (existing) { existing.card.classList.toggle("selected", id === state.pinned); existing.plot.setData(data); continue; }
    const card = el("div", { class: "card chart" + (id === state.pinned ? " selected" : ""), "data-node": id }, el("h3", {}, id));
    if (id === state.pinned) box.prepend(card); else box.append(card);
    const width = Math.max(300, card.clientWidth - 28);
    const opts = {
      width, height: 200, spanGaps: true,
      scales: { y: { range: [0, 100] } },
      axes: [{ stroke: "#8a93a3", grid: { stroke: "#262c36" }, space: 70,
        values: (_u, v) => v.map((t) => fmtTick(t, v.length > 1 ? v[1] - v[0] : 60)) },
        { stroke: "#8a93a3", grid: { stroke: "#262c36" }, values: (_u, v) => v.map((x) => x + "%") }],
      series: [{}, ...METRICS.map((m) => ({ label: LABELS[m], stroke: COLORS[m], width: 1.5,
        value: (_u, v) => (v === null || v === undefined ? "–" : v.toFixed(1) + " %") }))],
    };
    state.charts[id] = { card, plot: new uPlot(opts, data, card) };
  }
}

window.addEventListener("resize", () => {
  for (const c of Object.values(state.charts)) c.plot.setSize({ width: Math.max(300, c.card.clientWidth - 28), height: 200 });
});

// ---- logs ----------------------------------------------------------------------------
function normLog(l) {
  return { ts: l.ts_ms || Date.parse(l.timestamp), timestamp: l.timestamp, node: l.node_id || l.server_id || "",
    level: String(l.level || "").toUpperCase(), logger: l.logger_name || l.logger || "", message: l.message || "" };
}

function learnSource(l) {
  const add = (key, v, select) => {
    if (!v || state.sources[key].includes(v)) return;
    state.sources[key].push(v); select.append(el("option", { value: v }, v));
  };
  add("nodes", l.node, $("#f-node")); add("loggers", l.logger, $("#f-logger"));
  add("log_levels", l.level.toLowerCase(), $("#f-level"));
}

function fillFilters() {
  const fill = (select, first, values) => {
    const cur = select.value;
    select.replaceChildren(el("option", { value: "" }, first), ...values.map((v) => el("option", { value: v }, v)));
    select.value = cur;
  };
  fill($("#f-node"), "all nodes", state.sources.nodes);
  fill($("#f-level"), "all levels", state.sources.log_levels);
  fill($("#f-logger"), "all loggers", state.sources.loggers);
}

function matches(l) {
  const node = $("#f-node").value, level = $("#f-level").value, logger = $("#f-logger").value;
  const q = $("#f-search").value.trim().toLowerCase();
  return (!node || l.node === node) && (!level || l.level === level.toUpperCase()) &&
    (!logger || l.logger === logger) && (!q || l.message.toLowerCase().includes(q));
}

function logLine(l) {
  return el("div", { class: "log" }, el("span", { class: "ts" }, (l.timestamp || "").replace("T", " ").replace("Z", "")), " ",
    el("span", { class: "node" }, l.node), " ", el("span", { class: `lvl-${l.level}` }, l.level.padEnd(8)), " ",
    el("span", { class: "lg" }, l.logger), " ", l.message);
}

function renderLogs() {
  const box = $("#log-lines");
  box.replaceChildren(...state.logs.filter(matches).map(logLine));
  box.scrollTop = box.scrollHeight;
}

function appendLogs(lines) {
  const box = $("#log-lines");
  const atEnd = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  for (const l of lines) box.append(logLine(l));
  while (box.childElementCount > MAX_LOG_LINES) box.firstChild.remove();
  if (atEnd) box.scrollTop = box.scrollHeight;
}

let searchTimer = null;
async function searchLogs() {
  const p = new URLSearchParams({ limit: "500" });
  if ($("#f-node").value) p.set("server_id", $("#f-node").value);
  if ($("#f-level").value) p.set("level", $("#f-level").value);
  if ($("#f-logger").value) p.set("logger", $("#f-logger").value);
  if ($("#f-search").value.trim()) p.set("q", $("#f-search").value.trim());
  const r = await api("GET", "/api/v1/logs?" + p.toString());
  if (r.ok && r.data && r.data.data) {
    // Lines pushed live may not be searchable yet (committed a moment later): keep them.
    const key = (l) => `${l.ts}|${l.node}|${l.message}`;
    const found = r.data.data.logs.map(normLog);
    const seen = new Set(found.map(key));
    const live = state.logs.filter((l) => matches(l) && !seen.has(key(l)));
    state.logs = found.concat(live).sort((a, b) => a.ts - b.ts).slice(-MAX_LOG_LINES);
  }
  renderLogs();
}
for (const id of ["#f-node", "#f-level", "#f-logger"]) $(id).addEventListener("change", searchLogs);
$("#f-search").addEventListener("input", () => { clearTimeout(searchTimer); searchTimer = setTimeout(searchLogs, 300); });

// ---- service control -----------------------------------------------------------------
function fillServiceNodes() {
  const select = $("#svc-node"), cur = select.value;
  const ids = Object.keys(state.metrics);
  if (select.options.length === ids.length && ids.every((id, i) => select.options[i].value === id)) return;
  select.replaceChildren(...ids.map((id) => el("option", { value: id }, id)));
  if (ids.includes(cur)) select.value = cur;
}

function renderServices() {
  const body = $("#svc-table tbody");
  body.replaceChildren();
  let n = 0;
  for (const [node, m] of Object.entries(state.metrics)) {
    for (const [unit, st] of Object.entries(m.services || {})) {
      n += 1;
      const ctl = el("td", { class: "ctl" });
      for (const action of ["start", "stop", "restart"]) {
        const b = el("button", { type: "button", "data-action": action }, action);
        b.addEventListener("click", () => control(node, unit, action));
        ctl.append(b);
      }
      body.append(el("tr", { "data-node": node, "data-service": unit }, el("td", {}, node), el("td", {}, unit),
        el("td", { class: `st-${st}` }, st), ctl));
    }
  }
  $("#no-services").hidden = n > 0;
}

document.querySelectorAll("#svc-form button[data-action]").forEach((b) => b.addEventListener("click", () => {
  const node = $("#svc-node").value, name = $("#svc-name").value.trim();
  if (!node || !name) { $("#svc-result").textContent = "Choose a node and enter a service name."; return; }
  control(node, name, b.dataset.action);
}));

async function control(node, name, action) {
  const out = $("#svc-result");
  out.textContent = `${action} ${name} on ${node}…`;
  const r = await api("POST", "/api/dashboard/control-service", { worker_id: node, service_name: name, action });
  const d = r.data || {};
  if (r.ok && d.success) out.textContent = `${action} ${name} on ${node}: done${d.output ? "\n" + d.output : ""}`;
  else out.textContent = `${action} ${name} on ${node} failed: ${d.error || `HTTP ${r.status}`}${d.output ? "\n" + d.output : ""}`;
}

// ---- start ---------------------------------------------------------------------------
(async () => {
  const r = await api("GET", "/api/v1/session");
  if (r.ok) showApp(); else showLogin("");
})();
