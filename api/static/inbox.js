// Floodgate's web inbox: say what to type, list a mailbox page by page, see new mail arrive
// live (Server-Sent Events read with fetch, so the token travels in a header), move through
// it with the keyboard, read (message.js), download, delete a message or empty the mailbox
// after a confirmation. Message data is only ever put in the page as text.
"use strict";

const $ = (selector) => document.querySelector(selector);
const state = {
  mailbox: "", token: "", stream: null, lastId: null, open: null, selected: null,
  published: false, domains: [], tokenKind: "admin", next: null, paging: false,
};
// Messages asked for at a time; "Older messages" asks for the next page (the `next` cursor).
const PAGE = 50;
const TOKEN_HELP = {
  read: ["read token", "Token: the read token (FLOODGATE_READ_TOKEN) opens any mailbox; the "
    + "admin token works too."],
  admin: ["admin token", "Token: the admin token (FLOODGATE_ADMIN_TOKEN, or the one floodgate run "
    + "prints and writes to var/admin-token). This server has no read token."],
};

function status(text) { $("#status").textContent = text; }

function notice(text) {
  $("#notice").textContent = text || "";
  $("#notice").hidden = !text;
}

function api(path, options = {}) { return floodgateFetch(state.token, path, options); }

function failed(error) {
  status(error.status === 401
    ? `that token does not open mailboxes here. ${TOKEN_HELP[state.tokenKind][1]}`
    : error.message);
}

function rows() { return [...document.querySelectorAll("#messages li.message")]; }

function showEmpty() {
  const count = rows().length;
  const empty = count === 0 && Boolean(state.mailbox);
  $("#list-actions").hidden = !state.mailbox || count === 0;
  $("#count").textContent = `${count}${state.next ? "+" : ""} message${count === 1 ? "" : "s"}`;
  $("#more").hidden = !state.next;
  $("#empty").hidden = !empty;
  $("#empty-title").textContent = `No mail for ${state.mailbox} yet.`;
  $("#empty-hint").textContent = `Waiting for it live: send a message to ${state.mailbox} and `
    + "it appears here, no reload needed.";
}

function row(message, newest = true) {
  if (document.getElementById(`m-${message.id}`)) return;
  const item = document.createElement("li");
  item.id = `m-${message.id}`;
  item.className = "message";
  item.tabIndex = -1;
  item.dataset.id = message.id;
  const subject = document.createElement("span");
  subject.className = "subject";
  subject.textContent = message.subject || "(no subject)";
  const from = document.createElement("span");
  from.className = "from";
  from.textContent = message.from;
  item.append(subject, from, timeElement(message.received_at));
  item.addEventListener("click", () => { select(item); open(item); });
  if (newest) $("#messages").prepend(item); else $("#messages").append(item);
  showEmpty();
}

function listPath(mailbox) { return `/v1/mailboxes/${encodeURIComponent(mailbox)}/messages`; }

// One page of the listing, below what is shown (older), and where the next one starts.
function addPage(listing) {
  for (const message of listing.messages) row(message, false);
  state.next = listing.next || null;
  showEmpty();
}

async function older() {
  const mailbox = state.mailbox;
  if (!state.next || state.paging) return;
  state.paging = true;
  $("#more").disabled = true;
  try {
    const path = `${listPath(mailbox)}?limit=${PAGE}&before=${encodeURIComponent(state.next)}`;
    const listing = await (await api(path)).json();
    if (state.mailbox === mailbox) addPage(listing);
  } finally {
    state.paging = false;
    $("#more").disabled = false;
  }
}

function confirmEmpty() {
  if (!state.mailbox) return;
  $("#confirm-empty-mailbox").textContent = state.mailbox;
  $("#confirm-empty").showModal();
}

async function emptyMailbox() {
  const mailbox = state.mailbox;
  if (!mailbox) return;
  const { deleted } = await (await api(listPath(mailbox), { method: "DELETE" })).json();
  if (state.mailbox !== mailbox) return;
  closeMessage();
  state.selected = null;
  state.next = null;
  $("#messages").replaceChildren();
  showEmpty();
  status(`live: ${mailbox} (emptied: ${deleted} deleted)`);
}

function domainOf(mailbox) { return mailbox.slice(mailbox.lastIndexOf("@") + 1).toLowerCase(); }

