"""The genesis file: the consortium's organisations (with admin keys) and nodes (with
node keys, Raft ids and addresses). Its hash anchors the chain: block 1's prev_hash."""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from .canonical import EncodingError, canonical_bytes

_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_NAME = re.compile(r"[A-Za-z0-9._\-]{1,64}\Z")


class GenesisError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class NodeInfo:
    node_id: str
    raft_id: int
    org: str
    pubkey: str          # Ed25519, hex: signs block headers
    peer_addr: str       # host:port of the peer link
    api_addr: str        # host:port of the HTTP API
    tls_cert_sha256: str  # fingerprint of the node's TLS certificate ("" when not pinned)
    tls_cert: str = ""    # the certificate itself (PEM), so every member can authenticate the node


CONTACT_FIELDS = ("name", "address", "email", "phone", "url")
SERVICE_LEVELS = ("first_response_ms", "resolution_ms")
DEFAULT_SERVICE_LEVELS = {"first_response_ms": 4 * 3600_000, "resolution_ms": 5 * 24 * 3600_000}


@dataclass(frozen=True, slots=True)
class OrgInfo:
    """What the consortium publishes of an org besides its keys (SPEC §3)."""
    contact: Mapping[str, str]          # name, address, email, phone, url (any may be absent)
    first_response_ms: int              # a ticket not answered within this is escalated
    resolution_ms: int                  # ... and one not resolved within this


@dataclass(frozen=True, slots=True)
class Genesis:
    chain_id: str
    orgs: Mapping[str, frozenset[str]]      # org -> admin public keys
    nodes: Mapping[str, NodeInfo]
    hash: str
    raw: Mapping[str, Any]
    org_info: Mapping[str, OrgInfo]         # org -> contact details and service levels


def _field(obj: Mapping, name: str, kind: type, where: str) -> Any:
    if name not in obj:
        raise GenesisError(f"{where}: missing '{name}'")
    v = obj[name]
    if type(v) is not kind:
        raise GenesisError(f"{where}.{name}: expected {kind.__name__}")
    return v


def _org_info(o: dict, where: str) -> OrgInfo:
    unknown = set(o) - {"admins", "contact", "service_levels"}
    if unknown:
        raise GenesisError(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
    contact = o.get("contact", {})
    if type(contact) is not dict or set(contact) - set(CONTACT_FIELDS) \
            or not all(type(v) is str and len(v) <= 256 for v in contact.values()):
        raise GenesisError(f"{where}.contact: a map of {', '.join(CONTACT_FIELDS)} to strings of up to 256 characters")
    levels = {**DEFAULT_SERVICE_LEVELS, **o.get("service_levels", {})} \
        if type(o.get("service_levels", {})) is dict else None
    if levels is None or set(levels) != set(SERVICE_LEVELS) \
            or not all(type(v) is int and v > 0 for v in levels.values()):
        raise GenesisError(f"{where}.service_levels: positive integers (ms) for {', '.join(SERVICE_LEVELS)}")
    return OrgInfo(MappingProxyType(dict(contact)), levels["first_response_ms"], levels["resolution_ms"])


def parse_members(orgs_in: Any, nodes_in: Any, where: str = "genesis") -> tuple[dict, dict, dict]:
    """(orgs -> admin keys, org -> OrgInfo, node id -> NodeInfo) of a genesis's (or a later
    consortium version's) `orgs` and `nodes` maps; raises GenesisError."""
    if type(orgs_in) is not dict or type(nodes_in) is not dict:
        raise GenesisError(f"{where}: 'orgs' and 'nodes' must be maps")
    if not orgs_in or not nodes_in:
        raise GenesisError(f"{where} needs at least one org and one node")
    orgs: dict[str, frozenset[str]] = {}
    org_info: dict[str, OrgInfo] = {}
    for name, o in orgs_in.items():
        if not _NAME.match(name):
            raise GenesisError(f"org name {name!r} is not allowed")
        admins = _field(o, "admins", list, f"orgs.{name}") if type(o) is dict else None
        if admins is None or not admins or not all(type(a) is str and _HEX64.match(a) for a in admins):
            raise GenesisError(f"orgs.{name}.admins must be a non-empty list of hex Ed25519 keys")
        orgs[name] = frozenset(admins)
        org_info[name] = _org_info(o, f"orgs.{name}")
    nodes: dict[str, NodeInfo] = {}
    raft_ids: set[int] = set()
    for nid, n in nodes_in.items():
        info = parse_node(nid, n)
        if info.raft_id in raft_ids:
            raise GenesisError(f"nodes.{nid}.raft_id must be a unique positive integer")
        if info.org not in orgs:
            raise GenesisError(f"nodes.{nid}.org {info.org!r} is not an org of the {where}")
        raft_ids.add(info.raft_id)
        nodes[nid] = info
    return orgs, org_info, nodes


def parse_node(nid: Any, n: Any) -> NodeInfo:
    where = f"nodes.{nid}"
    if type(nid) is not str or not _NAME.match(nid) or type(n) is not dict:
        raise GenesisError(f"{where}: bad node entry")
    info = NodeInfo(
        node_id=nid,
        raft_id=_field(n, "raft_id", int, where),
        org=_field(n, "org", str, where),
        pubkey=_field(n, "pubkey", str, where),
        peer_addr=_field(n, "peer_addr", str, where),
        api_addr=_field(n, "api_addr", str, where),
        tls_cert_sha256=n.get("tls_cert_sha256", ""),
        tls_cert=n.get("tls_cert", ""),
    )
    if type(info.tls_cert_sha256) is not str or type(info.tls_cert) is not str:
        raise GenesisError(f"{where}: tls_cert and tls_cert_sha256 must be strings")
    if info.raft_id <= 0:
        raise GenesisError(f"{where}.raft_id must be a unique positive integer")
    if not _HEX64.match(info.pubkey):
        raise GenesisError(f"{where}.pubkey must be a hex Ed25519 key")
    return info


def genesis_from_dict(obj: Any) -> Genesis:
    if type(obj) is not dict:
        raise GenesisError("genesis must be a JSON object")
    chain_id = _field(obj, "chain_id", str, "genesis")
    orgs, org_info, nodes = parse_members(_field(obj, "orgs", dict, "genesis"),
                                          _field(obj, "nodes", dict, "genesis"))
    try:
        h = hashlib.sha256(b"crmledger/genesis/v1\n" + canonical_bytes(obj)).hexdigest()
    except EncodingError as e:
        raise GenesisError(f"genesis: {e}") from None
    return Genesis(chain_id, MappingProxyType(orgs), MappingProxyType(nodes), h, MappingProxyType(obj),
                   MappingProxyType(org_info))


def read_json_file(path: str | Path, what: str) -> Any:
    """The JSON value in the file `what` names; raises GenesisError (a ValueError) saying
    what was wrong with which file."""
    try:
        return json.loads(Path(path).read_text())
    except OSError as e:
        raise GenesisError(f"cannot read {what} {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise GenesisError(f"{what} {path} is not valid JSON: {e}") from None


def load_genesis(path: str | Path) -> Genesis:
    return genesis_from_dict(read_json_file(path, "genesis file"))
