"""The consortium in force: its orgs (admin keys, contact details, service levels), their
nodes and the voting policy for changing any of it. The genesis gives version 0; each
change voted through (see `rules_governance`) writes the next version into the state
under CONSORTIUM_KEY, so it is part of the state root, and whatever authorizes (the
rules, admission at the door, the block check, `crmledger verify`) reads the version in
force at that height.

A proposal is one of:
  {"action": "add_org", "org", "admins", "contact"?, "service_levels"?, "node"?}
  {"action": "remove_org", "org"}
  {"action": "rotate_key", "org", "old_key", "new_key" (hex, or null to revoke)}
  {"action": "set_policy", "policy": "majority" | "two_thirds" | "all"}
`node` is a node entry as in the genesis ({"node_id", "raft_id", "pubkey", "peer_addr",
"api_addr", "tls_cert", "tls_cert_sha256"}), for the org being added.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import Any, KeysView, Mapping

import msgpack

from .genesis import (
    _HEX64, _NAME, Genesis, GenesisError, NodeInfo, OrgInfo, _org_info,
    parse_members, parse_node,
)

CONSORTIUM_KEY = b"cs/current"
POLICIES = ("majority", "two_thirds", "all")
ACTIONS = ("add_org", "remove_org", "rotate_key", "set_policy")
_PROPOSAL_FIELDS = {
    "add_org": ({"action", "org", "admins"}, {"contact", "service_levels", "node"}),
    "remove_org": ({"action", "org"}, set()),
    "rotate_key": ({"action", "org", "old_key", "new_key"}, set()),
    "set_policy": ({"action", "policy"}, set()),
}


@dataclass(frozen=True, slots=True)
class Consortium:
    orgs: Mapping[str, frozenset[str]]      # org -> admin public keys
    nodes: Mapping[str, NodeInfo]
    org_info: Mapping[str, OrgInfo]
    policy: str = "majority"
    version: int = 0
    height: int = 0                          # the block at which this version took effect
    # derived from the above (see `make`), looked up once per transaction
    admins: frozenset[str] = frozenset()
    by_node_key: Mapping[str, NodeInfo] = field(default_factory=lambda: MappingProxyType({}))
    raft_ids: frozenset[int] = frozenset()   # of its nodes: the Raft group the leader makes follow it

    @classmethod
    def make(cls, orgs: Mapping[str, frozenset[str]], nodes: Mapping[str, NodeInfo], org_info: Mapping[str, OrgInfo],
             policy: str = "majority", version: int = 0, height: int = 0) -> "Consortium":
        return cls(MappingProxyType(dict(orgs)), MappingProxyType(dict(nodes)), MappingProxyType(dict(org_info)),
                   policy, version, height, frozenset().union(*orgs.values()),
                   MappingProxyType({n.pubkey: n for n in nodes.values()}),
                   frozenset(n.raft_id for n in nodes.values()))

    def is_admin_of(self, pubkey: str, org: str) -> bool:
        return pubkey in self.orgs.get(org, ())

    def is_admin(self, pubkey: str) -> bool:
        return pubkey in self.admins

    def node_by_key(self, pubkey: str) -> NodeInfo | None:
        return self.by_node_key.get(pubkey)

    def node_keys(self) -> KeysView[str]:
        return self.by_node_key.keys()

    def nodes_of(self, org: str) -> list[NodeInfo]:
        return [n for n in self.nodes.values() if n.org == org]

    def votes_needed(self, electorate: int) -> int:
        if self.policy == "all":
            return electorate
        if self.policy == "two_thirds":
            return -(-2 * electorate // 3)
        return electorate // 2 + 1

    def to_state(self) -> dict:
        orgs = {o: {"admins": sorted(self.orgs[o]), "contact": dict(i.contact),
                    "service_levels": {"first_response_ms": i.first_response_ms,
                                       "resolution_ms": i.resolution_ms}}
                for o, i in self.org_info.items()}
        nodes = {nid: {"raft_id": n.raft_id, "org": n.org, "pubkey": n.pubkey, "peer_addr": n.peer_addr,
                       "api_addr": n.api_addr, "tls_cert_sha256": n.tls_cert_sha256, "tls_cert": n.tls_cert}
                 for nid, n in self.nodes.items()}
        return {"version": self.version, "height": self.height, "policy": self.policy,
                "orgs": orgs, "nodes": nodes}


_OF_GENESIS: dict[str, Consortium] = {}


def of_genesis(g: Genesis) -> Consortium:
    """Version 0 (made once per genesis)."""
    c = _OF_GENESIS.get(g.hash)
    if c is None:
        c = _OF_GENESIS[g.hash] = Consortium.make(g.orgs, g.nodes, g.org_info)
    return c


def from_state(obj: dict) -> Consortium:
    orgs, info, nodes = parse_members(obj["orgs"], obj["nodes"], "consortium")
    if obj.get("policy") not in POLICIES or type(obj.get("version")) is not int or type(obj.get("height")) is not int:
        raise GenesisError("consortium: policy, version and height are missing or wrong")
    return Consortium.make(orgs, nodes, info, obj["policy"], obj["version"], obj["height"])


@lru_cache(maxsize=8)
def from_state_bytes(raw: bytes) -> Consortium:
    """The consortium a state value holds (decoded once per distinct value)."""
    return from_state(msgpack.unpackb(raw, raw=False))


def in_force(genesis: Genesis, raw: bytes | None) -> Consortium:
    """The consortium in force, given the state's CONSORTIUM_KEY value (None: the genesis's)."""
    return of_genesis(genesis) if raw is None else from_state_bytes(raw)


# -- proposals ------------------------------------------------------------------------------
def check_proposal(v: Any) -> str | None:
    """Why a proposal is not well formed (its shape only; `refusal` judges it against
    the consortium in force), or None."""
    if type(v) is not dict or v.get("action") not in ACTIONS:
        return f"must be a map whose action is one of {', '.join(ACTIONS)}"
    need, may = _PROPOSAL_FIELDS[v["action"]]
    if not need <= set(v) <= need | may:
        return f"a {v['action']} proposal has the fields {', '.join(sorted(need))}" + (
            f" (and optionally {', '.join(sorted(may))})" if may else "")
    if "org" in v and (type(v["org"]) is not str or not _NAME.match(v["org"])):
        return "org must be 1-64 characters of A-Z a-z 0-9 . _ -"
    try:
        if v["action"] == "add_org":
            admins = v["admins"]
            if type(admins) is not list or not 0 < len(admins) <= 16 \
                    or not all(type(a) is str and _HEX64.match(a) for a in admins) or len(set(admins)) != len(admins):
                return "admins must be a list of 1-16 distinct hex Ed25519 keys"
            _org_info({k: v[k] for k in ("contact", "service_levels") if k in v}, "proposal")
            if "node" in v:
                n = v["node"]
                if type(n) is not dict or "node_id" not in n:
                    return "node must be a node entry with its node_id"
                parse_node(n["node_id"], {**{k: x for k, x in n.items() if k != "node_id"}, "org": v["org"]})
                if len(n.get("tls_cert", "")) > 8192:
                    return "node.tls_cert is too long"
                if n.get("tls_cert") and not _HEX64.match(n.get("tls_cert_sha256", "")):
                    return "node.tls_cert_sha256 must be the certificate's SHA-256 (hex) when tls_cert is given"
        elif v["action"] == "rotate_key":
            if type(v["old_key"]) is not str or not _HEX64.match(v["old_key"]):
                return "old_key must be a hex Ed25519 key"
            if v["new_key"] is not None and (type(v["new_key"]) is not str or not _HEX64.match(v["new_key"])):
                return "new_key must be a hex Ed25519 key, or null to revoke old_key"
        elif v["action"] == "set_policy" and v["policy"] not in POLICIES:
            return f"policy must be one of {', '.join(POLICIES)}"
    except GenesisError as e:
        return str(e)
    return None


def electorate(c: Consortium, proposal: dict) -> list[str]:
    """The orgs whose votes count: all of them, but never the org a proposal removes."""
    if proposal["action"] == "remove_org":
        return sorted(o for o in c.orgs if o != proposal["org"])
    return sorted(c.orgs)


def refusal(c: Consortium, proposal: dict) -> str | None:
    """Why the (well-formed) proposal cannot take effect on `c`, or None."""
    a = proposal["action"]
    org = proposal.get("org")
    if a == "add_org":
        if org in c.orgs:
            return f"org {org} is a member already"
        keys = set(proposal["admins"])
        if any(keys & admins for admins in c.orgs.values()) or keys & c.node_keys():
            return "an admin key is in use already"
        n = proposal.get("node")
        if n is not None:
            if n["node_id"] in c.nodes or any(x.raft_id == n["raft_id"] for x in c.nodes.values()):
                return "the node id or Raft id is taken"
            if n["pubkey"] in c.node_keys() or n["pubkey"] in keys or c.is_admin(n["pubkey"]):
                return "the node key is in use already"
        return None
    if a in ("remove_org", "rotate_key") and org not in c.orgs:
        return f"org {org} is not a member"
    if a == "remove_org":
        if len(c.orgs) < 2:
            return "the last org cannot be removed"
        if all(n.org == org for n in c.nodes.values()):
            return "the consortium would be left without a node"
        return None
    if a == "rotate_key":
        admins = c.orgs[org]
        if proposal["old_key"] not in admins:
            return f"{proposal['old_key'][:12]}... is not an admin key of {org}"
        new = proposal["new_key"]
        if new is None and len(admins) == 1:
            return f"that is the last admin key of {org}"
        if new is not None and (c.is_admin(new) or new in c.node_keys()):
            return "the new key is in use already"
        return None
    return None   # set_policy


def enact(c: Consortium, proposal: dict, height: int) -> Consortium:
    """The consortium after a proposal (for which `refusal` found nothing) takes effect."""
    a = proposal["action"]
    orgs, info, nodes = dict(c.orgs), dict(c.org_info), dict(c.nodes)
    policy = c.policy
    org = proposal.get("org")
    if a == "add_org":
        orgs[org] = frozenset(proposal["admins"])
        info[org] = _org_info({k: proposal[k] for k in ("contact", "service_levels") if k in proposal}, org)
        n = proposal.get("node")
        if n is not None:
            fields = {k: x for k, x in n.items() if k != "node_id"}
            nodes[n["node_id"]] = parse_node(n["node_id"], {**fields, "org": org})
    elif a == "remove_org":
        del orgs[org], info[org]
        nodes = {nid: n for nid, n in nodes.items() if n.org != org}
    elif a == "rotate_key":
        keys = set(orgs[org]) - {proposal["old_key"]}
        if proposal["new_key"] is not None:
            keys.add(proposal["new_key"])
        orgs[org] = frozenset(keys)
    else:
        policy = proposal["policy"]
    return Consortium.make(orgs, nodes, info, policy, c.version + 1, height)

