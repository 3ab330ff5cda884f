"""`crmledger bench-store`: the durable store on a chain of many transactions.

Builds a chain of N transactions (default 1,000,000) in blocks of 500 — a mix of every
transaction type, signed ahead of time in worker processes — and prints:
  * append rate: CPU time of the node's append path per block (Raft log write of the
    block entry, then apply: rules, world state, block, transaction index, in one
    transaction), signatures already verified, beside a reference measured in the same
    run: the same transactions into a bare SQLite table, a row each, a commit per block;
  * verify rate of `crmledger verify` on the result, beside this machine's single-core
    Ed25519 verify rate measured in the same run;
  * reopen time of the data directory;
  * peak memory of the appending process and of verify.
The append, reopen and audit run several times (default 3), each into a new store from
the same signed workload; each figure is the median over the runs, printed beside every
run's own figure.
"""
from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import msgpack

from crmledger.consensus import Entry, HardState, bootstrap_snapshot
from crmledger.ledger.block import make_block
from crmledger.ledger.genesis import genesis_from_dict
from crmledger.ledger.keys import SigningKey, verify, verify_with_cryptography
from crmledger.ledger.tx import decode_tx, sign_tx
from crmledger.storage.datadir import open_data_dir
from crmledger.storage.sqlite import connect, transaction

T0 = 1_760_000_000_000


def _key(name: str) -> SigningKey:
    return SigningKey.from_seed(hashlib.sha256(name.encode()).digest())


def _genesis() -> dict:
    orgs = {f"org{i}": {"admins": [_key(f"org{i}-admin").public_hex]} for i in (1, 2, 3)}
    nodes = {f"node{i}": {"raft_id": i, "org": f"org{i}", "pubkey": _key(f"node{i}").public_hex,
                          "peer_addr": f"127.0.0.1:{9000 + i}", "api_addr": f"127.0.0.1:{8000 + i}"}
             for i in (1, 2, 3)}
    return {"chain_id": "bench", "orgs": orgs, "nodes": nodes}


def _gen_block(b: int, size: int) -> list[bytes]:
    """Block b's transactions: half new customers, the rest acting on customers and
    tickets of earlier blocks (loyalty, tickets, updates, consents, redeems)."""
    admin = _key("org1-admin")
    ts = T0 + b * 1000
    out = []
    half = size // 2
    for j in range(half):
        cid = f"c{b}-{j}"
        ck = _key(cid) if j % 10 == 0 else None
        out.append(sign_tx(admin, "customer.register", "org1", f"r{b}-{j}", ts, {
            "customer_id": cid, "customer_key": ck.public_hex if ck else None,
            "profile_hash": hashlib.sha256(cid.encode()).hexdigest()}))
    for j in range(size - half):
        if b == 0 and j == 0:
            out.append(sign_tx(admin, "loyalty.program", "org1", "program", ts, {"program": "miles", "partners": []}))
        if b == 0:
            cid = f"c0-{j % half}"
            out.append(sign_tx(admin, "loyalty.issue", "org1", f"l{b}-{j}", ts,
                               {"customer_id": cid, "program": "miles", "amount": 100}))
            continue
        cid = f"c{b - 1}-{j % half}"
        kind = j % 10
        if kind < 3:
            body = ("loyalty.issue", "org1", {"customer_id": cid, "program": "miles", "amount": 100})
        elif kind < 5:
            body = ("ticket.open", "org1", {"ticket_id": f"t{b}-{j}", "customer_id": cid, "channel": "email",
                                            "subject_hash": hashlib.sha256(cid.encode()).hexdigest()})
        elif kind < 7 and b >= 2:
            body = ("ticket.update", "org1", {"ticket_id": f"t{b - 1}-{j}", "status": "in_progress",
                                              "note_hash": hashlib.sha256(cid.encode()).hexdigest()})
        elif kind < 8:
            body = ("customer.update", "org1", {"customer_id": cid,
                                                "profile_hash": hashlib.sha256(cid.encode() + b"2").hexdigest()})
        else:
            cid = f"c{b - 1}-{(j // 10) * 10 % half}"  # a customer with a key of their own
            ck = _key(cid)
            if kind == 8:
                out.append(sign_tx(ck, "consent.grant", "", f"g{b}-{j}", ts, {
                    "customer_id": cid, "grantee_org": "org2", "scope": ["email"], "purpose": "dpv:CustomerCare",
                    "expires_ts": None}))
            else:
                out.append(sign_tx(ck, "loyalty.redeem", "", f"x{b}-{j}", ts,
                                   {"customer_id": cid, "program": "miles", "amount": 1, "at_org": "org1"}))
            continue
        out.append(sign_tx(admin, body[0], body[1], f"o{b}-{j}", ts, body[2]))
    from crmledger.ledger.tx import parse_envelope
    return [parse_envelope(e).encode() for e in out]


