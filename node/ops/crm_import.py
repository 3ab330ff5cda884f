"""`crmledger import`: an existing CRM's customers into the consortium. Each row of a
CSV or JSON-lines file is mapped to a customer id and profile fields, checked, and
registered for the org with its private profile, in batches.

Exactly once, however often it runs: a row's transaction carries a nonce derived from the
org and the customer id, so a row registered by an earlier (or interrupted) run commits
as `duplicate` and is counted as already present; so is a customer registered otherwise.
Bad rows (no id, a bad e-mail, an id twice in the file) are refused one by one into a
reject file, with the reason; the rest go on."""
from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from crmledger.client import ApiError, AsyncClient, Unavailable
from crmledger.ledger.keys import SigningKey
from crmledger.node.config import load_signing_key
from crmledger.ledger.tx import is_ident

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+\Z")
MAX_VALUE = 1024
COMMIT_WAIT_S = 120.0   # how long the last transactions may take to commit


class MappingError(ValueError):
    """A mapping or a file that cannot be imported at all."""


@dataclass
class Mapping:
    customer_id: str                     # the column holding the customer id
    fields: dict[str, str]               # profile field -> column
    customer_key: str | None = None      # the column holding the customer's public key, if any

    @classmethod
    def load(cls, path: str | None, id_column: str | None, field_flags: list[str]) -> "Mapping":
        """From a JSON file {"customer_id": COL, "fields": {FIELD: COL}, "customer_key": COL}
        and/or flags (--id-column COL, --field FIELD=COL)."""
        obj: dict = {}
        if path:
            try:
                obj = json.loads(Path(path).read_text())
            except (OSError, ValueError) as e:
                raise MappingError(f"mapping file {path}: {e}") from None
        fields = dict(obj.get("fields", {}))
        for f in field_flags:
            name, sep, col = f.partition("=")
            if not sep or not name or not col:
                raise MappingError(f"--field takes FIELD=COLUMN, not {f!r}")
            fields[name] = col
        cid = id_column or obj.get("customer_id")
        if not cid or not fields:
            raise MappingError("name the id column (--id-column or the mapping's customer_id) and at least one "
                               "profile field (--field FIELD=COLUMN or the mapping's fields)")
        for name in fields:
            if not is_ident(name) or len(name) > 64:
                raise MappingError(f"profile field name {name!r}: 1-64 characters of A-Z a-z 0-9 . _ : @ + -")
        return cls(cid, fields, obj.get("customer_key"))


@dataclass
class Summary:
    rows: int = 0
    imported: int = 0
    present: int = 0
    refused: int = 0
    unknown: int = 0      # sent, not seen committed in time: run again to settle them
    seconds: float = 0.0
    rejects: list[tuple[int, str, str]] = field(default_factory=list)   # (row number, id, reason)


def read_rows(path: str, fmt: str) -> Iterator[dict]:
    if fmt == "csv":
        with open(path, newline="", encoding="utf-8-sig") as f:
            yield from csv.DictReader(f)
    else:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        obj = json.loads(line)
                    except ValueError:
                        obj = {"__error__": f"line {n} is not JSON"}
                    yield obj if isinstance(obj, dict) else {"__error__": f"line {n} is not an object"}


def check_row(row: dict, m: Mapping) -> tuple[str, dict, str | None] | str:
    """(customer id, profile, customer key) of a row, or why it is refused."""
    if "__error__" in row:
        return row["__error__"]
    cid = str(row.get(m.customer_id) or "").strip()
    if not cid:
        return "missing customer id"
    if not is_ident(cid):
        return "customer id: 1-128 characters of A-Z a-z 0-9 . _ : @ + -"
    profile = {}
    for name, col in m.fields.items():
        v = row.get(col)
        v = "" if v is None else str(v).strip()
        if v:
            if len(v) > MAX_VALUE:
                return f"{name}: longer than {MAX_VALUE} characters"
            profile[name] = v
    if "email" in profile and not _EMAIL.match(profile["email"]):
        return f"bad e-mail address {profile['email']!r}"
    if not profile:
        return "no profile field has a value"
    key = None
    if m.customer_key:
        key = str(row.get(m.customer_key) or "").strip().lower() or None
        if key is not None and not re.fullmatch(r"[0-9a-f]{64}", key):
            return "customer key: 64 hex characters"
    return cid, profile, key


def row_nonce(org: str, cid: str) -> str:
    return "import-" + hashlib.sha256(f"{org}\x00{cid}".encode()).hexdigest()[:48]


