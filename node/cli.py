"""The `crmledger` command."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="crmledger", description="A consortium ledger of customer records.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench-raft", help="benchmark the Raft core alone (no I/O)")
    b.add_argument("--entries", type=int, default=200_000)
    b.add_argument("--batch", type=int, default=256, help="entries per proposal")
    b.add_argument("--size", type=int, default=128, help="bytes per entry")
    b.add_argument("--runs", type=int, default=5)
    a = ap.parse_args(argv)
    if a.cmd == "bench-raft":
        from .bench_raft import run
        for name in ("entries", "batch", "size", "runs"):
            if getattr(a, name) <= 0:
                ap.error(f"--{name} must be positive")
        run(a.entries, a.batch, a.size, a.runs)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
