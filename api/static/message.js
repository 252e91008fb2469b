// The open message in Floodgate's web inbox: its tabs (rendered, text, headers, source,
// authentication, links and codes), remote content held back until asked for, and the
// confirmed delete. Message data only ever enters the page as text; the HTML part is shown
// sanitised (by the API), styles and all, in a sandboxed frame whose own CSP blocks remote
// images, with its cid: images taken from the message itself, links opening in a new tab,
// and as tall as its content (measured from here: nothing runs inside the frame).
"use strict";

// Remote images can tell the sender when and where a message was read: blocked unless the
// reader asks, per message. The page's own CSP lets https/http images through so that this
// frame policy (the frame inherits both) is the one that decides.
const FRAME_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'";
const FRAME_CSP_REMOTE = "default-src 'none'; img-src data: https: http:; style-src 'unsafe-inline'";
const REMOTE = /^\s*(https?:)?\/\//i;
const LOADING_ATTRIBUTES = ["src", "srcset", "background", "poster"];
// A source view of a 10 MB message would stall the page; the download has every byte.
const RAW_SHOWN = 1_000_000;
const RESULT_CLASS = {
  pass: "good", fail: "bad", permerror: "bad", softfail: "warn", temperror: "warn",
  neutral: "neutral", none: "neutral", policy: "warn",
};

const view = {
  message: null, remoteShown: new Set(), loaded: new Set(), panel: "rendered",
  images: new Map(),  // data: URLs of inline images, by message id and index
};

function element(tag, className, text) {
  const made = document.createElement(tag);
  if (className) made.className = className;
  if (text !== undefined) made.textContent = text;
  return made;
}

// cid: URLs (RFC 2392) name a part of the message by its Content-ID, %-encoded.
const CID = /^\s*cid:/i;
// Inline images are fetched with the token (an <img> in the frame could not send it) and
// framed as data: URLs; at most this many per message and this large each.
const MAX_INLINE = 50;
const MAX_INLINE_BYTES = 5 * 1024 * 1024;
// Past this, the frame scrolls inside itself (a style like `height: 200vh` would otherwise
// make the frame grow each time it is measured).
const MAX_FRAME_HEIGHT = 50000;

function contentId(src) {
  const value = src.replace(CID, "").trim();
  try { return decodeURIComponent(value); } catch (_) { return value; }
}

// The inline images this HTML names, fetched (once per message) as data: URLs, by Content-ID.
async function inlineImages(message, doc) {
  const wanted = new Set([...doc.querySelectorAll("img[src]")]
    .map((img) => img.getAttribute("src")).filter((src) => CID.test(src)).map(contentId));
  const images = new Map();
  const parts = (message.inline || []).map((part, index) => ({ ...part, index }))
    .filter((part) => wanted.has(part.content_id) && part.size <= MAX_INLINE_BYTES)
    .slice(0, MAX_INLINE);
  await Promise.all(parts.map(async (part) => {
    const key = `${message.id}/${part.index}`;
    if (!view.images.has(key)) {
      const blob = await (await api(`/v1/messages/${message.id}/inline/${part.index}`)).blob();
      view.images.set(key, await new Promise((resolve, reject) => {
        const reader = new FileReader();
        reader.onload = () => resolve(reader.result);
        reader.onerror = () => reject(reader.error);
        reader.readAsDataURL(blob);
      }));
    }
    images.set(part.content_id, view.images.get(key));
  }));
  return images;
}

// Remote references in the sanitised HTML, counted and (unless shown) taken out, cid: images
// pointed at the message's own parts, read in an inert document (DOMParser loads nothing and
// runs nothing). `<base target="_blank">`: a link opens a new tab (the sandbox lets that
// tab escape it), never inside the frame; rel=noopener so that tab cannot reach this page.
function framed(doc, showRemote, images) {
  let remote = 0;
  for (const node of doc.body.querySelectorAll("*")) {
    for (const name of LOADING_ATTRIBUTES) {
      const value = node.getAttribute(name);
      if (value === null || !REMOTE.test(value)) continue;
      remote += 1;
      if (!showRemote) node.removeAttribute(name);
    }
  }
  for (const img of doc.querySelectorAll("img[src]")) {
    const src = img.getAttribute("src");
    if (!CID.test(src)) continue;
    const found = images.get(contentId(src));
    if (found) img.setAttribute("src", found); else img.removeAttribute("src");
  }
  for (const link of doc.querySelectorAll("a[href], area[href]")) {
    link.setAttribute("rel", "noopener noreferrer");
  }
  const policy = showRemote ? FRAME_CSP_REMOTE : FRAME_CSP;
  const styles = [...doc.head.querySelectorAll("style")].map((style) => style.outerHTML);
  const head = `<meta http-equiv="Content-Security-Policy" content="${policy}">`
    + '<meta name="referrer" content="no-referrer"><base target="_blank">' + styles.join("");
  return { remote, srcdoc: head + doc.body.innerHTML };
}

