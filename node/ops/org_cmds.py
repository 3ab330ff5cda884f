"""`crmledger org ...`: the consortium's governance from the command line. Each command
signs one transaction with an org admin's key file, sends it to a node and waits for
its commit; it prints the result, and exits 1 when the chain refused it (with its
code), 2 on bad input.

    crmledger org propose-add --org-file FILE   --key K --org MINE [--days 7]
    crmledger org propose-remove ORG            --key K --org MINE
    crmledger org rotate-key ORG OLD (NEW | --revoke) --key K --org MINE
    crmledger org set-policy majority|two_thirds|all --key K --org MINE
    crmledger org vote PROPOSAL_ID              --key K --org MINE
    crmledger org list
"""
from __future__ import annotations

import argparse
import json
import secrets
import sys
import time

from crmledger.ledger.consortium import POLICIES, check_proposal
from crmledger.ledger.genesis import read_json_file
from crmledger.ledger.tx import TxError, admit, sign_tx
from crmledger.node.config import load_signing_key

from .client_cmds import get_json, send_request, tx_request

DAY_MS = 24 * 3600_000


def add_parser(sub) -> None:
    org = sub.add_parser("org", help="propose and vote on changes to the consortium; list it")
    cmds = org.add_subparsers(dest="org_cmd", required=True)

    def signed(name: str, help_: str) -> argparse.ArgumentParser:
        p = cmds.add_parser(name, help=help_)
        p.add_argument("--node", default="127.0.0.1:8001", help="host:port of a node's HTTP API")
        p.add_argument("--key", required=True, help="PEM key file of an admin of your org")
        p.add_argument("--org", required=True, help="your org")
        return p

    pa = signed("propose-add", "propose a new org (with its node) to the consortium")
    pa.add_argument("--org-file", required=True,
                    help='JSON: {"org", "admins": [HEX], "contact": {...}, "service_levels": {...}, '
                         '"node": {"node_id", "raft_id", "pubkey", "peer_addr", "api_addr", "tls_cert" (PEM)}}')
    pa.add_argument("--days", type=float, default=7.0, help="the proposal expires after this many days")
    pr = signed("propose-remove", "propose to remove an org (and its nodes)")
    pr.add_argument("target", help="the org to remove")
    pr.add_argument("--days", type=float, default=7.0)
    rk = signed("rotate-key", "propose to replace (or revoke) an admin key of an org")
    rk.add_argument("target", help="the org whose key changes")
    rk.add_argument("old_key", help="the admin key (hex) to retire")
    rk.add_argument("new_key", nargs="?", default=None, help="the admin key (hex) that replaces it")
    rk.add_argument("--revoke", action="store_true", help="retire OLD_KEY without a replacement")
    rk.add_argument("--days", type=float, default=7.0)
    sp = signed("set-policy", "propose a new voting policy")
    sp.add_argument("policy", choices=POLICIES)
    sp.add_argument("--days", type=float, default=7.0)
    v = signed("vote", "vote for a proposal (one vote per org)")
    v.add_argument("proposal_id")
    ls = cmds.add_parser("list", help="the consortium in force and its proposals")
    ls.add_argument("--node", default="127.0.0.1:8001", help="host:port of a node's HTTP API")
    ls.add_argument("--json", action="store_true", help="print it as JSON")


def _fail(msg: str) -> int:
    print(f"org: {msg}", file=sys.stderr)
    return 2


def org_file_proposal(path: str) -> dict:
    """The add_org proposal an org file describes (the node's certificate pinned by its
    SHA-256); raises ValueError."""
    spec = read_json_file(path, "org file")
    if type(spec) is not dict:
        raise ValueError(f"{path}: an org file is a JSON object")
    proposal = {"action": "add_org", **spec}
    node = proposal.get("node")
    if type(node) is dict and node.get("tls_cert") and not node.get("tls_cert_sha256"):
        from .tlscerts import fingerprint_pem
        try:
            node["tls_cert_sha256"] = fingerprint_pem(node["tls_cert"].encode())
        except ValueError:
            raise ValueError(f"{path}: node.tls_cert is not a PEM certificate") from None
    why = check_proposal(proposal)
    if why:
        raise ValueError(f"{path}: {why}")
    return proposal


