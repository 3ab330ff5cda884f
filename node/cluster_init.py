"""`crmledger init --nodes N --out DIR`: everything a local consortium of N firms needs —
one org and one node each — laid out as SPEC §5 describes:

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

from node.config import render_config
from node.ledger.genesis import genesis_from_dict
from node.ledger.keys import SigningKey
from node.tlscerts import fingerprint_pem, make_certificate


def _write(path: Path, data: bytes, private: bool = False) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tmp.replace(path)


def init_cluster(out: str | Path, nodes: int, *, base_port: int = 8000, peer_base_port: int | None = None,
                 host: str = "127.0.0.1", chain_id: str | None = None,
                 tables: dict[str, dict[str, int]] | None = None) -> Path:
    if not 1 <= nodes <= 64:
        raise ValueError("--nodes must be between 1 and 64")
    peer_base = peer_base_port if peer_base_port is not None else base_port + 100
    for port in (base_port + nodes, peer_base + nodes):
        if not 0 < port < 65536:
            raise ValueError(f"port {port} is out of range")
    d = Path(out)
    if (d / "genesis.json").exists():
        raise FileExistsError(f"{d / 'genesis.json'} exists already: pick another folder")
    (d / "keys").mkdir(parents=True, exist_ok=True)
    orgs, node_entries = {}, {}
    for i in range(1, nodes + 1):
        org_key, node_key = SigningKey.generate(), SigningKey.generate()
        _write(d / "keys" / f"org{i}.pem", org_key.to_pem(), private=True)
        _write(d / "keys" / f"node{i}.pem", node_key.to_pem(), private=True)
        cert = make_certificate(node_key._key, f"node{i}", [host])
        _write(d / "keys" / f"node{i}.crt", cert)
        orgs[f"org{i}"] = {"admins": [org_key.public_hex]}
        node_entries[f"node{i}"] = {
            "raft_id": i, "org": f"org{i}", "pubkey": node_key.public_hex,
            "peer_addr": f"{host}:{peer_base + i}", "api_addr": f"{host}:{base_port + i}",
            "tls_cert_sha256": fingerprint_pem(cert), "tls_cert": cert.decode()}
    genesis = {"chain_id": chain_id or f"crmledger-{secrets.token_hex(4)}", "orgs": orgs, "nodes": node_entries}
    genesis_from_dict(genesis)  # the same checks a node makes when it starts
    _write(d / "genesis.json", (json.dumps(genesis, indent=2, sort_keys=True) + "\n").encode())
    for i in range(1, nodes + 1):
        _write(d / f"node{i}.toml", render_config(
            f"node{i}", data_dir=f"node{i}", genesis="genesis.json", node_key=f"keys/node{i}.pem",
            tls_cert=f"keys/node{i}.crt", api_listen=f"{host}:{base_port + i}",
            peer_listen=f"{host}:{peer_base + i}", tables=tables).encode())
    return d