def _gen_chunk(args: tuple[int, int, int]) -> bytes:
    first, count, size = args
    return msgpack.packb([_gen_block(b, size) for b in range(first, first + count)])


def _rss_mb(who=resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def _verify_rate(fn, n: int = 2000) -> float:
    k = _key("ref")
    msgs = [os.urandom(300) for _ in range(n)]
    sigs = [k.sign(m) for m in msgs]
    t = time.process_time()
    for m, s in zip(msgs, sigs):
        assert fn(k.public_hex, s, m)
    return n / (time.process_time() - t)


def _generate(path: Path, nblocks: int, block: int, workers: int, say) -> None:
    chunk, t = 20, time.monotonic()
    jobs = [(b, min(chunk, nblocks - b), block) for b in range(0, nblocks, chunk)]
    with open(path, "wb") as f, ProcessPoolExecutor(workers) as pool:
        window: list = []
        for i in range(len(jobs) + 2 * workers):   # at most 2 x workers chunks in flight
            if i < len(jobs):
                window.append(pool.submit(_gen_chunk, jobs[i]))
            if len(window) > 2 * workers or (i >= len(jobs) and window):
                data = window.pop(0).result()
                f.write(len(data).to_bytes(4, "big") + data)
        say(f"  signed the workload in {time.monotonic() - t:.0f} s")


def _append_main(base: str, total: int, block: int, workload: str | None = None) -> None:
    """In a process of its own, so that its peak memory is the store's alone. The
    signed workload is read from `workload` (default: workload.bin in `base`)."""
    base_p = Path(base)
    base_p.mkdir(parents=True, exist_ok=True)
    genesis = genesis_from_dict(_genesis())
    node_key = _key("node1")
    dd = open_data_dir(base_p / "node", genesis)
    dd.raft.bootstrap(bootstrap_snapshot([1, 2, 3]), HardState(term=2))
    # the reference, measured in the same run: the same transactions into a bare SQLite
    # table, a row each (tx_id, envelope), one commit per block, with the same settings
    ref = connect(base_p / "reference.db", cache_mb=8)
    ref.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, tx_id BLOB NOT NULL, env BLOB NOT NULL)")
    cpu_raft = cpu_apply = cpu_ref = 0.0
    seg_cpu, seg_tx, index = 0.0, 0, 1
    t_wall = time.monotonic()
    with open(workload or base_p / "workload.bin", "rb") as f:
        while head := f.read(4):
            for envs in msgpack.unpackb(f.read(int.from_bytes(head, "big"))):
                txs = [decode_tx(e) for e in envs]  # admission: done before a block commits
                index += 1
                blk = make_block(node_key, height=dd.ledger.height + 1, prev_hash=dd.ledger.head_hash,
                                 state_root=dd.ledger.state_root, timestamp=txs[0].ts, proposer="node1",
                                 term=2, index=index, txs=envs, tx_ids=[x.tx_id for x in txs])
                data = blk.encode()
                c0 = time.process_time()
                dd.raft.save(HardState(2, 1, index), [Entry(2, index, data)])
                c1 = time.process_time()
                dd.ledger.apply_block(blk, txs, index)
                c2 = time.process_time()
                c3 = time.process_time()
                with transaction(ref) as c:
                    c.executemany("INSERT INTO t VALUES (?, ?, ?)", zip(
                        range(index << 20, (index << 20) + len(envs)), blk.tx_ids, envs))
                cpu_ref += time.process_time() - c3
                cpu_raft += c1 - c0
                cpu_apply += c2 - c1
                seg_cpu += c2 - c0
                seg_tx += len(txs)
                if seg_tx >= total // 10:
                    print(f"  appending: {dd.ledger.height * block:,}/{total:,} "
                          f"({seg_tx / seg_cpu:,.0f} tx/s of CPU in the last tenth)", file=sys.stderr, flush=True)
                    seg_cpu, seg_tx = 0.0, 0
    valid = sum(c == 0 for (c,) in dd.ledger.conn.execute("SELECT codes FROM blocks") for c in c)
    out = {"height": dd.ledger.height, "cpu_raft": cpu_raft, "cpu_apply": cpu_apply,
           "cpu_ref": cpu_ref, "wall": time.monotonic() - t_wall, "valid": valid, "peak_mb": _rss_mb()}
    dd.close()
    ref.close()
    print(json.dumps(out))


