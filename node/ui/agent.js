// The agent console: a partner firm's staff, signing with the firm's admin or agent key.
"use strict";
import { loadKey, secureContext } from "./crypto.js";
import { PURPOSES, call, el, readKeyFile, say, submit, table, when } from "./api.js";

const $ = (id) => document.getElementById(id);
let key = null;
let org = null;

async function signin() {
  try {
    key = await loadKey(await readKeyFile($("keyfile"), $("keytext")));
    org = $("org").value;
    await tickets();
    $("console").hidden = false;
    say(`Signed in for ${org}`);
  } catch (e) {
    say(e.message, true);
  }
}

async function tickets() {
  const out = await call("GET", `/v1/orgs/${encodeURIComponent(org)}/tickets`, { key });
  $("tickets").replaceChildren(out.tickets.length ? table(["Ticket", "Customer", "Status", "Opened", "Escalated"],
    out.tickets.map((t) => [t.ticket_id, t.customer_id, t.status, when(t.timeline[0].ts),
      t.escalated.length ? el("span", { class: "escalated" }, t.escalated.join(", ")) : ""]))
    : el("p", { class: "muted" }, "No tickets."));
}

async function act(what, fn) {
  try {
    say(what + "…");
    const out = await fn();
    if (out.code !== "valid") throw new Error(`refused on the chain: ${out.code}`);
    await tickets();
    say(`${what}: done (block ${out.height})`);
  } catch (e) {
    say(e.message, true);
  }
}

async function read() {
  const cid = $("r-cid").value.trim();
  const fields = $("r-fields").value.split(",").map((s) => s.trim()).filter(Boolean);
  let path = `/v1/customers/${encodeURIComponent(cid)}?purpose=${$("r-purpose").value}`;
  if (fields.length) path += `&fields=${fields.join(",")}`;
  try {
    say("Reading (filing the read on the chain)…");
    const out = await call("GET", path, { key });
    $("read-out").replaceChildren(table(["Field", "Value"], Object.entries(out.profile)),
      el("p", { class: "muted", id: "access-entry" }, `Access entry ${out.access_tx} in block ${out.height}`));
    say(`Read ${cid}'s profile: the read is on the chain`);
  } catch (e) {
    $("read-out").replaceChildren(e.body && e.body.access_tx
      ? el("p", { class: "muted" }, `The refused read is on the chain: entry ${e.body.access_tx}`) : "");
    say(e.message, true);
  }
}

async function init() {
  $("insecure").hidden = secureContext();
  const orgs = await call("GET", "/v1/orgs");
  $("org").replaceChildren(...orgs.orgs.map((o) => el("option", { value: o.org }, `${o.contact.name || o.org} (${o.org})`)));
  $("r-purpose").replaceChildren(...PURPOSES.map((p) => el("option", { value: p }, p)));
  $("signin").addEventListener("click", signin);
  $("read").addEventListener("click", read);
  $("open-ticket").addEventListener("click", () => act("Opening the ticket", () => submit(key, "ticket.open", org, {
    ticket_id: $("t-id").value.trim(), customer_id: $("t-cid").value.trim(), channel: $("t-channel").value },
    $("t-subject").value, "subject_hash")));
  $("update-ticket").addEventListener("click", () => act("Updating the ticket", () => submit(key, "ticket.update", org, {
    ticket_id: $("u-id").value.trim(), status: $("u-status").value }, $("u-note").value, "note_hash")));
  $("issue").addEventListener("click", () => act("Issuing points", () => submit(key, "loyalty.issue", org, {
    customer_id: $("l-cid").value.trim(), program: $("l-program").value.trim(), amount: Number($("l-amount").value) })));
}

init().catch((e) => say(e.message, true));
