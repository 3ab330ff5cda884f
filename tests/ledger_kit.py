"""A small consortium for ledger tests: deterministic keys, a genesis, signed
transactions and blocks built the way the leader builds them."""
from __future__ import annotations

import hashlib
import itertools

from crmledger.ledger.block import Block, make_block
from crmledger.ledger.genesis import genesis_from_dict
from crmledger.ledger.keys import SigningKey
from crmledger.ledger.tx import Tx, admit, sign_tx

T0 = 1_760_000_000_000  # ms


def key(name: str) -> SigningKey:
    return SigningKey.from_seed(hashlib.sha256(name.encode()).digest())


ORGS = ("org1", "org2", "org3")


def genesis_dict(n_orgs: int = 3) -> dict:
    orgs = {o: {"admins": [key(f"{o}-admin").public_hex]} for o in ORGS[:n_orgs]}
    nodes = {f"node{i}": {"raft_id": i, "org": f"org{i}", "pubkey": key(f"node{i}").public_hex,
                          "peer_addr": f"127.0.0.1:{9000 + i}", "api_addr": f"127.0.0.1:{8000 + i}"}
             for i in range(1, n_orgs + 1)}
    return {"chain_id": "test-chain", "orgs": orgs, "nodes": nodes}


GENESIS = genesis_from_dict(genesis_dict())
_nonce = itertools.count(1)


def tx(signer: SigningKey, type_: str, org: str, ts: int = T0, nonce: str | None = None, **payload) -> Tx:
    return admit(sign_tx(signer, type_, org, nonce or f"n{next(_nonce)}", ts, payload))


def registrations(cids, org: str = "org1") -> list[Tx]:
    """Registrations by the org's admin of customers without keys of their own."""
    admin = key(f"{org}-admin")
    return [tx(admin, "customer.register", org, customer_id=c, customer_key=None, profile_hash="ab" * 32)
            for c in cids]


class Chain:
    """Builds block after block on top of a store, as a leader would."""

    def __init__(self, store, proposer: str = "node1") -> None:
        self.store = store
        self.proposer = proposer
        self.index = 100
        self.ts = T0

    def block(self, txs: list[Tx], ts: int | None = None) -> Block:
        self.index += 1
        self.ts = ts if ts is not None else self.ts + 1000
        return make_block(key(self.proposer), height=self.store.height + 1, prev_hash=self.store.head_hash,
                          state_root=self.store.state_root, timestamp=self.ts, proposer=self.proposer,
                          term=2, index=self.index, txs=[t.encode() for t in txs],
                          tx_ids=[t.tx_id for t in txs])

    def commit(self, txs: list[Tx], ts: int | None = None):
        b = self.block(txs, ts)
        out = self.store.apply_block(b, txs, b.header.index)
        return [r.code for r in out.results]
