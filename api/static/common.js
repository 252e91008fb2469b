// Shared by the web pages (inbox and console): one call to our API with the bearer token,
// and times shown relative ("3 min ago") with the exact time on hover.
// A non-2xx answer becomes an Error carrying the API's own {"error": ...} message and the
// HTTP status (`error.status`).
"use strict";

async function floodgateFetch(token, path, options = {}) {
  const headers = { ...(options.headers || {}), Authorization: `Bearer ${token}` };
  if (options.body) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { ...options, headers });
  if (!response.ok) {
    let message = `HTTP ${response.status}`;
    try { message = (await response.json()).error || message; } catch (_) { /* not JSON */ }
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return response;
}

const RELATIVE = new Intl.RelativeTimeFormat("en", { numeric: "auto" });
const EXACT = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "long" });
const STEPS = [[60, "second"], [3600, "minute"], [86400, "hour"], [7 * 86400, "day"]];

function floodgateAgo(iso, now = Date.now()) {
  const seconds = (new Date(iso).getTime() - now) / 1000;
  if (Number.isNaN(seconds)) return iso;
  if (Math.abs(seconds) < 10) return "just now";
  let unit = 1;
  for (const [limit, name] of STEPS) {
    if (Math.abs(seconds) < limit) return RELATIVE.format(Math.round(seconds / unit), name);
    unit = limit;
  }
  return new Date(iso).toLocaleDateString();
}

// A <time> showing how long ago; `floodgateRefreshTimes` keeps every such one current.
function timeElement(iso) {
  const time = document.createElement("time");
  time.dateTime = iso;
  time.dataset.relative = "";
  const moment = new Date(iso);
  time.title = Number.isNaN(moment.getTime()) ? iso : `${EXACT.format(moment)} (${iso})`;
  time.textContent = floodgateAgo(iso);
  return time;
}

function floodgateRefreshTimes() {
  for (const time of document.querySelectorAll("time[data-relative]")) {
    time.textContent = floodgateAgo(time.dateTime);
  }
}
