// Floodgate's operator console: every live receiver, accepted/refused/stored per second,
// the heaviest clients of the last minute with a ban button, and the blocklist. It polls
// /v1/stats and /v1/blocklist with the admin token while connected, so bans made anywhere
// else (automatic ones included) show up; data is only ever put in the page as text (never
// as HTML). An outage never empties the page: while the store is away the API serves the
// last statistics it read, and while the API itself is away the page keeps what it shows;
// either way one line says what is away and since when, and polling goes on.
"use strict";

const $ = (selector) => document.querySelector(selector);
const POLL_MS = 2000;
const HISTORY = 150; // points on the chart (five minutes at one poll every 2 s)
const state = {
  token: "", timer: null, last: null, history: [], entries: [], listing: false, relist: false,
  apiAwaySince: null,
};

function status(text) { $("#status").textContent = text; }
// What the operator's last action did: kept apart from the polled status line, which a
// poll would otherwise overwrite before it is read.
function done(text) { $("#done").textContent = text; }

function clock(seconds) { return new Date(seconds * 1000).toLocaleTimeString(); }

function outage(text) {
  const line = $("#outage");
  line.textContent = text || "";
  line.hidden = !text;
}

function storeLine(store) {
  if (!store || store.up) return "";
  const shown = store.read_at === null
    ? "no statistics read since the API started"
    : `showing the statistics read at ${clock(store.read_at)}`;
  return `store away since ${clock(store.away_since)} (${store.reason}): ${shown}; retrying`;
}

function api(path, options = {}) { return floodgateFetch(state.token, path, options); }

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.append(td);
  return td;
}

// Each cell carries its column's name: on a narrow screen a row is shown as a card whose
// cells are labelled (console.css), so no column hides behind a sideways scrollbar.
function label(table) {
  const names = [...table.querySelectorAll("thead th")].map((th) => th.textContent);
  for (const row of table.querySelectorAll("tbody tr")) {
    [...row.children].forEach((td, i) => { td.dataset.label = names[i] || ""; });
  }
}

function button(text, action) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  b.addEventListener("click", () => action().catch((e) => done(e.message)));
  return b;
}

// --- receivers and the chart ----------------------------------------------------------

function receivers(list) {
  const body = $("#receivers tbody");
  body.replaceChildren();
  for (const r of list) {
    const row = document.createElement("tr");
    cell(row, r.receiver);
    cell(row, `${r.age_s.toFixed(1)} s`, "num");
    cell(row, r.store_up ? "up" : `down: ${r.store_reason}`, r.store_up ? "" : "down");
    cell(row, r.stress ? "STRESS" : "no", r.stress ? "down" : "");
    cell(row, String(r.open_connections), "num");
    const spool = r.spool;
    const held = spool && spool.messages > 0;
    cell(
      row,
      !spool ? "off" : held ? `${spool.messages} msgs, oldest ${spool.oldest_s.toFixed(0)} s` : "empty",
      held ? "down" : "",
    );
    body.append(row);
  }
  label($("#receivers"));
}

function rates(list) {
  // Each receiver publishes its totals every few seconds: its rate is the change between
  // two of its snapshots over the time between them; the chart adds the receivers up.
  const point = { accepted: 0, refused: 0, stored: 0 };
  const seen = {};
  for (const r of list) {
    const before = state.last ? state.last[r.receiver] : undefined;
    let rate = before ? before.rate : null;
    if (before && r.at > before.at) {
      rate = {};
      for (const k of Object.keys(point)) {
        // A restarted receiver's totals start again from zero: no negative rate.
        rate[k] = Math.max(0, r.totals[k] - before.totals[k]) / (r.at - before.at);
      }
    }
    seen[r.receiver] = before && r.at === before.at ? before : { at: r.at, totals: r.totals, rate };
    if (rate) for (const k of Object.keys(point)) point[k] += rate[k];
  }
  state.last = seen;
  state.history.push(point);
  state.history.splice(0, Math.max(0, state.history.length - HISTORY));
  draw();
}

function draw() {
  const canvas = $("#chart");
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, canvas.width, canvas.height);
  const points = state.history;
  const top = Math.max(1, ...points.flatMap((p) => [p.accepted, p.refused, p.stored]));
  g.fillStyle = "#666";
  g.font = "11px sans-serif";
  g.fillText(`${Math.round(top)}/s`, 4, 12);
  const colours = { accepted: "#1565c0", refused: "#c62828", stored: "#2e7d32" };
  for (const [name, colour] of Object.entries(colours)) {
    g.strokeStyle = colour;
    g.lineWidth = 2;
    g.beginPath();
    points.forEach((p, i) => {
      const x = (i / (HISTORY - 1)) * canvas.width;
      const y = canvas.height - 4 - (p[name] / top) * (canvas.height - 20);
      if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
    });
    g.stroke();
  }
}

// --- top clients ----------------------------------------------------------------------