def _proposal(a) -> dict:
    if a.org_cmd == "propose-add":
        return org_file_proposal(a.org_file)
    if a.org_cmd == "propose-remove":
        return {"action": "remove_org", "org": a.target}
    if a.org_cmd == "rotate-key":
        if (a.new_key is None) != a.revoke:
            raise ValueError("give NEW_KEY, or --revoke to retire OLD_KEY without a replacement")
        p = {"action": "rotate_key", "org": a.target, "old_key": a.old_key, "new_key": a.new_key}
    else:
        p = {"action": "set_policy", "policy": a.policy}
    why = check_proposal(p)
    if why:
        raise ValueError(why)
    return p


def run(a) -> int:
    if a.org_cmd == "list":
        return list_consortium(a.node, a.json)
    try:
        key = load_signing_key(a.key)
        if a.org_cmd == "vote":
            type_, payload = "consortium.vote", {"proposal_id": a.proposal_id}
        else:
            if a.days <= 0:
                raise ValueError("--days must be positive")
            type_ = "consortium.propose"
            payload = {"proposal": _proposal(a), "deadline_ts": int(time.time() * 1000 + a.days * DAY_MS)}
        env = sign_tx(key, type_, a.org, secrets.token_hex(8), int(time.time() * 1000), payload)
        admit(env)   # the shape, as a node checks it
    except (ValueError, TxError) as e:
        return _fail(str(getattr(e, "detail", e)))
    rc, answer = send_request(f"org {a.org_cmd}", a.node, tx_request(a.node, env), quiet=True)
    if rc or answer is None:
        print(f"org {a.org_cmd}: {answer if answer is not None else 'no answer'}", file=sys.stderr)
        return rc or 1
    if answer.get("code") != "valid":
        print(f"org {a.org_cmd}: refused on the chain: {answer.get('code')} (block {answer.get('height')})",
              file=sys.stderr)
        return 1
    if type_ == "consortium.propose":
        print(f"proposal {answer['tx_id']} is on the chain at block {answer['height']}; "
              f"the orgs vote with: crmledger org vote {answer['tx_id']}")
    else:
        print(f"vote counted at block {answer['height']}")
        _show_proposal(a.node, a.proposal_id)
    return 0


def _show_proposal(node: str, pid: str) -> None:
    try:
        doc = get_json(f"http://{node}/v1/consortium")
    except (OSError, ValueError):
        return
    for p in doc["proposals"]:
        if p["proposal_id"] == pid:
            print(f"proposal {pid[:16]}: {p['status']}, votes from {', '.join(p['votes']) or 'none'}")


def list_consortium(node: str, as_json: bool) -> int:
    try:
        doc = get_json(f"http://{node}/v1/consortium")
    except (OSError, ValueError) as e:
        return _fail(f"cannot read the consortium from {node}: {e}")
    if as_json:
        print(json.dumps(doc, indent=2, sort_keys=True))
        return 0
    print(f"consortium version {doc['version']} (since block {doc['height']}), policy: {doc['policy']}")
    print(f"{'org':<16} {'admin keys':<12} nodes")
    for org, o in sorted(doc["orgs"].items()):
        nodes = sorted(n for n, x in doc["nodes"].items() if x["org"] == org)
        print(f"{org:<16} {len(o['admins']):<12} {', '.join(nodes) or '-'}")
    if doc["proposals"]:
        print(f"\n{'proposal':<18} {'action':<11} {'about':<16} {'status':<9} votes")
        for p in doc["proposals"]:
            pr = p["proposal"]
            about = pr.get("org") or pr.get("policy", "")
            print(f"{p['proposal_id'][:16]:<18} {pr['action']:<11} {about:<16} {p['status']:<9} "
                  f"{', '.join(p['votes']) or '-'}")
    return 0