async def _import(rows: Iterator[dict], m: Mapping, org: str, key: SigningKey, nodes: list[str], batch: int,
                  bar) -> Summary:
    out = Summary()
    t0 = time.monotonic()
    seen: set[str] = set()
    async with AsyncClient(nodes, key=key, org=org) as client:
        pending: dict[str, tuple[int, str]] = {}   # tx_id -> (row number, customer id)
        settler = _Settler(client, pending, (await client.status())["height"], out, bar)

        async def send(chunk: list[tuple[int, str, dict]]) -> None:
            """Admit a chunk of envelopes, sending again those a node asked to wait for."""
            while chunk:
                answers = await client.submit_batch([env for _, _, env in chunk])
                again, wait = [], 0
                for (n, cid, env), a in zip(chunk, answers):
                    code = a.get("error")
                    if a["status_code"] == 202:
                        pending[a["tx_id"]] = (n, cid)
                    elif code == "already_committed":
                        out.present += 1
                        bar.update(1)
                    elif a["status_code"] in (429, 503):
                        again.append((n, cid, env))
                        wait = max(wait, int(a.get("retry_after") or 1))
                    else:
                        out.refused += 1
                        out.rejects.append((n, cid, f"{code}: {a.get('detail', '')}"))
                        bar.update(1)
                chunk = again
                if chunk:
                    await asyncio.sleep(min(wait, 5))

        chunk: list[tuple[int, str, dict]] = []
        for n, row in enumerate(rows, 1):
            out.rows += 1
            got = check_row(row, m)
            if isinstance(got, str):
                out.refused += 1
                out.rejects.append((n, str(row.get(m.customer_id, "")), got))
                bar.update(1)
                continue
            cid, profile, ckey = got
            if cid in seen:
                out.refused += 1
                out.rejects.append((n, cid, "duplicate customer id in the file"))
                bar.update(1)
                continue
            seen.add(cid)
            chunk.append((n, cid, client.envelope("customer.register", {"customer_id": cid, "customer_key": ckey},
                                                  profile, nonce=row_nonce(org, cid))))
            if len(chunk) == batch:
                await send(chunk)
                chunk = []
                await settler.settle(wait_all=False)
        await send(chunk)
        await settler.settle(wait_all=True)
    out.seconds = time.monotonic() - t0
    return out


class _Settler:
    """Counts the outcome of every pending transaction from the blocks committed since the
    import began, reading each block once."""

    def __init__(self, client: AsyncClient, pending: dict[str, tuple[int, str]], start: int, out: Summary,
                 bar) -> None:
        self.client, self.pending, self.out, self.bar = client, pending, out, bar
        self.next_height = start + 1

    async def settle(self, wait_all: bool) -> None:
        """Take in the blocks committed so far; with `wait_all`, until nothing is pending
        or time is up."""
        deadline = time.monotonic() + COMMIT_WAIT_S
        out = self.out
        while self.pending:
            head = (await self.client.status())["height"]
            for h in range(self.next_height, head + 1):
                b = await self.client.block(h, full=True)
                for tx_id, code in zip(b["txs"], b["results"]):
                    if tx_id not in self.pending:
                        continue
                    n, cid = self.pending.pop(tx_id)
                    if code == "valid":
                        out.imported += 1
                    elif code in ("duplicate", "customer_exists"):
                        out.present += 1
                    else:
                        out.refused += 1
                        out.rejects.append((n, cid, code))
                    self.bar.update(1)
                self.next_height = h + 1
            if not wait_all or not self.pending:
                return
            if time.monotonic() > deadline:
                out.unknown += len(self.pending)
                out.rejects += [(n, cid, "not committed in time: run the import again")
                                for n, cid in self.pending.values()]
                self.pending.clear()
                return
            await asyncio.sleep(0.2)


def run(path: str, fmt: str, org: str, key_file: str, nodes: list[str], mapping: Mapping, *, batch: int = 500,
        reject_file: str | None = None, quiet: bool = False) -> int:
    from tqdm import tqdm
    try:
        key = load_signing_key(key_file)
    except ValueError as e:
        print(f"import: {e}", file=sys.stderr)
        return 2
    if not Path(path).is_file():
        print(f"import: no such file {path}", file=sys.stderr)
        return 2
    total = None
    if fmt == "csv" or fmt == "jsonl":
        with open(path, "rb") as f:
            total = sum(1 for line in f if line.strip()) - (1 if fmt == "csv" else 0)
    with tqdm(total=total, unit="row", disable=quiet, file=sys.stderr, smoothing=0.1) as bar:
        try:
            out = asyncio.run(_import(read_rows(path, fmt), mapping, org, key, nodes, batch, bar))
        except (Unavailable, ApiError) as e:
            print(f"\nimport: stopped: {e} (rows sent so far are safe: run the import again to go on)",
                  file=sys.stderr)
            return 1
    reject_path = reject_file or f"{path}.rejects.csv"
    if out.rejects:
        with open(reject_path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["row", "customer_id", "reason"])
            w.writerows(sorted(out.rejects))
    rate = out.rows / out.seconds if out.seconds else 0.0
    print(f"rows {out.rows}: imported {out.imported}, already present {out.present}, refused {out.refused}"
          + (f", not settled {out.unknown}" if out.unknown else "")
          + f" in {out.seconds:.1f} s ({rate:,.0f} rows/s)"
          + (f"; refused rows and reasons in {reject_path}" if out.rejects else ""))
    return 0 if not out.unknown else 1