function clients(stats) {
  const window = stats.overall.windows["1m"] || { refusals: [], messages: [] };
  const rows = new Map();
  const get = (key) => {
    if (!rows.has(key)) rows.set(key, { key, refused: 0, connections: 0, messages: 0, open: 0 });
    return rows.get(key);
  };
  for (const [key, n] of window.refusals) get(key).refused = n;
  for (const [key, n] of window.connections || []) get(key).connections = n;
  const why = new Map(); // each client's main refusal reason
  for (const [reason, list] of Object.entries(window.by_reason || {})) {
    for (const [key, n] of list) {
      if (!why.has(key) || why.get(key).n < n) why.set(key, { reason, n });
    }
  }
  for (const [key, n] of window.messages) get(key).messages = n;
  for (const [key, n] of stats.overall.top_open) get(key).open = n;
  const ordered = [...rows.values()].sort(
    (a, b) => b.refused - a.refused || b.connections - a.connections || b.open - a.open ||
      b.messages - a.messages);
  const body = $("#clients tbody");
  body.replaceChildren();
  for (const c of ordered) {
    const known = stats.clients[c.key] || { blocked: false };
    const row = document.createElement("tr");
    row.id = `client-${c.key}`;
    if (known.blocked) row.className = "blocked";
    cell(row, c.key);
    cell(row, String(c.refused), "num");
    cell(row, why.has(c.key) ? why.get(c.key).reason : "");
    cell(row, String(c.connections), "num");
    cell(row, String(c.messages), "num");
    cell(row, String(c.open), "num");
    cell(row, known.blocked ? `blocked (${known.source})` : "");
    const actions = cell(row, "");
    actions.append(known.blocked
      ? button("Unban", () => unban(c.key))
      : button("Ban", () => ban(c.key)));
    body.append(row);
  }
  label($("#clients"));
}

async function ban(key) {
  const ttl = $("#ttl").value;
  const body = { cidr: key, reason: $("#reason").value.trim() };
  if (ttl) body.ttl_seconds = Number(ttl);
  await api("/v1/blocklist", { method: "POST", body: JSON.stringify(body) });
  done(`banned ${key}`);
  await refresh();
  await loadBlocklist();
}

async function unban(key) {
  const check = await (await api(`/v1/blocklist/check/${encodeURIComponent(key.split("/")[0])}`)).json();
  if (!check.entry) return;
  await api(`/v1/blocklist/${encodeURIComponent(check.entry.cidr)}`, { method: "DELETE" });
  done(`unbanned ${check.entry.cidr}`);
  await refresh();
  await loadBlocklist();
}

// --- the blocklist --------------------------------------------------------------------

async function loadBlocklist() {
  // One listing at a time; a change asked for meanwhile (a ban, a removal) lists again
  // once it answers, so the page never ends on a listing older than the change.
  if (state.listing) { state.relist = true; return; }
  state.listing = true;
  try {
    do {
      state.relist = false;
      const source = $("#source").value;
      const query = source ? `&source=${source}` : "";
      const page = await (await api(`/v1/blocklist?limit=1000${query}`)).json();
      state.entries = page.entries;
      $("#blocklist-count").textContent =
        `${page.entries.length}${page.next ? "+ (first 1,000 shown)" : ""} entries`;
      showBlocklist();
    } while (state.relist);
  } finally {
    state.listing = false;
  }
}

function showBlocklist() {
  const needle = $("#search").value.trim().toLowerCase();
  const body = $("#blocklist tbody");
  body.replaceChildren();
  for (const e of state.entries) {
    if (needle && !e.cidr.includes(needle) && !e.reason.toLowerCase().includes(needle)) continue;
    const row = document.createElement("tr");
    cell(row, e.cidr);
    cell(row, e.source);
    cell(row, e.reason);
    cell(row, e.expires_at ? e.expires_at.replace("T", " ").slice(0, 19) : "never");
    cell(row, "").append(button("Remove", async () => {
      await api(`/v1/blocklist/${encodeURIComponent(e.cidr)}`, { method: "DELETE" });
      await loadBlocklist();
    }));
    body.append(row);
  }
  label($("#blocklist"));
}

async function clearAutomatic() {
  const result = await (await api("/v1/blocklist?source=auto", { method: "DELETE" })).json();
  done(`removed ${result.removed} automatic bans`);
  await loadBlocklist();
}

// --- polling --------------------------------------------------------------------------

async function refresh() {
  let stats;
  try {
    stats = await (await api("/v1/stats")).json();
  } catch (error) {
    // 5xx or no answer at all: the API is away. What the page shows stays; a refused
    // token is not an outage and is said as it is.
    if (error.status && error.status < 500) throw error;
    if (state.apiAwaySince === null) state.apiAwaySince = Date.now() / 1000;
    outage(`API unreachable since ${clock(state.apiAwaySince)} (${error.message}): ` +
           "showing the last statistics; retrying");
    return;
  }
  state.apiAwaySince = null;
  outage(storeLine(stats.store));
  receivers(stats.receivers);
  if (stats.store.up) rates(stats.receivers); // a kept snapshot has no new rate
  clients(stats);
  status(`${stats.store.up ? "live" : "kept"}: ${stats.receivers.length} receivers, ` +
         `${stats.overall.open_connections} open connections`);
}

function connect() {
  if (state.timer) clearInterval(state.timer);
  state.last = null;
  state.history = [];
  // The blocklist is polled with the statistics: automatic bans and bans made elsewhere
  // (floodgate top, the CLI, another console) appear within a poll.
  const tick = () => {
    refresh().catch((e) => status(e.message));
    // The listing shown stays while the store or the API is away (the outage line says
    // so); only a refusal of ours is news.
    loadBlocklist().catch((e) => { if (e.status && e.status < 500) status(e.message); });
  };
  tick();
  state.timer = setInterval(tick, POLL_MS);
}

function start() {
  const given = new URLSearchParams(location.hash.slice(1));
  state.token = given.get("token") || sessionStorage.getItem("floodgate-admin-token") || "";
  $("#token").value = state.token;
  $("#login").addEventListener("submit", (submitted) => {
    submitted.preventDefault();
    state.token = $("#token").value.trim();
    sessionStorage.setItem("floodgate-admin-token", state.token);
    connect();
  });
  $("#search").addEventListener("input", showBlocklist);
  $("#source").addEventListener("change", () => loadBlocklist().catch((e) => done(e.message)));
  $("#clear-auto").addEventListener("click", () => clearAutomatic().catch((e) => done(e.message)));
  if (state.token) connect();
}

start();