// The frame as tall as its document. The sandbox gives the frame our origin (so that we may
// measure it) but no scripts, so nothing in the message can use that origin.
function fit(frame) {
  const doc = frame.contentDocument;
  if (!doc?.documentElement || frame.hidden || !frame.offsetParent) return;
  // Measured at the least height, so that a message that became shorter (a wider window)
  // gives the space back: a document is never shorter than its frame.
  frame.style.height = "0px";
  const height = Math.max(doc.documentElement.scrollHeight, doc.body?.scrollHeight || 0);
  frame.style.height = `${Math.min(MAX_FRAME_HEIGHT, height + 2)}px`;
}

// A fresh frame for each document: a frame reused for a new srcdoc keeps the old one's
// history and, in chromium, may not repaint until the next layout.
function freshFrame() {
  const old = $("#html");
  const frame = old.cloneNode(false);
  frame.removeAttribute("srcdoc");
  old.replaceWith(frame);
  return frame;
}

async function showRendered(message) {
  const note = $("#remote-note");
  const fallback = $("#rendered-text");
  if (!message.html_safe) {
    const frame = freshFrame();
    frame.hidden = true;
    frame.srcdoc = "";
    note.hidden = true;
    fallback.hidden = false;
    fallback.textContent = message.text || "(this message has no body)";
    return;
  }
  const shown = view.remoteShown.has(message.id);
  const doc = new DOMParser().parseFromString(message.html_safe, "text/html");
  let images = new Map();
  try {
    images = await inlineImages(message, doc);
  } catch (error) {
    status(`inline images: ${error.message}`);  // the message still shows, without them
  }
  if (view.message !== message) return;  // another message was opened meanwhile
  const { remote, srcdoc } = framed(doc, shown, images);
  const frame = freshFrame();
  frame.addEventListener("load", () => fit(frame));
  fallback.hidden = true;
  frame.hidden = false;
  frame.srcdoc = srcdoc;
  note.hidden = remote === 0;
  $("#remote-show").hidden = shown;
  $("#remote-count").textContent = shown
    ? `Remote content shown (${remote} item${remote === 1 ? "" : "s"}).`
    : `Remote content blocked (${remote} item${remote === 1 ? "" : "s"}): loading it can tell `
      + "the sender that, when and where you read this.";
}

function showHeaders(message) {
  const body = $("#headers tbody");
  body.replaceChildren();
  for (const [name, value] of message.headers) {
    const tr = document.createElement("tr");
    tr.append(element("th", "", name), element("td", "", value));
    body.append(tr);
  }
}

async function showRaw(id) {
  const bytes = await (await api(`/v1/messages/${id}/raw`)).arrayBuffer();
  if (view.message?.id !== id) return;
  const text = new TextDecoder("utf-8").decode(bytes.slice(0, RAW_SHOWN));
  const panel = $("#panel-raw");
  panel.querySelector(".note")?.remove();
  if (bytes.byteLength > RAW_SHOWN) {
    panel.prepend(element("p", "note", `The first ${RAW_SHOWN} bytes of ${bytes.byteLength}: `
      + "download the message for all of it."));
  }
  $("#raw").textContent = text;
}

function badge(result) {
  const word = result || "none";
  return element("span", `badge ${RESULT_CLASS[word] || "neutral"}`, word);
}

function check(title, verdict, details) {
  const box = element("div", "check");
  const head = element("h3");
  head.append(element("span", "title", title), badge(verdict?.result));
  box.append(head);
  const facts = details.filter(([, value]) => value !== undefined && value !== null && value !== "");
  if (facts.length) {
    const list = element("dl");
    for (const [name, value] of facts) list.append(element("dt", "", name), element("dd", "", String(value)));
    box.append(list);
  }
  return box;
}

