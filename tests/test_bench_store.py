"""`crmledger bench-store` end to end on a small chain: it builds the chain, appends it,
reopens and audits it (here twice), and prints every figure with its reference and
target, as the median of the runs beside each run's own."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_bench_store_runs_and_prints_each_figure(tmp_path):
    out = subprocess.run([sys.executable, "-m", "crmledger.node.ops.cli", "bench-store", "--transactions", "3000",
                          "--block", "100", "--runs", "2", "--workdir", str(tmp_path / "w")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "results (3,000 transactions" in text
    for figure in ("append", "reference: the same transactions", "verify", "reopen", "peak memory"):
        assert figure in text, (figure, text)
    assert text.count("target") == 4
    assert text.count("  run: append") == 2 and "median of 2 runs" in text
    # each figure is printed beside both runs' own: "median [run 1, run 2]"
    assert re.search(r"append +[\d,]+ tx/s of CPU \[[\d,]+, [\d,]+\]", text), text
    assert not list((tmp_path / "w").glob("run*")), "each run's store is removed after it is measured"


def test_bench_store_refuses_a_run_count_below_one(capsys):
    from crmledger.node.ops.cli import main
    with pytest.raises(SystemExit) as e:
        main(["bench-store", "--runs", "0"])
    assert e.value.code == 2 and "--runs must be positive" in capsys.readouterr().err
