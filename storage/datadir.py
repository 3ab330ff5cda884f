"""A node's data directory: `ledger.db` (Raft log, blocks, transaction index, world state,
in one database so that applying a block and recording the configuration are one
transaction), `private.db` (profiles) and `genesis.json` (a copy of the chain's genesis).
The Raft log and the ledger use connections of their own, so that a Raft write being
fsynced in a worker thread never holds up a read of the ledger."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from crmledger.ledger.genesis import Genesis, genesis_from_dict

from .ledger_store import LedgerStore
from .private_store import PrivateStore
from .raft_store import SqliteRaftStorage
from .sqlite import connect


@dataclass
class DataDir:
    path: Path
    genesis: Genesis
    raft: SqliteRaftStorage
    ledger: LedgerStore
    private: PrivateStore

    def close(self) -> None:
        self.private.close()
        self.ledger.conn.close()
        self.raft.conn.close()


def genesis_of(path: str | Path) -> Genesis:
    return genesis_from_dict(json.loads((Path(path) / "genesis.json").read_text()))


def open_data_dir(path: str | Path, genesis: Genesis | None = None) -> DataDir:
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    p.chmod(0o700)   # it holds the private store
    gfile = p / "genesis.json"
    if genesis is not None and not gfile.exists():
        tmp = gfile.with_suffix(".tmp")
        tmp.write_text(json.dumps(dict(genesis.raw), indent=2, sort_keys=True))
        tmp.replace(gfile)
    g = genesis_of(p)
    if genesis is not None and g.hash != genesis.hash:
        raise ValueError(f"{gfile} holds another chain's genesis")
    ledger = LedgerStore(connect(p / "ledger.db"), g)
    raft = SqliteRaftStorage(connect(p / "ledger.db"))
    return DataDir(p, g, raft, ledger, PrivateStore(p / "private.db"))

