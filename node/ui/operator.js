// The operator view: every node's role, term, height, lag and links, the leader, the latest
// blocks and the committed rate, live (the event stream, and each node's /v1/status).
"use strict";
import { call, el, say, table, when } from "./api.js";

const $ = (id) => document.getElementById(id);
const blocks = [];            // the latest block events, newest first
const WINDOW_MS = 5 * 60 * 1000, BUCKET_MS = 10 * 1000;
let nodes = [];

async function statuses() {
  const got = await Promise.all(nodes.map(async (n) => {
    try {
      const r = await fetch(`${location.protocol}//${n.api_addr}/v1/status`, { cache: "no-store" });
      return { ...n, status: await r.json() };
    } catch (e) {
      return { ...n, status: null };
    }
  }));
  const top = Math.max(0, ...got.filter((g) => g.status).map((g) => g.status.height));
  const leaders = got.filter((g) => g.status && g.status.role === "leader").map((g) => g.node_id);
  $("leader").textContent = leaders.length ? leaders.join(", ") : "none (an election is under way)";
  $("nodes").replaceChildren(table(["Node", "Org", "Role", "Term", "Height", "Lag", "Links"], got.map((g) => {
    const s = g.status;
    if (!s) return [g.node_id, g.org, el("span", { class: "code-refused" }, "unreachable"), "", "", "", ""];
    const up = s.peers.filter((p) => p.connected).length;
    return [g.node_id, g.org, el("span", { "data-role": s.role, "data-node": g.node_id }, s.role), s.term, s.height,
      top - s.height, `${up}/${s.peers.length} up`];
  })));
}

function chart() {
  const now = Date.now();
  const buckets = new Array(WINDOW_MS / BUCKET_MS).fill(0);
  for (const b of blocks) {
    const age = now - b.timestamp;
    if (age >= 0 && age < WINDOW_MS) buckets[buckets.length - 1 - Math.floor(age / BUCKET_MS)] += b.txs.length;
  }
  const rates = buckets.map((n) => n / (BUCKET_MS / 1000));
  const max = Math.max(1, ...rates);
  const w = 100 / rates.length;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 100 40");
  svg.setAttribute("preserveAspectRatio", "none");
  rates.forEach((r, i) => {
    const h = (r / max) * 38;
    const rect = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    Object.entries({ x: i * w + 0.1, y: 40 - h, width: w - 0.2, height: h, fill: "#0b5cad" })
      .forEach(([k, v]) => rect.setAttribute(k, v));
    const t = document.createElementNS("http://www.w3.org/2000/svg", "title");
    t.textContent = `${r.toFixed(1)} tx/s`;
    rect.append(t);
    svg.append(rect);
  });
  $("chart").replaceChildren(svg, el("p", { class: "muted" }, `peak ${max.toFixed(1)} tx/s`));
}

function renderBlocks() {
  $("blocks").replaceChildren(table(["Height", "Time", "Transactions", ""], blocks.slice(0, 10).map((b) =>
    [b.height, when(b.timestamp), b.txs.length, el("button", { type: "button", class: "secondary",
      "aria-label": `Show block ${b.height}`, onclick: () => show(b.height) }, "Show")])));
}

async function show(h) {
  try {
    const b = await call("GET", `/v1/blocks/${h}?full=1`);
    $("block-detail").replaceChildren(el("h3", {}, `Block ${h} by ${b.proposer}, term ${b.term}`),
      table(["Transaction", "Type", "Result"], b.txs.map((id, i) => [id.slice(0, 16) + "…", b.envelopes[i].body.type, b.results[i]])));
  } catch (e) {
    say(e.message, true);
  }
}

async function committedTotal() {
  const text = await (await fetch("/metrics", { cache: "no-store" })).text();
  const total = text.split("\n").filter((l) => l.startsWith("crmledger_tx_committed_total"))
    .reduce((a, l) => a + Number(l.split(" ").pop()), 0);
  $("committed").textContent = `${total.toLocaleString()} transactions committed since this node started`;
}

async function init() {
  nodes = (await call("GET", "/v1/nodes")).nodes;
  const me = await call("GET", "/v1/status");
  const es = new EventSource(`/v1/events?from_height=${Math.max(1, me.height - 200)}`);
  es.addEventListener("block", (ev) => {
    const b = JSON.parse(ev.data);
    if (blocks.length && b.height <= blocks[0].height) return;
    blocks.unshift(b);
    blocks.length = Math.min(blocks.length, 2000);
    renderBlocks();
    chart();
  });
  es.onerror = () => say("The event stream dropped; reconnecting…", true);
  es.onopen = () => say("Live");
  const tick = async () => {
    try { await statuses(); chart(); await committedTotal(); } catch (e) { say(e.message, true); }
  };
  await tick();
  setInterval(tick, 1000);
}

init().catch((e) => say(e.message, true));
