// paysim console: plain JS, no build step, no CDN. Every value from the server
// is written with textContent (never innerHTML).
"use strict";
const $ = (id) => document.getElementById(id);
const MAX_ROWS = 200;
const state = { rows: new Map(), selected: null, meta: null, series: null, tick: 0 };

async function api(path) {
  const r = await fetch(path, { credentials: "same-origin" });
  if (!r.ok) throw new Error((await r.json().catch(() => ({}))).error || r.statusText);
  return r.json();
}
async function post(path, body) {
  const r = await fetch(path, {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(data.error || r.statusText);
  return data;
}
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
const time = (t) => new Date(t * 1000).toLocaleTimeString([], { hour12: false }) + "." + String(Math.floor((t % 1) * 1000)).padStart(3, "0");

function filters() {
  return { q: $("q").value.trim(), status: $("f-status").value, user_id: $("f-user").value.trim(),
    reservation_id: $("f-reservation").value.trim(), idempotency_key: $("f-key").value.trim() };
}
function matches(p, f) {
  if (f.q && !p.id.includes(f.q)) return false;
  for (const k of ["status", "user_id", "reservation_id", "idempotency_key"]) if (f[k] && p[k] !== f[k]) return false;
  return true;
}
let listRequest = 0;
async function loadList() {
  const f = filters();
  const qs = new URLSearchParams({ q: f.q, status: f.status, user: f.user_id, reservation: f.reservation_id, key: f.idempotency_key, limit: MAX_ROWS });
  const mine = ++listRequest;
  const data = await api("/console/api/payments?" + qs);
  if (mine !== listRequest) return; // typing went on: a newer request's answer counts, not this one
  state.rows = new Map(data.payments.map((p) => [p.id, p]));
  renderCounts(data.counts);
  renderList();
}
let renderPending = false;
function renderList() {
  if (renderPending) return;
  renderPending = true;
  requestAnimationFrame(() => {
    renderPending = false;
    const body = $("payments").tBodies[0];
    const rows = [...state.rows.values()].sort((a, b) => b.created_at - a.created_at).slice(0, MAX_ROWS);
    body.replaceChildren(...rows.map((p) => {
      const tr = el("tr");
      tr.dataset.id = p.id;
      if (p.id === state.selected) tr.className = "sel";
      tr.append(el("td", time(p.created_at)), el("td", p.id), el("td", p.status, "st st-" + p.status),
        el("td", `${p.amount} ${p.currency}` + (p.refunded ? ` (refunded ${p.refunded})` : "")),
        el("td", p.user_id), el("td", p.reservation_id));
      tr.onclick = () => select(p.id);
      return tr;
    }));
  });
}
function renderCounts(counts) {
  $("counts").replaceChildren(...Object.entries(counts || {}).map(([k, v]) => el("span", `${k}: ${v}`, "st st-" + k)));
}

async function select(id) {
  state.selected = id;
  renderList();
  await loadDetail();
}
async function loadDetail() {
  const id = state.selected;
  if (!id) return;
  let data;
  try { data = await api("/console/api/payment?id=" + encodeURIComponent(id)); }
  catch (e) { $("d-message").textContent = e.message; return; }
  if (id !== state.selected) return;
  const p = data.payment;
  $("detail").hidden = false;
  $("d-title").textContent = p.id;
  const fields = [["status", p.status], ["amount", `${p.amount} ${p.currency}`], ["refunded", p.refunded],
    ["scenario", p.scenario], ["user", p.user_id], ["reservation", p.reservation_id],
    ["idempotency key", p.idempotency_key || "–"], ["webhook", p.webhook || "(none)"],
    ["failure", p.failure_reason || "–"]];
  $("d-fields").replaceChildren(...fields.flatMap(([k, v]) => [el("dt", k), el("dd", v, k === "status" ? "st st-" + v : "")]));
  $("d-status").textContent = p.status;
  const items = data.timeline.map((t) => {
    let text;
    if (t.kind === "webhook") {
      const result = t.http_status ? `HTTP ${t.http_status}` : (t.error || "");
      text = `webhook ${t.outcome}${t.attempt ? " (attempt " + t.attempt + ")" : ""}: ${result}` +
        (t.latency_ms !== undefined ? `, ${t.latency_ms} ms` : "") + (t.url ? ` → ${t.url}` : "") +
        (t.next_retry_s != null ? `; next attempt in ${t.next_retry_s} s` : "") +
        (t.excerpt ? ` — “${t.excerpt}”` : "");
    } else if (t.kind === "event") text = `event published: ${t.detail}`;
    else if (t.kind === "note") text = t.detail;
    else text = `${t.from ? t.from + " → " : ""}${t.to} (${t.cause})` + (t.refund ? ` refund ${t.refund.amount}` : "");
    return el("li", `${time(t.at)}  ${text}`, "t-" + t.kind);
  });
  if (data.note) items.push(el("li", data.note, "t-note"));
  $("timeline").replaceChildren(...items);
}

async function act(action) {
  const body = { action, payment_id: state.selected };
  if (action === "decline") body.code = $("decline-code").value;
  if (action === "refund" && $("refund-amount").value.trim()) body.amount = $("refund-amount").value.trim();
  $("d-message").textContent = "";
  try { await post("/console/api/action", body); $("d-message").textContent = ""; }
  catch (e) { $("d-message").textContent = e.message; }
  await loadDetail();
}

async function loadEndpoints() {
  const data = await api("/console/api/endpoints");
  $("endpoints").tBodies[0].replaceChildren(...data.endpoints.map((e) => {
    const tr = el("tr");
    tr.dataset.host = e.host;
    const errs = el("td");
    for (const x of e.errors) errs.append(el("div", `${time(x.at)} ${x.payment_id}: ${x.http_status ? "HTTP " + x.http_status : x.error || x.outcome}`));
    const toggle = el("button", e.disabled ? "Enable" : "Disable");
    toggle.onclick = async () => { await post("/console/api/endpoint", { host: e.host, enabled: e.disabled }); loadEndpoints(); };
    tr.append(el("td", e.host + (e.disabled ? " (disabled)" : "")), el("td", e.delivered), el("td", e.retrying),
      el("td", e.failed + (e.skipped ? ` (+${e.skipped} skipped)` : "")), errs, el("td").appendChild(toggle).parentNode);
    return tr;
  }));
}

function drawChart(s) {
  const c = $("chart"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  const series = [[s.creates, "#2563eb"], [s.settled, "#16a34a"], [s.failed, "#dc2626"]];
  const n = Math.max(...series.map(([v]) => v.length), 2);
  const max = Math.max(1, ...series.flatMap(([v]) => v));
  g.fillStyle = "#667"; g.font = "10px sans-serif"; g.fillText(String(Math.round(max)) + "/s", 2, 10);
  for (const [v, color] of series) {
    g.strokeStyle = color; g.lineWidth = 1.5; g.beginPath();
    v.forEach((y, i) => {
      const px = ((n - v.length + i) / (n - 1)) * c.width, py = c.height - 2 - (y / max) * (c.height - 14);
      i ? g.lineTo(px, py) : g.moveTo(px, py);
    });
    g.stroke();
  }
}
function overview(s) {
  const last = (v) => (v.length ? v[v.length - 1] : 0);
  $("f-creates").textContent = last(s.creates); $("f-settled").textContent = last(s.settled);
  $("f-pending").textContent = s.pending; $("f-delivered").textContent = last(s.delivered);
  $("f-failed").textContent = last(s.failed);
  $("f-lag").textContent = s.lag_p99_s == null ? "–" : `≤ ${s.lag_p99_s} s`;
  renderCounts(s.counts);
  drawChart(s);
  if (++state.tick % 2 === 0) loadEndpoints().catch(() => {});
  if (state.selected) loadDetail().catch(() => {});
}

function connect() {
  const source = new EventSource("/console/api/events");
  source.addEventListener("hello", () => {
    $("live").textContent = "live"; $("live").className = "badge";
    loadList().catch(() => {}); loadEndpoints().catch(() => {});
  });
  source.addEventListener("payment", (ev) => {
    const p = JSON.parse(ev.data);
    if (matches(p, filters())) state.rows.set(p.id, p); else state.rows.delete(p.id);
    if (state.rows.size > MAX_ROWS * 2) loadList().catch(() => {});
    renderList();
    if (p.id === state.selected) loadDetail().catch(() => {});
  });
  source.addEventListener("overview", (ev) => overview(JSON.parse(ev.data)));
  source.addEventListener("dropped", (ev) => {
    const n = JSON.parse(ev.data).count;
    $("dropped").hidden = false;
    $("dropped").textContent = `${n} updates dropped (this page fell behind): list reloaded`;
    loadList().catch(() => {});
  });
  source.onerror = () => { $("live").textContent = "reconnecting…"; $("live").className = "badge off"; };
}

// -- the reconciliation view (#reconciliation): the report of GET /reconciliation ----
function payLink(id) {
  const a = el("a", id);
  a.href = "#payments";
  a.onclick = () => { select(id).catch(() => {}); };
  return a;
}
function findingRow(name, count, items) {
  const tr = el("tr"), td = el("td");
  for (const it of (items || []).slice(0, 20)) {
    const pid = it.payment_id || it.payment_intent_id;
    if (pid) td.append(payLink(pid));
    else if (it.payment_intent_ids) for (const p of it.payment_intent_ids) td.append(payLink(p));
    if (it.reservation_id) td.append(el("span", `(${it.reservation_id}${it.status ? ", " + it.status : ""}) `));
  }
  tr.append(el("td", name), el("td", count), td);
  return tr;
}
async function loadReconciliation() {
  const r = await api("/console/api/reconciliation");
  const d = r.double_charges, l = r.lost_answers, w = r.worker;
  const rows = [
    findingRow("double charges (reservations)", d.reservations, d.sample),
    findingRow("extra captures", d.extra_captures),
    findingRow("lost answers, not recovered", `${l.unrecovered} of ${l.count}`, l.unrecovered_sample.map((p) => ({ payment_id: p }))),
    findingRow("intents abandoned until expiry", r.abandoned_intents.expired, r.abandoned_intents.sample.map((p) => ({ payment_id: p }))),
    findingRow("webhooks never acknowledged", r.unacknowledged_webhooks.count, r.unacknowledged_webhooks.sample),
  ];
  if (w && !w.error) {
    rows.push(findingRow("confirmed, payment not completed", w.confirmed_not_completed.count, w.confirmed_not_completed.sample),
      findingRow(`completed, never confirmed (after ${w.grace_s} s)`, w.completed_not_confirmed.count, w.completed_not_confirmed.sample),
      findingRow("confirmed, payment unknown here", w.confirmed_unknown.count, w.confirmed_unknown.sample));
  }
  $("r-summary").tBodies[0].replaceChildren(...rows);
  let text = "no worker configured (RECONCILIATION_WORKER_URL)";
  if (w && w.error) text = `${w.url}: ${w.error}`;
  else if (w) text = `${w.url}: ${w.reservations_recorded} reservations recorded` +
    (w.reservation_api ? "" : " (no reservation service: decisions only logged)") +
    (w.completed_not_confirmed.within_grace ? `, ${w.completed_not_confirmed.within_grace} completions within the grace` : "") +
    (w.unchecked ? `, ${w.unchecked} not looked up` : "");
  $("r-worker").textContent = text;
  $("r-at").textContent = "as of " + time(Date.now() / 1000);
  $("r-message").textContent = "";
}
// -- the faults view (#faults): GET /admin/faults's answer, changed through the same code --
const ms = (v) => `${v} ms`;
function latencyText(l) {
  if (!l) return "none";
  const d = l.distribution === "fixed" ? ms(l.ms) : l.distribution === "uniform" ? `${l.min_ms}–${l.max_ms} ms` : `p50 ${l.p50_ms} ms, p99 ${l.p99_ms} ms`;
  return l.when ? `${d} (${l.when} the work)` : d;
}
function faultRow(rpc, f) {
  const codes = Object.entries(f.error_codes).map(([c, w]) => `${c}: ${w}`).join(", ");
  const tr = el("tr");
  tr.append(el("td", rpc), el("td", latencyText(f.latency)),
    el("td", f.error_rate ? `${f.error_rate} (${codes})` : "0"),
    el("td", f.lost_answer_rate ? `${f.lost_answer_rate} (${f.lost_answer_mode})` : "0"),
    el("td", f.slow_drip_rate ? `${f.slow_drip_rate} (${f.slow_drip_chunk_bytes} B every ${f.slow_drip_interval_ms} ms)` : "0"));
  return tr;
}
function showFaults(s) {
  $("fx-seed").textContent = s.seed === null ? "none (unseeded)" : String(s.seed);
  const t = s.timeline;
  $("fx-timeline").textContent = t ? `${t.name}: phase ${t.phase_index + 1} of ${t.phases.length}, ${t.phase} (${t.phase_elapsed_s.toFixed(1)} s of ${t.phases[t.phase_index].duration_s} s)` : "none";
  const w = s.plan.webhooks;
  $("fx-lag").textContent = !w ? "none" : w.lag_ms !== undefined ? ms(w.lag_ms) : latencyText(w.lag);
  $("fx-base").textContent = t ? "the timeline's phase (the base plan returns when it ends)" : "the base plan";
  const rows = Object.entries(s.plan.rpcs).map(([rpc, f]) => faultRow(rpc, f));
  if (!rows.length) { const tr = el("tr"), td = el("td", "no faults on any RPC"); td.colSpan = 5; tr.append(td); rows.push(tr); }
  $("fx-plan").tBodies[0].replaceChildren(...rows);
  const sel = $("fx-example");
  if (!sel.options.length) for (const name of s.examples) sel.append(el("option", name));
  $("fx-at").textContent = "as of " + time(Date.now() / 1000);
}
async function loadFaults() { showFaults(await api("/console/api/faults")); }
async function changeFaults(body, done) {
  try { showFaults(await post("/console/api/faults/change", body)); $("fx-message").textContent = done; }
  catch (e) { $("fx-message").textContent = e.message; }
}
function planBody() {
  try { return { plan: JSON.parse($("fx-plan-in").value) }; }
  catch (e) { $("fx-message").textContent = "the plan is not valid JSON: " + e.message; return null; }
}
function setupFaults(meta) {
  $("nav-faults").hidden = !meta.faults;
  for (const id of ["fx-start", "fx-stop", "fx-apply", "fx-clear"]) $(id).disabled = meta.read_only;
  $("fx-refresh").onclick = () => loadFaults().catch((e) => { $("fx-message").textContent = e.message; });
  $("fx-start").onclick = () => {
    const body = { timeline: $("fx-example").value }, seed = $("fx-seed-in").value.trim();
    if (seed) body.seed = Number(seed);
    changeFaults(body, `timeline ${body.timeline} started`);
  };
  $("fx-stop").onclick = () => changeFaults({ timeline: null }, "timeline stopped: the base plan is in force");
  $("fx-clear").onclick = () => changeFaults({ plan: {} }, "plan cleared: no faults");
  $("fx-apply").onclick = () => { const body = planBody(); if (body) changeFaults(body, "plan applied"); };
  setInterval(() => { if (!$("faults").hidden) loadFaults().catch(() => {}); }, 3000);
}
function showView() {
  const meta = state.meta || {};
  const view = location.hash === "#reconciliation" && meta.reconciliation ? "reconciliation"
    : location.hash === "#faults" && meta.faults ? "faults" : "payments";
  $("reconciliation").hidden = view !== "reconciliation";
  $("faults").hidden = view !== "faults";
  $("overview").hidden = view !== "payments";
  document.querySelector("main").hidden = view !== "payments";
  for (const v of ["payments", "reconciliation", "faults"]) $("nav-" + v).className = view === v ? "on" : "";
  if (view === "reconciliation") loadReconciliation().catch((e) => { $("r-message").textContent = e.message; });
  if (view === "faults") loadFaults().catch((e) => { $("fx-message").textContent = e.message; });
}

async function start() {
  const meta = await api("/console/api/meta");
  state.meta = meta;
  $("readonly").hidden = !meta.read_only;
  for (const s of ["PENDING", "PROCESSING", "COMPLETED", "FAILED", "CANCELLED", "REFUNDED", "EXPIRED"]) $("f-status").append(el("option", s));
  for (const s of meta.scenarios) $("c-scenario").append(el("option", s));
  for (const d of meta.decline_codes) { const o = el("option", `${d.code} (${d.response_code})`); o.value = d.code; $("decline-code").append(o); }
  $("c-webhook").value = meta.default_webhook_url;
  for (const b of document.querySelectorAll("#actions button")) { b.onclick = () => act(b.dataset.action); b.disabled = meta.read_only; }
  for (const id of ["q", "f-status", "f-user", "f-reservation", "f-key"]) $(id).addEventListener("input", () => loadList().catch(() => {}));
  $("filters").onsubmit = (e) => e.preventDefault();
  $("create").onsubmit = async (e) => {
    e.preventDefault();
    const body = { amount: $("c-amount").value, currency: $("c-currency").value, scenario: $("c-scenario").value, webhook_url: $("c-webhook").value };
    if ($("c-delay").value.trim()) body.delay_ms = $("c-delay").value.trim();
    try { const r = await post("/console/api/create", body); select(r.payment_id); }
    catch (err) { $("d-message").textContent = err.message; $("detail").hidden = false; }
  };
  $("recover").onclick = async () => {
    const v = $("recover-since").value;
    const since = v ? new Date(v).getTime() / 1000 : 0;
    try { const r = await post("/console/api/recover", { since }); $("recover").textContent = `Recover (${r.resent} resent)`; }
    catch (err) { $("recover").textContent = "Recover: " + err.message; }
    loadEndpoints().catch(() => {});
  };
  $("nav-reconciliation").hidden = !meta.reconciliation;
  $("r-refresh").onclick = () => loadReconciliation().catch((e) => { $("r-message").textContent = e.message; });
  setupFaults(meta);
  window.addEventListener("hashchange", showView);
  setInterval(() => { if (!$("reconciliation").hidden) loadReconciliation().catch(() => {}); }, 5000);
  showView();
  connect();
}
start();
