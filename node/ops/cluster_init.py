"""`crmledger init --nodes N --out DIR`: everything a local consortium of N firms needs —
one org and one node each — laid out as SPEC §5 describes (`crmledger init --from
configs --out DIR` does the same for a consortium described in a folder such as
`configs/`, filling in its keys):

    DIR/genesis.json          orgs with their admin keys, nodes with keys, addresses, TLS pins
    DIR/keys/orgK.pem         org K's admin key (PEM, PKCS#8)
    DIR/keys/nodeK.pem        node K's key (signs blocks; its TLS identity)
    DIR/keys/nodeK.crt        node K's TLS certificate (self-signed, pinned in the genesis)
    DIR/nodeK.toml            node K's configuration; its data goes to DIR/nodeK/
"""
from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from crmledger.node.config import render_config
from crmledger.ledger.genesis import DEFAULT_SERVICE_LEVELS, genesis_from_dict
from crmledger.ledger.keys import SigningKey
from crmledger.node.ops.tlscerts import fingerprint_pem, make_api_identity, make_certificate


def _write(path: Path, data: bytes, private: bool = False) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tmp.replace(path)


def init_cluster(out: str | Path, nodes: int, *, base_port: int = 8000, peer_base_port: int | None = None,
                 host: str = "127.0.0.1", hosts: list[str] | None = None, chain_id: str | None = None,
                 tables: dict[str, dict[str, int]] | None = None,
                 service_levels: dict[str, int] | None = None, node_orgs: list[int] | None = None,
                 https: bool = False) -> Path:
    """`node_orgs` names the org of each node (org K for node K when not given); with
    `https`, each node serves its API and pages over HTTPS with a certificate made here
    (DIR/keys/nodeK-api.crt and .key). `hosts` gives each node an address of its own (one
    host each, as firms deploy); otherwise all listen on `host`."""
    if not 1 <= nodes <= 64:
        raise ValueError("--nodes must be between 1 and 64")
    orgs = node_orgs or list(range(1, nodes + 1))
    if len(orgs) != nodes or not all(type(o) is int and o > 0 for o in orgs):
        raise ValueError("node_orgs names a positive org number for each node")
    peer_base = peer_base_port if peer_base_port is not None else base_port + 100
    if hosts is not None and len(hosts) != nodes:
        raise ValueError("hosts names an address for each node")
    at = hosts or [host] * nodes
    for port in (base_port + nodes, peer_base + nodes):
        if not 0 < port < 65536:
            raise ValueError(f"port {port} is out of range")
    template = {
        "chain_id": chain_id or f"crmledger-{secrets.token_hex(4)}",
        "orgs": {f"org{i}": {"contact": {"name": f"Org {i}", "email": f"care@org{i}.example",
                                         "url": f"https://org{i}.example", "phone": f"+1 555 010 {i:04d}",
                                         "address": f"{i} Consortium Way, Springfield"},
                             "service_levels": dict(service_levels or DEFAULT_SERVICE_LEVELS)}
                 for i in sorted(set(orgs))},
        "nodes": {f"node{i}": {"raft_id": i, "org": f"org{orgs[i - 1]}", "peer_addr": f"{at[i - 1]}:{peer_base + i}",
                               "api_addr": f"{at[i - 1]}:{base_port + i}"} for i in range(1, nodes + 1)}}
    d = _fill(template, out)
    for i in range(1, nodes + 1):
        api_tls = None
        if https:
            cert, key = make_api_identity(f"node{i}", [at[i - 1], "localhost"])
            _write(d / "keys" / f"node{i}-api.crt", cert)
            _write(d / "keys" / f"node{i}-api.key", key, private=True)
            api_tls = (f"keys/node{i}-api.crt", f"keys/node{i}-api.key")
        _write(d / f"node{i}.toml", render_config(
            f"node{i}", data_dir=f"node{i}", genesis="genesis.json", node_key=f"keys/node{i}.pem",
            tls_cert=f"keys/node{i}.crt", api_listen=f"{at[i - 1]}:{base_port + i}",
            peer_listen=f"{at[i - 1]}:{peer_base + i}", tables=tables, api_tls=api_tls).encode())
    return d


def init_from(template_dir: str | Path, out: str | Path) -> Path:
    """A consortium laid out as in `template_dir` (its genesis.json without keys, and its
    node configs, copied as they are): keys and certificates are made and the genesis is
    completed with them."""
    src = Path(template_dir)
    try:
        template = json.loads((src / "genesis.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{src / 'genesis.json'}: {e}") from None
    if type(template) is not dict or type(template.get("orgs")) is not dict \
            or type(template.get("nodes")) is not dict:
        raise ValueError(f"{src / 'genesis.json'}: a genesis with 'orgs' and 'nodes' maps")
    d = _fill(template, out)
    for conf in sorted(src.glob("*.toml")):
        _write(d / conf.name, conf.read_bytes())
    return d


def _fill(template: dict, out: str | Path) -> Path:
    """Write DIR/genesis.json from `template`, with a new admin key for every org and a
    new key and TLS certificate for every node (DIR/keys/ORG.pem, DIR/keys/NODE.pem and
    .crt)."""
    d = Path(out)
    if (d / "genesis.json").exists():
        raise FileExistsError(f"{d / 'genesis.json'} exists already: pick another folder")
    (d / "keys").mkdir(parents=True, exist_ok=True)
    genesis = json.loads(json.dumps(template))
    for name, org in genesis["orgs"].items():
        key = SigningKey.generate()
        _write(d / "keys" / f"{name}.pem", key.to_pem(), private=True)
        org["admins"] = [key.public_hex]
    for name, n in genesis["nodes"].items():
        key = SigningKey.generate()
        _write(d / "keys" / f"{name}.pem", key.to_pem(), private=True)
        host = str(n.get("peer_addr", "127.0.0.1:0")).rpartition(":")[0]
        cert = make_certificate(key._key, name, [host])
        _write(d / "keys" / f"{name}.crt", cert)
        n.update(pubkey=key.public_hex, tls_cert_sha256=fingerprint_pem(cert), tls_cert=cert.decode())
    genesis_from_dict(genesis)  # the same checks a node makes when it starts
    _write(d / "genesis.json", (json.dumps(genesis, indent=2, sort_keys=True) + "\n").encode())
    return d
