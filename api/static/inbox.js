// Floodgate's web inbox: list a mailbox, see new mail arrive live (Server-Sent Events read
// with fetch, so the token travels in a header), read, download, delete. Message data is
// only ever put in the page as text; HTML is shown sanitised, in a sandboxed frame.
"use strict";

const $ = (selector) => document.querySelector(selector);
const state = { mailbox: "", token: "", stream: null, lastId: null, open: null };
const FRAME_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'";

function status(text) { $("#status").textContent = text; }

function api(path, options = {}) { return floodgateFetch(state.token, path, options); }

function row(message) {
  if (document.getElementById(`m-${message.id}`)) return;
  const item = document.createElement("li");
  item.id = `m-${message.id}`;
  item.className = "message";
  for (const [name, value] of [["subject", message.subject || "(no subject)"],
                               ["from", message.from], ["when", message.received_at]]) {
    const part = document.createElement("span");
    part.className = name;
    part.textContent = `${value} `;
    item.append(part);
  }
  item.addEventListener("click", () => show(message.id));
  $("#messages").prepend(item);
}

async function openMailbox(mailbox) {
  state.mailbox = mailbox;
  state.lastId = null;
  $("#messages").replaceChildren();
  $("#message").hidden = true;
  status("loading…");
  const path = `/v1/mailboxes/${encodeURIComponent(mailbox)}/messages?limit=100`;
  const listing = await (await api(path)).json();
  for (const message of listing.messages.slice().reverse()) row(message);
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

async function show(id) {
  const message = await (await api(`/v1/messages/${id}`)).json();
  state.open = id;
  for (const item of document.querySelectorAll("#messages li")) {
    item.classList.toggle("open", item.id === `m-${id}`);
  }
  $("#message").hidden = false;
  $("#subject").textContent = message.subject || "(no subject)";
  const from = message.from.map((a) => a.name ? `${a.name} <${a.address}>` : a.address);
  $("#meta").textContent = `${from.join(", ")} · ${message.received_at}`;
  $("#text").textContent = message.text || "";
  const frame = $("#html");
  frame.hidden = !message.html_safe;
  frame.srcdoc = message.html_safe
    ? `<meta http-equiv="Content-Security-Policy" content="${FRAME_CSP}">${message.html_safe}`
    : "";
  const list = $("#attachments");
  list.replaceChildren();
  message.attachments.forEach((attachment, index) => {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = `${attachment.filename || "attachment"} (${attachment.size} bytes)`;
    button.addEventListener("click", () =>
      download(id, index, attachment.filename).catch((e) => status(e.message)));
    item.append(button);
    list.append(item);
  });
}

// File systems take 255 bytes per name; a longer `download` name makes the browser refuse
// the download. Cut to 100 characters (kept under 255 bytes of UTF-8), extension kept.
const MAX_NAME = 100;

function safeName(name) {
  let clean = (name || "attachment").replace(/[\u0000-\u001f\u007f/\\:*?"<>|]/g, "_").trim();
  clean = clean.replace(/^\.+/, "") || "attachment";
  if (Array.from(clean).length <= MAX_NAME) return clean;
  const dot = clean.lastIndexOf(".");
  const extension = dot > 0 && clean.length - dot <= 16 ? clean.slice(dot) : "";
  return Array.from(clean.slice(0, clean.length - extension.length))
    .slice(0, MAX_NAME - Array.from(extension).length).join("") + extension;
}

async function download(id, index, name) {
  const blob = await (await api(`/v1/messages/${id}/attachments/${index}`)).blob();
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = safeName(name);
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

async function remove() {
  if (!state.open) return;
  await api(`/v1/messages/${state.open}`, { method: "DELETE" });
  document.getElementById(`m-${state.open}`)?.remove();
  $("#message").hidden = true;
  state.open = null;
}

function start() {
  const given = new URLSearchParams(location.hash.slice(1));
  // A public deployment puts the read token in the page: visitors only type a mailbox.
  const published = document.querySelector('meta[name="floodgate-read-token"]');
  state.token = published?.content || given.get("token")
    || sessionStorage.getItem("floodgate-token") || "";
  $("#token").value = state.token;
  if (published) $("#token").hidden = true;
  $("#delete").addEventListener("click", () => remove().catch((e) => status(e.message)));
  $("#open").addEventListener("submit", (submitted) => {
    submitted.preventDefault();
    if (!published) {
      state.token = $("#token").value.trim();
      sessionStorage.setItem("floodgate-token", state.token);
    }
    openMailbox($("#mailbox").value.trim()).catch((e) => status(e.message));
  });
  if (given.get("mailbox")) {
    $("#mailbox").value = given.get("mailbox");
    openMailbox(given.get("mailbox")).catch((e) => status(e.message));
  }
}

start();
