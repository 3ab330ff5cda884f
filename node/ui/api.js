// Calls to the node that served the page; errors are shown in the API's own words.
"use strict";
import { envelope, requestHeaders } from "./crypto.js";

export class ApiError extends Error {
  constructor(status, body) {
    super(body && body.detail ? `${body.detail} (${body.error})` : `HTTP ${status}`);
    this.status = status;
    this.code = body && body.error;
    this.body = body || {};
  }
}

export async function call(method, path, { key = null, body = undefined } = {}) {
  const headers = { "Content-Type": "application/json" };
  if (key) Object.assign(headers, await requestHeaders(key, method, path));
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  let out = null;
  try { out = await r.json(); } catch (e) { out = null; }
  if (!r.ok) throw new ApiError(r.status, out);
  return out;
}

// Sign and submit a transaction, waiting for its commit: {tx_id, height, valid, code}
export async function submit(key, type, org, payload, privateValue, hashField) {
  const env = await envelope(key, type, org, payload, privateValue, hashField);
  return call("POST", "/v1/tx?wait=commit", { body: env });
}

export const PURPOSES = ["dpv:CustomerCare", "dpv:CustomerRelationshipManagement", "dpv:CustomerClaimsManagement",
  "dpv:DirectMarketing", "dpv:PersonalisedBenefits", "dpv:ServiceProvision"];

export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) e.append(c instanceof Node ? c : document.createTextNode(String(c ?? "")));
  return e;
}

export function table(headers, rows) {
  return el("table", {}, el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows.map((r) => el("tr", {}, r.map((c) => el("td", {}, c))))));
}

export function when(ms) {
  return ms ? new Date(ms).toLocaleString() : "";
}

// Show a message in the page's status line (role=status, so screen readers announce it)
export function say(text, isError = false) {
  const s = document.getElementById("status");
  s.textContent = text;
  s.className = isError ? "error" : "ok";
}

export async function readKeyFile(fileInput, textArea) {
  if (fileInput.files && fileInput.files[0]) return await fileInput.files[0].text();
  return textArea.value;
}