def _verify_main(data_dir: str) -> None:
    from crmledger.node.ops.verify import verify as run_verify
    t = time.monotonic()
    rep = run_verify(data_dir)
    print(json.dumps({"ok": rep.ok, "reason": rep.reason, "seconds": time.monotonic() - t, "txs": rep.txs,
                      "peak_mb": _rss_mb(), "worker_peak_mb": _rss_mb(resource.RUSAGE_CHILDREN)}))


def _child(code: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark step failed ({proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _one_run(base: Path, workload: Path, total: int, block: int, say) -> dict:
    """Append the workload into a new store under `base`, reopen it, audit it: one run's
    figures, each beside its reference measured in the same run."""
    a = _child("import sys; from crmledger.node.bench.store import _append_main as m; m(sys.argv[1], int(sys.argv[2]), "
               "int(sys.argv[3]), sys.argv[4])", str(base), str(total), str(block), str(workload))
    reopen = []
    for _ in range(3):
        t = time.monotonic()
        subprocess.run([sys.executable, "-c",
                        "import sys; from crmledger.storage.datadir import open_data_dir; "
                        "d = open_data_dir(sys.argv[1]); "
                        "print(d.ledger.height, d.raft.last_index()); d.close()", str(base / "node")],
                       check=True, capture_output=True)
        reopen.append(time.monotonic() - t)
    # the single-core reference is measured just before and just after the audit, so that
    # it sees the machine as the audit did
    ref_runs = [_verify_rate(verify) for _ in range(3)]
    say("  verifying ...")
    v = _child("import sys; from crmledger.node.bench.store import _verify_main as m; m(sys.argv[1])",
               str(base / "node"))
    if not v["ok"]:
        raise RuntimeError(f"verify failed: {v['reason']}")
    ref_nacl = statistics.median(ref_runs + [_verify_rate(verify) for _ in range(3)])
    n = a["height"] * block
    r = {"transactions": n, "valid": a["valid"], "append": n / (a["cpu_raft"] + a["cpu_apply"]),
         "apply_only": n / a["cpu_apply"], "raft_write": n / a["cpu_raft"], "reference": n / a["cpu_ref"],
         "append_wall_s": a["wall"], "verify": n / v["seconds"], "verify_s": v["seconds"], "ed25519": ref_nacl,
         "reopen_s": statistics.median(reopen), "append_peak_mb": a["peak_mb"], "verify_peak_mb": v["peak_mb"],
         "verify_worker_peak_mb": v["worker_peak_mb"]}
    r["append_ratio"] = r["append"] / r["reference"]
    r["verify_ratio"] = r["verify"] / r["ed25519"]
    say(f"  run: append {r['append']:,.0f} tx/s of CPU ({r['append_ratio']:.3f} of the reference, "
        f"{r['reference']:,.0f}); verify {r['verify']:,.0f} tx/s beside Ed25519 {ref_nacl:,.0f}/s "
        f"(ratio {r['verify_ratio']:.2f}); reopen {r['reopen_s']:.2f} s")
    return r


def run(total: int = 1_000_000, block: int = 500, workers: int = 2, out=sys.stdout,
        workdir: str | None = None, runs: int = 3) -> dict:
    """`runs` times: append the same signed workload into a new store, reopen and audit
    it. Each figure printed is the median over the runs (peak memory: the highest)."""
    nblocks = total // block
    tmp = tempfile.TemporaryDirectory(prefix="crmledger-bench-") if workdir is None else None
    base = Path(workdir or tmp.name)
    base.mkdir(parents=True, exist_ok=True)
    say = lambda s: print(s, file=out, flush=True)  # noqa: E731
    say(f"store benchmark: {nblocks * block:,} transactions in {nblocks:,} blocks of {block}, "
        f"{runs} run{'s' * (runs > 1)} (in {base})")
    workload = base / "workload.bin"
    _generate(workload, nblocks, block, workers, say)
    per_run = []
    for i in range(runs):
        say(f"run {i + 1}/{runs}: appending ...")
        run_dir = base / f"run{i + 1}"
        per_run.append(_one_run(run_dir, workload, total, block, say))
        shutil.rmtree(run_dir)   # a store of a million transactions takes about 1 GB
    workload.unlink()
    ref_ossl = statistics.median(_verify_rate(verify_with_cryptography) for _ in range(3))

    med = {k: statistics.median(r[k] for r in per_run) for k in per_run[0]}
    peak = {k: max(r[k] for r in per_run) for k in ("append_peak_mb", "verify_peak_mb", "verify_worker_peak_mb")}
    n = per_run[0]["transactions"]
    res = {"runs": per_run, "transactions": n, "append_tx_per_cpu_s": med["append"],
           "append_to_reference": med["append_ratio"], "apply_only_tx_per_cpu_s": med["apply_only"],
           "raft_write_tx_per_cpu_s": med["raft_write"], "reference_tx_per_cpu_s": med["reference"],
           "verify_tx_per_s": med["verify"], "ed25519_verify_per_s": med["ed25519"],
           "verify_to_ed25519": med["verify_ratio"], "ed25519_verify_openssl_per_s": ref_ossl,
           "reopen_s": med["reopen_s"], **peak}
    each = lambda key, fmt: ", ".join(format(r[key], fmt) for r in per_run)  # noqa: E731
    say(f"results ({n:,} transactions, {per_run[0]['valid']:,} valid; {os.cpu_count()} cores; "
        f"median of {runs} run{'s' * (runs > 1)}, each run's figure in brackets):")
    say(f"  append        {med['append']:>10,.0f} tx/s of CPU [{each('append', ',.0f')}] (apply alone "
        f"{med['apply_only']:,.0f}, Raft log write alone {med['raft_write']:,.0f}; "
        f"{med['append_wall_s']:.0f} s wall)   target >= 50,000: {'met' if med['append'] >= 50_000 else 'NOT met'}")
    say(f"                reference: the same transactions into a bare SQLite table (a row each, a commit "
        f"per block) {med['reference']:,.0f} tx/s of CPU [{each('reference', ',.0f')}]; append is "
        f"{med['append_ratio']:.3f} of it [{each('append_ratio', '.3f')}]")
    say(f"  verify        {med['verify']:>10,.0f} tx/s [{each('verify', ',.0f')}] (wall, {med['verify_s']:.0f} s)   "
        f"single-core Ed25519 verify {med['ed25519']:,.0f}/s (libsodium, median of 6 around each audit; "
        f"OpenSSL {ref_ossl:,.0f}/s)   ratio {med['verify_ratio']:.2f} [{each('verify_ratio', '.2f')}]"
        f"   target >= 0.80: {'met' if med['verify_ratio'] >= 0.8 else 'NOT met'}")
    say(f"  reopen        {med['reopen_s']:>10.2f} s [{each('reopen_s', '.2f')}] (median of 3 per run, "
        f"a fresh process)   target < 2 s: {'met' if med['reopen_s'] < 2 else 'NOT met'}")
    say(f"  peak memory   append {peak['append_peak_mb']:.0f} MB; verify {peak['verify_peak_mb']:.0f} MB, each worker "
        f"<= {peak['verify_worker_peak_mb']:.0f} MB (highest of the runs)   target < 200 MB: "
        f"{'met' if max(peak.values()) < 200 else 'NOT met'}")
    if tmp is not None:
        tmp.cleanup()
    return res
