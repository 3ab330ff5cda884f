"""What a customer's audit trail says, read in a reader process (see node.reader): every
committed transaction about them, decoded, and from it the access log (every
`access.read` entry: disclosures and refused attempts alike)."""
from __future__ import annotations

import msgpack
import numpy as np

from crmledger.ledger.consortium import Consortium
from crmledger.storage.ledger_reads import seq_of
from crmledger.storage.ledger_store import LedgerStore

MAX_ENTRIES = 100_000   # the most one export or access log reads


def entries(store: LedgerStore, cid: str, candidates: np.ndarray, types: frozenset[str] | None = None) -> list[dict]:
    """Every committed transaction touching the customer, oldest first, decoded (of
    `types` only, when given)."""
    out: list[dict] = []
    after = None
    while len(out) < MAX_ENTRIES:
        rows, more = store.history_page(cid, candidates, after=after, limit=1000)
        for e in rows:
            body = msgpack.unpackb(e.envelope, raw=False)["body"]
            if types is None or body["type"] in types:
                out.append({"height": e.height, "position": e.pos, "timestamp": e.timestamp, "tx_id": e.tx_id,
                            "code": e.code, "type": body["type"], "org": body["org"], "signer": body["signer"],
                            "payload": body["payload"]})
        if not more or not rows:
            break
        after = seq_of(rows[-1].height, rows[-1].pos)
    return out


def access_log(store: LedgerStore, cid: str, candidates: np.ndarray) -> list[dict]:
    """Every read of the customer's profile filed on the chain, with its outcome."""
    return reads_among(store.consortium(), entries(store, cid, candidates, frozenset({"access.read"})))


def reads_among(consortium: Consortium, decoded: list[dict]) -> list[dict]:
    """The access log of decoded trail entries (see `entries`)."""
    return [{"reader_org": e["payload"]["reader_org"], "reader": e["payload"]["reader"],
             "fields": e["payload"]["fields"], "purpose": e["payload"]["purpose"],
             "requested_ts": e["payload"]["request"]["ts"], "time": e["timestamp"], "height": e["height"],
             "code": e["code"], "tx_id": e["tx_id"], "filed_by": _node_id(consortium, e["signer"])}
            for e in decoded if e["type"] == "access.read"]


def _node_id(consortium: Consortium, pubkey: str) -> str:
    n = consortium.node_by_key(pubkey)
    return n.node_id if n is not None else pubkey