function yesNo(flag) { return flag === undefined || flag === null ? null : (flag ? "yes" : "no"); }

function showAuth(message) {
  const box = $("#auth");
  box.replaceChildren();
  const auth = message.auth;
  if (!auth) {
    box.append(element("p", "note", "Not checked: this server does not verify SPF, DKIM and "
      + "DMARC (FLOODGATE_AUTH_CHECKS is off), or the message came before it did."));
    return;
  }
  const dmarc = auth.dmarc || {};
  box.append(element("p", "summary", dmarc.result === "pass"
    ? "DMARC passed: a receiving mailbox would take this as really from its From: domain."
    : `DMARC: ${dmarc.result || "none"}. A receiving mailbox may distrust or refuse it; `
      + "the checks below say why."));
  box.append(check("DMARC (From: domain)", dmarc, [
    ["domain", dmarc.domain], ["published policy", dmarc.policy],
    ["SPF aligned", yesNo(dmarc.spf_aligned)], ["DKIM aligned", yesNo(dmarc.dkim_aligned)],
    ["reason", dmarc.reason]]));
  for (const [title, verdict] of [["SPF (envelope sender)", auth.spf], ["SPF (HELO name)", auth.helo]]) {
    box.append(check(title, verdict, [["domain", verdict?.domain], ["reason", verdict?.reason]]));
  }
  const signatures = auth.dkim || [];
  if (!signatures.length) box.append(check("DKIM", { result: "none" }, [["reason", "no signature"]]));
  for (const signature of signatures) {
    box.append(check("DKIM signature", signature, [["domain", signature.domain],
      ["selector", signature.selector], ["reason", signature.reason]]));
  }
  if (auth.arc) box.append(check("ARC", auth.arc, [["reason", auth.arc.reason]]));
}

async function copy(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch (_) {  // no clipboard permission (e.g. plain http off localhost): select instead
    const area = element("textarea", "offscreen");
    area.value = text;
    document.body.append(area);
    area.select();
    const copied = document.execCommand("copy");
    area.remove();
    if (!copied) { button.textContent = "Copy failed"; return; }
  }
  button.textContent = "Copied";
  setTimeout(() => { button.textContent = "Copy"; }, 1500);
}

function copyRow(className, value, label, extra) {
  const item = element("li", className);
  const button = element("button", "copy", "Copy");
  button.type = "button";
  button.setAttribute("aria-label", `copy ${label}`);
  button.addEventListener("click", () => copy(value, button));
  item.append(extra, button);
  return item;
}

// A link as it should be read: its display form (bidi controls escaped, a host mixing
// scripts in punycode), where it really goes when it carries a userinfo
// (https://paypal.com@evil.test/ goes to evil.test), and whether a signature covers it.
function linkOf(link) {
  const box = element("span", "link");
  const safe = /^https?:\/\//i.test(link.url);
  const anchor = element(safe ? "a" : "span", "url", link.display || link.url);
  if (safe) {
    anchor.href = link.url;
    anchor.target = "_blank";
    anchor.rel = "noopener noreferrer";
  }
  if (link.text && link.text !== link.url) box.append(element("span", "text", link.text));
  box.append(anchor);
  if (link.userinfo) {
    box.append(element("span", "badge warn userinfo",
      `goes to ${link.host}, not to ${link.userinfo}`));
  }
  if (link.unsigned) box.append(unsignedBadge());
  return box;
}

function unsignedBadge() {
  const badge = element("span", "badge warn unsigned", "unsigned");
  badge.title = "Only in text appended past a DKIM signature's l= length: no signature covers it.";
  return badge;
}