async function openMailbox(mailbox) {
  if (state.stream) state.stream.abort();
  state.mailbox = "";
  state.lastId = null;
  state.selected = null;
  state.next = null;
  $("#messages").replaceChildren();
  closeMessage();
  notice("");
  showEmpty();
  if (!mailbox.includes("@")) {
    notice(`"${mailbox}" is not an address: type one like anything@${state.domains[0] || "mx.test"}.`);
    return;
  }
  if (state.domains.length && !state.domains.includes(domainOf(mailbox))) {
    notice(`We do not receive mail for ${domainOf(mailbox)}: nothing sent to ${mailbox} `
      + `arrives here. Use an address at ${state.domains.join(", ")}.`);
    status("not one of our domains");
    return;
  }
  status("loading…");
  const listing = await (await api(`${listPath(mailbox)}?limit=${PAGE}`)).json();
  state.mailbox = mailbox;
  $("#guide").open = false;  // said once; the summary line opens it again
  addPage(listing);
  if (listing.messages.length) state.lastId = listing.messages[0].id;
  listen();
}

async function listen() {
  if (state.stream) state.stream.abort();
  const controller = new AbortController();
  state.stream = controller;
  const mailbox = state.mailbox;
  const headers = state.lastId ? { "Last-Event-ID": state.lastId } : {};
  try {
    const response = await api(`/v1/mailboxes/${encodeURIComponent(mailbox)}/events`,
                                { headers, signal: controller.signal });
    status(`live: ${mailbox}`);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        event(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
  } catch (error) {
    if (controller.signal.aborted) return;
    status(`reconnecting (${error.message})`);
  }
  if (!controller.signal.aborted && state.mailbox === mailbox) setTimeout(listen, 2000);
}

function event(block) {
  const fields = {};
  for (const line of block.split("\n")) {
    const colon = line.indexOf(":");
    if (colon > 0) fields[line.slice(0, colon)] = line.slice(colon + 1).trim();
  }
  if (!fields.data) return;
  row(JSON.parse(fields.data));
  state.lastId = fields.id;
}

function select(item) {
  if (!item) return;
  state.selected = item.dataset.id;
  for (const other of rows()) other.classList.toggle("selected", other === item);
  item.focus({ preventScroll: true });
  item.scrollIntoView({ block: "nearest" });
}

async function open(item) {
  const id = item.dataset.id;
  const message = await (await api(`/v1/messages/${id}`)).json();
  state.open = id;
  for (const other of rows()) other.classList.toggle("open", other.dataset.id === id);
  document.body.classList.add("reading");
  showMessage(message);
  const list = $("#attachments");
  list.replaceChildren();
  message.attachments.forEach((attachment, index) => {
    const entry = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = `${attachment.filename || "attachment"} (${attachment.size} bytes)`;
    button.addEventListener("click", () =>
      download(`/v1/messages/${id}/attachments/${index}`, attachment.filename).catch(failed));
    entry.append(button);
    list.append(entry);
  });
}

function closeMessage() {
  state.open = null;
  document.body.classList.remove("reading");
  for (const other of rows()) other.classList.remove("open");
  hideMessage();
}

// File systems take 255 bytes per name, and the browser needs room for its temporary
// suffix: a longer `download` name makes it refuse the download (100 CJK characters are
// 300 bytes). Cut to 200 bytes of UTF-8, never inside a character, extension kept, as the
// API cuts names; bidi controls (which would show "exe.pdf" for "fdp.exe") become "_".
const MAX_NAME_BYTES = 200;
const UTF8 = new TextEncoder();

function cutBytes(text, limit) {
  let kept = "";
  let size = 0;
  for (const char of text) {
    size += UTF8.encode(char).length;
    if (size > limit) break;
    kept += char;
  }
  return kept.replace(/[\u200d\u0300-\u036f\ufe0f]+$/, "");
}

function safeName(name) {
  const unsafe = /[\u0000-\u001f\u007f/\\:*?"<>|\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]/g;
  let clean = (name || "attachment").replace(unsafe, "_").trim();
  clean = clean.replace(/^\.+/, "") || "attachment";
  if (UTF8.encode(clean).length <= MAX_NAME_BYTES) return clean;
  const dot = clean.lastIndexOf(".");
  const extension = dot > 0 && clean.length - dot <= 16 ? clean.slice(dot) : "";
  const room = MAX_NAME_BYTES - UTF8.encode(extension).length;
  return cutBytes(clean.slice(0, clean.length - extension.length), room) + extension;
}

async function download(path, name) {
  const blob = await (await api(path)).blob();
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = safeName(name);
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

function confirmDelete() {
  if (!state.open) return;
  $("#confirm-subject").textContent = $("#subject").textContent;
  $("#confirm-delete").showModal();
}

async function remove() {
  const id = state.open;
  if (!id) return;
  await api(`/v1/messages/${id}`, { method: "DELETE" });
  const item = document.getElementById(`m-${id}`);
  const next = item?.nextElementSibling || item?.previousElementSibling;
  item?.remove();
  closeMessage();
  if (next) select(next);
  showEmpty();
}

const KEYS = {
  j: () => move(1),
  k: () => move(-1),
  Enter: () => { const item = document.getElementById(`m-${state.selected}`); if (item) open(item).catch(failed); },
  Escape: () => { if (state.open) { closeMessage(); select(document.getElementById(`m-${state.selected}`)); } },
};

function move(step) {
  const all = rows();
  if (!all.length) return;
  const at = all.findIndex((item) => item.dataset.id === state.selected);
  select(all[Math.min(all.length - 1, Math.max(0, at < 0 ? 0 : at + step))]);
}

function keyboard(event) {
  const typing = event.target.closest("input, textarea, select");
  if (typing || $("#confirm-delete").open || $("#confirm-empty").open || event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.key === "Enter" && event.target.closest("button, a")) return;  // its own click
  const action = KEYS[event.key];
  if (!action) return;
  event.preventDefault();
  action();
}

function explain() {
  const domains = document.querySelector('meta[name="floodgate-domains"]')?.content || "";
  state.domains = domains.split(",").filter(Boolean);
  state.tokenKind = document.querySelector('meta[name="floodgate-token-kind"]')?.content === "read"
    ? "read" : "admin";
  const first = state.domains[0] || "mx.test";
  $("#mailbox").placeholder = `anything@${first}`;
  $("#domains").textContent = state.domains.length ? state.domains.join(", ") : "our domains";
  const [label, help] = TOKEN_HELP[state.tokenKind];
  $("#token").placeholder = label;
  $("#token-label").textContent = label;
  $("#token-help").textContent = state.published ? "No token needed: this inbox is public." : help;
}

function installActions() {
  $("#delete").addEventListener("click", confirmDelete);
  $("#confirm-cancel").addEventListener("click", () => $("#confirm-delete").close());
  $("#confirm-ok").addEventListener("click", () => {
    $("#confirm-delete").close();
    remove().catch(failed);
  });
  $("#back").addEventListener("click", () => KEYS.Escape());
  $("#more").addEventListener("click", () => older().catch(failed));
  $("#empty-mailbox").addEventListener("click", confirmEmpty);
  $("#confirm-empty-cancel").addEventListener("click", () => $("#confirm-empty").close());
  $("#confirm-empty-ok").addEventListener("click", () => {
    $("#confirm-empty").close();
    emptyMailbox().catch(failed);
  });
  $("#raw-download").addEventListener("click", () => {
    if (state.open) download(`/v1/messages/${state.open}/raw`, `${state.open}.eml`).catch(failed);
  });
  document.addEventListener("keydown", keyboard);
  setInterval(floodgateRefreshTimes, 30000);
}

// A token given in the fragment is kept for this tab (as a typed one is) and taken out of
// the address bar at once: it would otherwise stay in the history, in a bookmark, on screen.
function forgetFragmentToken(given) {
  if (!given.has("token")) return;
  sessionStorage.setItem("floodgate-token", given.get("token"));
  const rest = new URLSearchParams(given);
  rest.delete("token");
  const fragment = rest.toString();
  history.replaceState(history.state, "", location.pathname + location.search
    + (fragment ? `#${fragment}` : ""));
}

function start() {
  const given = new URLSearchParams(location.hash.slice(1));
  forgetFragmentToken(given);
  // A public deployment puts the read token in the page: visitors only type a mailbox.
  const published = document.querySelector('meta[name="floodgate-read-token"]');
  state.published = Boolean(published);
  state.token = published?.content || given.get("token")
    || sessionStorage.getItem("floodgate-token") || "";
  $("#token").value = state.token;
  if (published) $("#token").hidden = true;
  explain();
  installMessageView();
  installActions();
  $("#open").addEventListener("submit", (submitted) => {
    submitted.preventDefault();
    if (!published) {
      state.token = $("#token").value.trim();
      sessionStorage.setItem("floodgate-token", state.token);
    }
    openMailbox($("#mailbox").value.trim()).catch(failed);
  });
  if (given.get("mailbox")) {
    $("#mailbox").value = given.get("mailbox");
    openMailbox(given.get("mailbox")).catch(failed);
  }
}

start();
