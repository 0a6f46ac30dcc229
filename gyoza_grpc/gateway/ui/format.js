// Small shared pieces: times, numbers, states, and the parts of pages they all have.
import { html, nothing } from "./vendor/lit-html/lit-html.js";

export const STATES = ["PENDING", "ASSIGNED", "RUNNING", "COMPLETED", "FAILED", "CANCELLED"];
export const TERMINAL = new Set(["COMPLETED", "FAILED", "CANCELLED"]);

// An ISO time as text that sorts as the time does, to the microsecond ("...:05" and
// "...:05.120000" alike; every time the gateway writes is UTC).
export function timeKey(iso) {
  const m = /^(.*T\d\d:\d\d:\d\d)(\.\d+)?/.exec(iso);
  return m ? m[1] + (m[2] || ".").padEnd(7, "0") : iso;
}

export function ago(iso, now = Date.now()) {
  if (!iso) return "";
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

export function until(iso, now = Date.now()) {
  if (!iso) return "";
  const s = Math.round((Date.parse(iso) - now) / 1000);
  return s >= 0 ? `in ${s} s` : `${-s} s ago`;
}

export const when = (iso) =>
  iso ? html`<time datetime=${iso} title=${iso}>${ago(iso)}</time>` : html`<span class="muted">—</span>`;

export const at = (iso) =>
  iso ? html`<time datetime=${iso}>${iso.replace("T", " ").replace(/(\.\d{3})\d*/, "$1").replace("+00:00", " UTC")}</time>` : html`<span class="muted">—</span>`;

export const number = (n) => Number(n).toLocaleString("en-US");

export const state = (s) => html`<span class="state state-${s.toLowerCase()}">${s}</span>`;

export function progress(value, label) {
  return html`<span class="progress"><progress max="100" value=${value} aria-label=${label}></progress><span>${value}%</span></span>`;
}

export const json = (doc) => JSON.stringify(doc, null, 2);

// The error of a call, as a page shows it.
export function problem(err) {
  if (!err) return nothing;
  const body = err.body || {};
  const code = body.code ? ` (${body.code})` : "";
  const detail = typeof body.detail === "string" ? body.detail : err.message;
  return html`<p class="error" role="alert">${detail}${code}</p>`;
}

// "Live" or what the page is doing to get there, for screen readers too.
export function liveStatus(status) {
  const text = {
    connecting: "Connecting…",
    live: "Live",
    reconnecting: "Reconnecting…",
    ended: "Ended",
  }[status] || "";
  return html`<p class="live live-${status}" role="status">${text}</p>`;
}
