// The customer portal: everything is read and written with the customer's own key.
"use strict";
import { loadKey, secureContext } from "./crypto.js";
import { PURPOSES, call, el, readKeyFile, say, submit, table, when } from "./api.js";

const $ = (id) => document.getElementById(id);
let key = null;
let cid = null;

async function open() {
  try {
    key = await loadKey(await readKeyFile($("keyfile"), $("keytext")));
    cid = $("cid").value.trim();
    if (!cid) throw new Error("enter your customer id");
    await refresh();
    $("record").hidden = false;
    say("Signed in as the holder of key " + key.publicHex.slice(0, 16) + "…");
  } catch (e) {
    say(e.message, true);
  }
}

async function refresh() {
  const path = `/v1/customers/${encodeURIComponent(cid)}`;
  let rec;
  try {
    rec = await call("GET", path, { key });
  } catch (e) {
    if (e.status !== 410) throw e;
    rec = await call("GET", path);   // erased: the public record is all there is
  }
  $("profile").replaceChildren(rec.erased
    ? el("p", {}, "Your personal data is erased.")
    : table(["Field", "Value"], Object.entries(rec.profile || {}).map(([k, v]) => [k, v])));
  const consents = (await call("GET", `${path}/consents`)).consents;
  $("consents").replaceChildren(consents.length ? table(["Organisation", "Purpose", "Fields", "Until", "State", ""],
    consents.map((c) => [c.grantee_org, c.purpose, c.scope.join(", "), c.expires_ts ? when(c.expires_ts) : "until revoked",
      el("span", { class: `state-${c.state}`, "data-org": c.grantee_org }, c.state),
      c.state === "active" ? el("button", { type: "button", class: "secondary", "aria-label": `Revoke consent for ${c.grantee_org}`,
        onclick: () => revoke(c.grantee_org) }, "Revoke") : ""]))
    : el("p", { class: "muted" }, "No consents."));
  const access = (await call("GET", `${path}/access`, { key })).access;
  $("access").replaceChildren(access.length ? table(["When", "Organisation", "Fields", "Purpose", "Outcome"],
    access.slice().reverse().map((a) => [when(a.time), a.reader_org, a.fields.join(", "), a.purpose,
      el("span", { class: a.code === "valid" ? "" : "code-refused" }, a.code === "valid" ? "read" : `refused (${a.code})`)]))
    : el("p", { class: "muted" }, "Nobody has read your data."));
  const exp = await call("GET", `${path}/export`, { key });
  renderTickets(exp.tickets);
  const bal = Object.entries(exp.loyalty.balances);
  $("loyalty").replaceChildren(bal.length ? table(["Program", "Balance"], bal) : el("p", { class: "muted" }, "No points."));
  $("receipts").replaceChildren(exp.purge_receipts.length ? table(["Node", "What", "When", "Height"],
    exp.purge_receipts.map((r) => [r.node, r.kind, when(r.timestamp), r.height])) : el("p", { class: "muted" }, "None."));
}

function renderTickets(tickets) {
  if (!tickets.length) { $("tickets").replaceChildren(el("p", { class: "muted" }, "No tickets.")); return; }
  $("tickets").replaceChildren(...tickets.map((t) => el("div", {},
    el("h3", {}, `${t.ticket_id} — ${t.status}`, t.escalated.length ? el("span", { class: "escalated" }, " (escalated)") : ""),
    table(["When", "Status", "Text"], t.timeline.map((s) => [when(s.ts), s.status === "escalated" ? `escalated (${s.missed})` : s.status, s.text || ""])),
    t.status === "resolved" ? [
      el("button", { type: "button", onclick: () => ticket(t.ticket_id, "closed") }, "Accept the resolution"),
      el("button", { type: "button", class: "secondary", onclick: () => ticket(t.ticket_id, "open") }, "Reopen")] : "")));
}

async function act(what, fn) {
  try {
    say(what + "…");
    const out = await fn();
    if (out && out.code && out.code !== "valid") throw new Error(`refused on the chain: ${out.code}`);
    await refresh();
    say(what + ": done" + (out && out.height ? ` (block ${out.height})` : ""));
  } catch (e) {
    say(e.message, true);
  }
}

const revoke = (org) => act(`Revoking the consent for ${org}`,
  () => submit(key, "consent.revoke", "", { customer_id: cid, grantee_org: org }));

const ticket = (tid, status) => act(status === "closed" ? "Accepting the resolution" : "Reopening the ticket",
  () => submit(key, "ticket.update", "", { ticket_id: tid, status },
    status === "closed" ? "Accepted by the customer" : "Reopened by the customer", "note_hash"));

function grant() {
  const scope = $("g-scope").value.split(",").map((s) => s.trim()).filter(Boolean);
  const until = $("g-expiry").value ? new Date($("g-expiry").value).getTime() : null;
  return act(`Giving consent to ${$("g-org").value}`, () => submit(key, "consent.grant", "", {
    customer_id: cid, grantee_org: $("g-org").value, scope, purpose: $("g-purpose").value, expires_ts: until }));
}

async function download() {
  try {
    const exp = await call("GET", `/v1/customers/${encodeURIComponent(cid)}/export`, { key });
    const a = el("a", { href: URL.createObjectURL(new Blob([JSON.stringify(exp, null, 2)], { type: "application/json" })),
      download: `${cid}-export.json` });
    document.body.append(a);
    a.click();
    a.remove();
    say("Your data was downloaded.");
  } catch (e) {
    say(e.message, true);
  }
}

function erase() {
  if ($("erase-confirm").value.trim() !== cid) { say("Type your customer id exactly to confirm.", true); return; }
  $("confirm-erase").hidden = true;
  return act("Erasing your personal data", () => submit(key, "customer.erase", "", { customer_id: cid }));
}

async function init() {
  $("insecure").hidden = secureContext();
  const orgs = await call("GET", "/v1/orgs");
  $("g-org").replaceChildren(...orgs.orgs.map((o) => el("option", { value: o.org }, `${o.contact.name || o.org} (${o.org})`)));
  $("g-purpose").replaceChildren(...PURPOSES.map((p) => el("option", { value: p }, p)));
  $("open").addEventListener("click", open);
  $("grant").addEventListener("click", grant);
  $("download").addEventListener("click", download);
  $("erase").addEventListener("click", () => { $("confirm-erase").hidden = false; $("erase-confirm").focus(); });
  $("erase-cancel").addEventListener("click", () => { $("confirm-erase").hidden = true; });
  $("erase-now").addEventListener("click", erase);
}

init().catch((e) => say(e.message, true));
