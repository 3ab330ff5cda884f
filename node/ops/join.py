"""A firm joining a running consortium.

`crmledger join --config CFG --from HOST:PORT` starts a new firm's node once the orgs
have voted it in: it reads the consortium in force from a running node, checks that it
names this node with this node's key, writes it beside the node's (empty) data, and runs
the node. The leader brings it into the Raft group as a learner; it catches up by
snapshot and block transfer and is promoted to voter once caught up. Later starts are
plain `crmledger node` starts.

`crmledger add-firm --cluster-dir DIR` is the local-cluster shortcut behind
`scripts/run_cluster.sh add`: it makes the next firm's keys, certificate and node
config in DIR, proposes the firm with org1's key and votes with the other orgs' keys
(a local cluster holds them all) until the proposal takes effect.
"""
from __future__ import annotations

import json
import secrets
import sys
import time
from pathlib import Path

from crmledger.ledger.consortium import from_state
from crmledger.ledger.genesis import GenesisError
from crmledger.ledger.keys import SigningKey
from crmledger.ledger.tx import sign_tx
from crmledger.node.config import ConfigError, load_config, load_signing_key, render_config

from .client_cmds import get_json, send_request, tx_request
from .cluster_init import _write
from .org_cmds import DAY_MS, org_file_proposal
from .tlscerts import fingerprint_pem, make_certificate


def fetch_consortium(sources: list[str]) -> dict:
    """The consortium in force, from the first of `sources` (host:port) that answers."""
    errors = []
    for src in sources:
        try:
            doc = get_json(f"http://{src}/v1/consortium", timeout=5)
            return {k: doc[k] for k in ("version", "height", "policy", "orgs", "nodes")}
        except (OSError, ValueError, KeyError) as e:
            errors.append(f"{src}: {e}")
    raise OSError("no node answered: " + "; ".join(errors))


def join(config: str, sources: list[str]) -> int:
    from crmledger.node.runtime import JOIN_FILE
    try:
        cfg = load_config(config)
        key = load_signing_key(cfg.node_key)
        doc = fetch_consortium(sources)
        cs = from_state(doc)
    except (ConfigError, ValueError, OSError, GenesisError) as e:
        print(f"join: {e}", file=sys.stderr)
        return 2
    me = cs.nodes.get(cfg.node_id)
    if me is None:
        print(f"join: the consortium (version {cs.version}) has no node {cfg.node_id} yet: the orgs must vote "
              f"its org in first (crmledger org propose-add, crmledger org vote)", file=sys.stderr)
        return 2
    if me.pubkey != key.public_hex:
        print(f"join: the consortium names another key for {cfg.node_id} than {cfg.node_key}", file=sys.stderr)
        return 2
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    _write(cfg.data_dir / JOIN_FILE, json.dumps(doc, sort_keys=True).encode())
    print(f"joining the consortium (version {cs.version}) as {cfg.node_id}", file=sys.stderr)
    from crmledger.node.main import run
    return run(config)


# -- the local-cluster shortcut ------------------------------------------------------------
def _next_index(d: Path) -> int:
    return max(int(p.stem[4:]) for p in d.glob("node*.toml") if p.stem[4:].isdigit()) + 1


def prepare_firm(d: Path) -> tuple[int, Path]:
    """Keys, certificate, node config and org file of the next firm of the local cluster
    in `d`: (its number K, its org file)."""
    first = load_config(d / "node1.toml")
    k = _next_index(d)
    host, _, api_port = first.api_listen.rpartition(":")
    peer_host, _, peer_port = first.peer_listen.rpartition(":")
    api = f"{host}:{int(api_port) - 1 + k}"
    peer = f"{peer_host}:{int(peer_port) - 1 + k}"
    org_key, node_key = SigningKey.generate(), SigningKey.generate()
    _write(d / "keys" / f"org{k}.pem", org_key.to_pem(), private=True)
    _write(d / "keys" / f"node{k}.pem", node_key.to_pem(), private=True)
    cert = make_certificate(node_key._key, f"node{k}", [peer_host])
    _write(d / "keys" / f"node{k}.crt", cert)
    _write(d / f"node{k}.toml", render_config(
        f"node{k}", data_dir=f"node{k}", genesis="genesis.json", node_key=f"keys/node{k}.pem",
        tls_cert=f"keys/node{k}.crt", api_listen=api, peer_listen=peer).encode())
    org_file = d / f"org{k}.json"
    _write(org_file, json.dumps({
        "org": f"org{k}", "admins": [org_key.public_hex],
        "contact": {"name": f"Org {k}", "email": f"care@org{k}.example", "url": f"https://org{k}.example"},
        "node": {"node_id": f"node{k}", "raft_id": k, "pubkey": node_key.public_hex, "peer_addr": peer,
                 "api_addr": api, "tls_cert": cert.decode(), "tls_cert_sha256": fingerprint_pem(cert)}},
        indent=2).encode())
    return k, org_file


def _signed(node: str, key: SigningKey, type_: str, org: str, payload: dict) -> dict:
    env = sign_tx(key, type_, org, secrets.token_hex(8), int(time.time() * 1000), payload)
    rc, answer = send_request("add-firm", node, tx_request(node, env), quiet=True)
    if rc or not answer or answer.get("code") != "valid":
        raise RuntimeError(f"{type_} by {org} was refused: {answer}")
    return answer


def add_firm(cluster_dir: str, node: str | None = None) -> int:
    d = Path(cluster_dir)
    try:
        k, org_file = prepare_firm(d)
        via, members = _reachable(d, node)
        keys = {int(p.stem[3:]): SigningKey.from_pem(p.read_bytes())
                for p in (d / "keys").glob("org*.pem") if p.stem[3:].isdigit() and int(p.stem[3:]) != k}
        proposal = org_file_proposal(str(org_file))
        voters = sorted(i for i in keys if f"org{i}" in members["orgs"])
        pid = _signed(via, keys[voters[0]], "consortium.propose", f"org{voters[0]}",
                      {"proposal": proposal, "deadline_ts": int(time.time() * 1000) + DAY_MS})["tx_id"]
        print(f"proposed org{k} with node{k}: proposal {pid}", file=sys.stderr)
        for i in voters:
            _signed(via, keys[i], "consortium.vote", f"org{i}", {"proposal_id": pid})
            print(f"  org{i} voted", file=sys.stderr)
            if f"node{k}" in fetch_consortium([via])["nodes"]:
                break
        else:
            raise RuntimeError("the votes of every org did not carry the proposal")
    except (ConfigError, ValueError, OSError, RuntimeError) as e:
        print(f"add-firm: {e}", file=sys.stderr)
        return 2
    print(f"org{k} and node{k} are voted in; start it with: crmledger join --from {via} --config {d / f'node{k}.toml'}",
          file=sys.stderr)
    print(k)
    return 0


def _reachable(d: Path, node: str | None) -> tuple[str, dict]:
    """(API address, consortium) of the first node of the local cluster that answers:
    `node`, else any of the node configs'."""
    candidates = [node] if node else [load_config(p).api_listen for p in sorted(d.glob("node*.toml"))]
    for c in candidates:
        try:
            return c, fetch_consortium([c])
        except OSError:
            continue
    raise OSError(f"no node of the cluster in {d} answers")
