// Transactions and signed requests in the browser (SPEC §2, §4): canonical msgpack,
// Ed25519 through WebCrypto, salted hashes of private data. Keys never leave the page.
"use strict";

const enc = new TextEncoder();

export function hex(bytes) {
  return Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");
}

export function fromHex(s) {
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.substr(2 * i, 2), 16);
  return out;
}

function concat(parts) {
  const n = parts.reduce((a, p) => a + p.length, 0);
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

// -- canonical msgpack: maps sorted by their keys' UTF-8 bytes, integers in their shortest form
function head(small, tag16, tag32, n, fixBase) {
  if (n < small) return Uint8Array.of(fixBase | n);
  if (n < 0x10000) return Uint8Array.of(tag16, n >> 8, n & 0xff);
  return Uint8Array.of(tag32, (n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);
}

function packInt(v) {
  const b = BigInt(v);
  const view = (tag, bytes, write) => {
    const buf = new DataView(new ArrayBuffer(1 + bytes));
    buf.setUint8(0, tag);
    write(buf);
    return new Uint8Array(buf.buffer);
  };
  if (b >= 0n) {
    if (b < 128n) return Uint8Array.of(Number(b));
    if (b < 256n) return Uint8Array.of(0xcc, Number(b));
    if (b < 65536n) return view(0xcd, 2, (d) => d.setUint16(1, Number(b)));
    if (b < 4294967296n) return view(0xce, 4, (d) => d.setUint32(1, Number(b)));
    return view(0xcf, 8, (d) => d.setBigUint64(1, b));
  }
  if (b >= -32n) return Uint8Array.of(0x100 + Number(b));
  if (b >= -128n) return view(0xd0, 1, (d) => d.setInt8(1, Number(b)));
  if (b >= -32768n) return view(0xd1, 2, (d) => d.setInt16(1, Number(b)));
  if (b >= -2147483648n) return view(0xd2, 4, (d) => d.setInt32(1, Number(b)));
  return view(0xd3, 8, (d) => d.setBigInt64(1, b));
}

function compareBytes(a, b) {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

export function pack(v) {
  if (v === null || v === undefined) return Uint8Array.of(0xc0);
  if (v === false) return Uint8Array.of(0xc2);
  if (v === true) return Uint8Array.of(0xc3);
  if (typeof v === "number") {
    if (!Number.isInteger(v)) throw new Error("no floats in a transaction");
    return packInt(v);
  }
  if (typeof v === "bigint") return packInt(v);
  if (typeof v === "string") {
    const b = enc.encode(v);
    let h;
    if (b.length < 32) h = Uint8Array.of(0xa0 | b.length);
    else if (b.length < 256) h = Uint8Array.of(0xd9, b.length);
    else h = head(0, 0xda, 0xdb, b.length, 0);
    return concat([h, b]);
  }
  if (Array.isArray(v)) return concat([head(16, 0xdc, 0xdd, v.length, 0x90), ...v.map(pack)]);
  const keys = Object.keys(v).map((k) => [enc.encode(k), k]).sort((a, b) => compareBytes(a[0], b[0]));
  const parts = [head(16, 0xde, 0xdf, keys.length, 0x80)];
  for (const [, k] of keys) parts.push(pack(k), pack(v[k]));
  return concat(parts);
}

// -- keys -----------------------------------------------------------------------------------
function b64decode(s) {
  return Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
}

function b64urlToHex(s) {
  return hex(b64decode(s.replace(/-/g, "+").replace(/_/g, "/") + "==".slice(0, (4 - (s.length % 4)) % 4)));
}

export function secureContext() {
  return window.isSecureContext && !!(window.crypto && window.crypto.subtle);
}

// A PEM (PKCS#8) Ed25519 private key, as `crmledger keygen` writes it: {key, publicHex}
export async function loadKey(pem) {
  if (!secureContext()) throw new Error("this page is not in a secure context (https, or localhost): the browser offers no signing here");
  const m = /-----BEGIN PRIVATE KEY-----([\s\S]+?)-----END PRIVATE KEY-----/.exec(pem);
  if (!m) throw new Error("not a PEM private key (-----BEGIN PRIVATE KEY-----)");
  const der = b64decode(m[1].replace(/\s+/g, ""));
  let key;
  try {
    key = await crypto.subtle.importKey("pkcs8", der, { name: "Ed25519" }, true, ["sign"]);
  } catch (e) {
    throw new Error("not an Ed25519 key this browser can use: " + e.message);
  }
  const jwk = await crypto.subtle.exportKey("jwk", key);
  return { key, publicHex: b64urlToHex(jwk.x) };
}

async function sign(k, bytes) {
  return hex(await crypto.subtle.sign({ name: "Ed25519" }, k.key, bytes));
}

// -- transactions and requests -----------------------------------------------------------------
function randomHex(n) {
  return hex(crypto.getRandomValues(new Uint8Array(n)));
}

export async function privateHash(saltHex, value) {
  return hex(await crypto.subtle.digest("SHA-256", concat([fromHex(saltHex), pack(value)])));
}

// A signed envelope; `privateValue` (a profile map or a text) is salted, hashed into
// `hashField` of the payload and sent beside the envelope.
export async function envelope(k, type, org, payload, privateValue, hashField) {
  payload = { ...payload };
  let priv = null;
  if (privateValue !== undefined && privateValue !== null) {
    const salt = randomHex(16);
    payload[hashField] = await privateHash(salt, privateValue);
    priv = typeof privateValue === "string" ? { salt, text: privateValue } : { salt, profile: privateValue };
  }
  const body = { type, signer: k.publicHex, org, nonce: randomHex(12), ts: Date.now(), payload };
  const signing = concat([enc.encode("crmledger/tx/v1\n"), pack(body)]);
  const env = { body, sig: await sign(k, signing) };
  if (priv) env.private = priv;
  return env;
}

export async function requestHeaders(k, method, pathWithQuery) {
  const ts = String(Date.now());
  const bytes = enc.encode(`crmledger/req/v1\n${method}\n${pathWithQuery}\n${ts}`);
  return { "X-Signer": k.publicHex, "X-Ts": ts, "X-Sig": await sign(k, bytes) };
}