async function showLinks(id) {
  const box = $("#links");
  let found;
  try {
    found = await (await api(`/v1/messages/${id}/links`)).json();
  } catch (error) {
    if (error.status !== 404) throw error;
    box.replaceChildren(element("p", "note", "Links and codes are not available on this server."));
    return;
  }
  if (view.message?.id !== id) return;
  box.replaceChildren();
  box.append(element("h3", "", "Codes"));
  const codes = element("ul", "codes");
  for (const code of found.codes) {
    const shown = element("span");
    shown.append(element("code", "code", code.code), element("span", "context", code.context || ""));
    if (code.unsigned) shown.append(unsignedBadge());
    codes.append(copyRow("code-row", code.code, `code ${code.code}`, shown));
  }
  if (!found.codes.length) box.append(element("p", "note", "No one-time code found."));
  box.append(codes, element("h3", "", "Links"));
  const links = element("ul", "links");
  for (const link of found.links) links.append(copyRow("link-row", link.url, "link", linkOf(link)));
  if (!found.links.length) box.append(element("p", "note", "No links."));
  box.append(links);
  if (found.truncated) {
    box.append(element("p", "note", "Not everything was read (more links or text than the "
      + "limits): see the source."));
  }
}

// Tabs whose content costs a request load it once, when first opened.
const LAZY = { raw: showRaw, links: showLinks };

function selectTab(panel) {
  view.panel = panel;
  for (const tab of document.querySelectorAll("#tabs [role=tab]")) {
    const selected = tab.dataset.panel === panel;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
    $(`#panel-${tab.dataset.panel}`).hidden = !selected;
  }
  if (panel === "rendered") fit($("#html"));  // a hidden frame could not be measured
  const id = view.message?.id;
  const key = `${id}/${panel}`;
  if (id && LAZY[panel] && !view.loaded.has(key)) {
    view.loaded.add(key);
    LAZY[panel](id).catch((error) => { view.loaded.delete(key); status(error.message); });
  }
}

function showMessage(message) {
  view.message = message;
  view.loaded.clear();
  $("#message").hidden = false;
  $("#subject").textContent = message.subject || "(no subject)";
  const from = message.from.map((a) => a.name ? `${a.name} <${a.address}>` : a.address);
  const meta = $("#meta");
  meta.replaceChildren(element("span", "from", `${from.join(", ") || "(no sender)"} · `));
  if (message.from_repaired) {
    const flag = element("span", "badge warn repaired", "malformed From");
    flag.title = "The From: field is not a valid address (e.g. an encoded word inside it): "
      + "shown as written, not as a lenient reader would show it.";
    meta.append(flag, " · ");
  }
  meta.append(timeElement(message.received_at));
  view.images.clear();  // kept for the open message only
  showInline(message);
  showRendered(message).catch((error) => status(error.message));
  $("#text").textContent = message.text ?? "(this message has no plain-text part)";
  showHeaders(message);
  $("#raw").textContent = "loading…";
  $("#links").replaceChildren(element("p", "note", "loading…"));
  showAuth(message);
  selectTab(view.panel);
}

// The message's inline images (shown in the frame where its HTML names them), each
// downloadable as the attachments are.
function showInline(message) {
  const list = $("#inline-parts");
  list.replaceChildren();
  (message.inline || []).forEach((part, index) => {
    const button = element("button", "", `${part.filename || part.content_id} `
      + `(inline ${part.content_type}, ${part.size} bytes)`);
    button.type = "button";
    button.addEventListener("click", () =>
      download(`/v1/messages/${message.id}/inline/${index}`, part.filename || part.content_id)
        .catch(failed));
    const entry = element("li");
    entry.append(button);
    list.append(entry);
  });
  list.hidden = !list.children.length;
}

function hideMessage() {
  view.message = null;
  $("#message").hidden = true;
  $("#html").srcdoc = "";
}

function installMessageView() {
  for (const tab of document.querySelectorAll("#tabs [role=tab]")) {
    tab.addEventListener("click", () => selectTab(tab.dataset.panel));
  }
  $("#tabs").addEventListener("keydown", (event) => {
    const tabs = [...document.querySelectorAll("#tabs [role=tab]")];
    const at = tabs.findIndex((tab) => tab.dataset.panel === view.panel);
    const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
    if (!step) return;
    const next = tabs[(at + step + tabs.length) % tabs.length];
    selectTab(next.dataset.panel);
    next.focus();
  });
  $("#remote-show").addEventListener("click", () => {
    if (!view.message) return;
    view.remoteShown.add(view.message.id);
    showRendered(view.message).catch((error) => status(error.message));
  });
  let pending = 0;
  addEventListener("resize", () => {  // a new width reflows the message: measure again
    cancelAnimationFrame(pending);
    pending = requestAnimationFrame(() => fit($("#html")));
  });
}
