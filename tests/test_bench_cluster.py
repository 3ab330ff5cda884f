"""`crmledger bench` end to end at a small scale: every load shape gives committed tx/s,
latency and CPU per transaction from the node processes' counters, and the table of
where a transaction's time goes is filled from the nodes' own stage counters."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGE_ROWS = ("HTTP receive and decode", "signature check", "gossip: batched for the peers",
              "wait for the block cut", "replication, both fsyncs", "apply (every node)", "reply to the client")


def test_bench_prints_cpu_per_transaction_and_the_stage_table():
    out = subprocess.run([sys.executable, "-m", "crmledger.node.ops.cli", "bench", "--runs", "1", "--scale", "0.02"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for load in ("single", "batch"):
        for c in (1, 16, 64) if load == "single" else (1, 16, 64, 256):
            row = re.search(rf"^{load}.* c={c} +([\d,]+) +([\d.]+) +([\d.]+) +([\d,]+)$", text, re.M)
            assert row, (load, c, text)
            rate, cpu = int(row[1].replace(",", "")), int(row[4].replace(",", ""))
            assert rate > 0 and cpu > 0
    for stage in STAGE_ROWS:
        row = re.search(rf"^{re.escape(stage)}.*$", text, re.M)
        assert row, (stage, text)
        assert re.search(r"\d+\.\d\d", row[0]), row[0]   # measured for at least one load
    # the entry node's stages are measured for every load
    receive = re.search(r"^HTTP receive and decode +(.*)$", text, re.M)[1].split()
    assert len(receive) == 7 and "-" not in receive


def _cli(*args, timeout=600) -> str:
    out = subprocess.run([sys.executable, "-m", "crmledger.node.ops.cli", *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_bench_failover_prints_the_time_from_each_failure_to_the_next_commit():
    text = _cli("bench-failover", "--kills", "2", "--stops", "1")
    killed = re.search(r"^leader killed \(SIGKILL\) x2: median ([\d,]+) ms.*\n  each: ([\d,]+), ([\d,]+)$", text, re.M)
    assert killed, text
    assert re.search(r"^leader stopped \(SIGSTOP\) x1: median [\d,]+ ms", text, re.M), text


def test_bench_catchup_prints_both_ends_of_the_chain_the_rejoin_and_the_restart():
    text = _cli("bench-catchup", "--txs", "1000", "--runs", "1")
    for mode in ("single", "batch"):
        row = re.search(rf"^{mode} +([\d,]+) tx/s p99 [\d,]+ ms [\d,]+ µs +([\d,]+) tx/s p99 [\d,]+ ms [\d,]+ µs$",
                        text, re.M)
        assert row, (mode, text)
    assert len(re.findall(r"^node\d memory: \d+ MB on the empty chain, \d+ MB at the end$", text, re.M)) == 2
    assert re.search(r"^node\d, away during the load, rejoined and served at the head in [\d.]+ s", text, re.M)
    assert re.search(r"^node\d, restarted with the whole chain, served at the head in [\d.]+ s", text, re.M)
