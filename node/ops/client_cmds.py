"""Client commands: `crmledger status` (a table of the cluster's nodes), `crmledger keygen`,
`crmledger submit` (sign a transaction with a key file and send it, with its private
part) and `crmledger read` (a signed GET)."""
from __future__ import annotations

import json
import secrets
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from crmledger.ledger.keys import SigningKey
from crmledger.node.config import load_signing_key
from crmledger.ledger.requests import sign_request
from crmledger.ledger.tx import HASHED, TX_TYPES, private_hash, sign_tx
from crmledger.storage.datadir import genesis_of


def get_json(url: str, timeout: float = 2.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def _nodes_in_force(cluster_dir: str) -> list[tuple[str, str]]:
    """(node id, API address) of the consortium's nodes, as the first node of the genesis
    that answers has them (the genesis's own, when none does)."""
    g = genesis_of(cluster_dir)
    for n in sorted(g.nodes.values(), key=lambda n: n.raft_id):
        try:
            return [(x["node_id"], x["api_addr"]) for x in get_json(f"http://{n.api_addr}/v1/nodes")["nodes"]]
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return [(nid, n.api_addr) for nid, n in sorted(g.nodes.items(), key=lambda kv: kv[1].raft_id)]


def cluster_status(cluster_dir: str) -> list[dict]:
    rows = []
    for nid, api in _nodes_in_force(cluster_dir):
        try:
            st = get_json(f"http://{api}/v1/status")
            rows.append({"node": nid, "api": api, **st})
        except (OSError, ValueError):
            rows.append({"node": nid, "api": api, "role": "down"})
    top = max((r.get("height", 0) for r in rows), default=0)
    for r in rows:
        r["lag"] = top - r["height"] if "height" in r else None
    return rows


def print_status(cluster_dir: str) -> int:
    try:
        rows = cluster_status(cluster_dir)
    except (OSError, ValueError) as e:
        print(f"status: {e}", file=sys.stderr)
        return 2
    print(f"{'node':<8} {'api':<21} {'role':<10} {'term':>5} {'height':>7} {'lag':>4}  head")
    for r in rows:
        if r["role"] == "down":
            print(f"{r['node']:<8} {r['api']:<21} {'down':<10}")
            continue
        print(f"{r['node']:<8} {r['api']:<21} {r['role']:<10} {r['term']:>5} {r['height']:>7} {r['lag']:>4}  "
              f"{r['head_hash'][:16]}")
    return 0 if any(r["role"] == "leader" for r in rows) else 1


def keygen(out: str) -> int:
    p = Path(out)
    if p.exists():
        print(f"keygen: {p} exists", file=sys.stderr)
        return 2
    k = SigningKey.generate()
    p.write_bytes(k.to_pem())
    p.chmod(0o600)
    print(k.public_hex)
    return 0


def submit(node: str, key_file: str, type_: str, org: str, payload: str, wait: bool, print_only: bool = False,
           private: str | None = None) -> int:
    """Sign and send a transaction; with `private` (a profile as a JSON map, or a text),
    a fresh salt is drawn, the payload's hash field filled in, and the private part sent
    beside the envelope."""
    try:
        key = load_signing_key(key_file)
        body = json.loads(payload)
        value = None if private is None else (json.loads(private) if type_.startswith("customer.") else private)
    except (OSError, ValueError) as e:
        print(f"submit: {e}", file=sys.stderr)
        return 2
    if type_ not in TX_TYPES:
        print(f"submit: type must be one of {', '.join(sorted(TX_TYPES))}", file=sys.stderr)
        return 2
    part = None
    if value is not None:
        if type_ not in HASHED or type(body) is not dict:
            print(f"submit: a {type_} transaction carries no private part", file=sys.stderr)
            return 2
        salt = secrets.token_bytes(16)
        body[HASHED[type_][1]] = private_hash(salt, value)
        part = {"salt": salt.hex(), "profile" if HASHED[type_][0] == "profile" else "text": value}
    env = sign_tx(key, type_, org, secrets.token_hex(8), int(time.time() * 1000), body)
    if part is not None:
        env["private"] = part
    if print_only:
        print(json.dumps(env))
        return 0
    return send_request("submit", node, tx_request(node, env, wait))[0]


def tx_request(node: str, env: dict, wait: bool = True) -> urllib.request.Request:
    url = f"http://{node}/v1/tx" + ("?wait=commit" if wait else "")
    return urllib.request.Request(url, data=json.dumps(env).encode(), headers={"Content-Type": "application/json"})


def send_request(cmd: str, node: str, req: urllib.request.Request, quiet: bool = False) -> tuple[int, dict | None]:
    """Send `req`, print the answer (an error's on stderr) unless `quiet`; the exit code
    and the answer (when it is JSON)."""
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            text, rc = r.read().decode(), 0
    except urllib.error.HTTPError as e:
        text, rc = e.read().decode(), 1
    except OSError as e:
        print(f"{cmd}: cannot reach {node}: {e}", file=sys.stderr)
        return 2, None
    if not quiet:
        print(text, file=sys.stderr if rc else sys.stdout)
    try:
        return rc, json.loads(text)
    except ValueError:
        return rc, None


def read(node: str, key_file: str, path: str) -> int:
    """A GET signed with a key file (SPEC §4), its answer printed."""
    try:
        key = load_signing_key(key_file)
    except ValueError as e:
        print(f"read: {e}", file=sys.stderr)
        return 2
    if not path.startswith("/"):
        print("read: the path starts with /, e.g. /v1/customers/alice/export", file=sys.stderr)
        return 2
    headers = sign_request(key, "GET", path, int(time.time() * 1000))
    return send_request("read", node, urllib.request.Request(f"http://{node}{path}", headers=headers))[0]
