"""The `crmledger` command."""
from __future__ import annotations

import argparse
import importlib
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="crmledger", description="A consortium ledger of customer records.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench-raft", help="benchmark the Raft core alone (no I/O)")
    b.add_argument("--entries", type=int, default=200_000)
    b.add_argument("--batch", type=int, default=256, help="entries per proposal")
    b.add_argument("--size", type=int, default=128, help="bytes per entry")
    b.add_argument("--runs", type=int, default=5)
    bc = sub.add_parser("bench", help="drive a local 3-node cluster over HTTP (and a local etcd as reference)")
    bc.add_argument("--reference", choices=["etcd"], default=None)
    bc.add_argument("--runs", type=int, default=3, help="runs per load shape (the median is printed)")
    bc.add_argument("--scale", type=float, default=1.0, help="multiplies the transactions per phase")
    bi = sub.add_parser("bench-import", help="CSV rows imported per second into a local 3-node cluster")
    bi.add_argument("--rows", type=int, default=100_000)
    bi.add_argument("--runs", type=int, default=3)
    bi.add_argument("--batch", type=int, default=500)
    bk = sub.add_parser("bench-catchup", help="a long chain on a local cluster: figures at its end, a node "
                        "rejoining after it, a node restarted with it")
    bk.add_argument("--txs", type=int, default=1_000_000, help="transactions committed while one node is away")
    bk.add_argument("--runs", type=int, default=3, help="runs of each load on the empty and the long chain")
    bf = sub.add_parser("bench-failover", help="from a leader's failure to the first new commit, on a local cluster")
    bf.add_argument("--kills", type=int, default=20, help="times the leader is killed (SIGKILL)")
    bf.add_argument("--stops", type=int, default=3, help="times the leader is stopped (SIGSTOP), for contrast")
    cp = sub.add_parser("campaign", help="a seeded random fault schedule against nodes on separate hosts (network "
                        "namespaces; needs root), under client load; then the history is checked")
    cp.add_argument("--seed", type=int, default=None, help="the schedule's seed (default: a random one, printed)")
    cp.add_argument("--nodes", type=int, default=5, choices=range(3, 10), metavar="3..9")
    cp.add_argument("--minutes", type=float, default=30.0)
    cp.add_argument("--keep", default=None, help="a folder to keep the nodes' data folders and logs in")
    sk = sub.add_parser("soak", help="a local 3-node cluster at ~70%% of its maximum for a set time, the leader "
                        "killed every minute: throughput, p99 and memory per minute, and what was lost")
    sk.add_argument("--minutes", type=float, default=10.0)
    sk.add_argument("--kill-every", type=float, default=60.0, help="seconds between two kills of the leader")
    sk.add_argument("--load", type=float, default=0.7, help="the share of the measured maximum to send")
    sk.add_argument("--chart", default="soak.png", help="where the PNG chart goes")
    s = sub.add_parser("bench-store", help="benchmark the durable store and verify on a long chain")
    s.add_argument("--transactions", type=int, default=1_000_000)
    s.add_argument("--block", type=int, default=500, help="transactions per block")
    s.add_argument("--workdir", default=None, help="where to build the chain (default: a temporary folder)")
    s.add_argument("--runs", type=int, default=3, help="appends and audits of the chain (the median is printed)")
    n = sub.add_parser("node", help="run one node in the foreground")
    n.add_argument("--config", required=True, help="the node's TOML file")
    i = sub.add_parser("init", help="create genesis, keys, certificates and node configs for a local consortium")
    i.add_argument("--nodes", type=int, default=3)
    i.add_argument("--from", dest="template", default=None,
                   help="a folder describing the consortium (genesis.json without keys, node configs), "
                        "e.g. configs/: its keys are made and filled in")
    i.add_argument("--out", required=True, help="folder to create them in")
    i.add_argument("--base-port", type=int, default=8000, help="node K serves HTTP on BASE_PORT+K")
    i.add_argument("--peer-base-port", type=int, default=None, help="node K's peer port (default BASE_PORT+100+K)")
    i.add_argument("--host", default="127.0.0.1")
    i.add_argument("--https", action="store_true",
                   help="serve each node's API and pages over HTTPS, with a certificate made for it "
                        "(keys/nodeK-api.crt: trust it in the browsers that use the pages)")
    st = sub.add_parser("status", help="a table of the cluster's nodes")
    st.add_argument("--cluster-dir", default=".cluster", help="folder with genesis.json")
    kg = sub.add_parser("keygen", help="make an Ed25519 key (PEM, PKCS#8); prints its public key")
    kg.add_argument("--out", required=True)
    sb = sub.add_parser("submit", help="sign a transaction with a key file and send it")
    sb.add_argument("--node", default="127.0.0.1:8001", help="host:port of a node's HTTP API")
    sb.add_argument("--key", required=True, help="PEM key file of the signer")
    sb.add_argument("--type", required=True, dest="type_")
    sb.add_argument("--org", default="", help="the org sent for ('' for a customer's own)")
    sb.add_argument("--payload", required=True, help="the payload as JSON")
    sb.add_argument("--no-wait", action="store_true", help="do not wait for the commit")
    sb.add_argument("--print", action="store_true", dest="print_only",
                    help="print the signed envelope (JSON) instead of sending it")
    sb.add_argument("--private", default=None,
                    help="personal data sent beside the envelope: a profile as a JSON map (customer.register, "
                         "customer.update) or a text (tickets, reviews); its salted hash goes into the payload")
    rd = sub.add_parser("read", help="a GET signed with a key file (an org's or a customer's)")
    rd.add_argument("--node", default="127.0.0.1:8001", help="host:port of a node's HTTP API")
    rd.add_argument("--key", required=True, help="PEM key file of the reader")
    rd.add_argument("path", help="the path with its query, e.g. '/v1/customers/alice?purpose=dpv:CustomerCare'")
    im = sub.add_parser("import", help="register an existing CRM's customers, with their profiles (CSV or JSON "
                                       "lines); exactly once however often it runs")
    src = im.add_mutually_exclusive_group(required=True)
    src.add_argument("--csv", help="a CSV file with a header row")
    src.add_argument("--jsonl", help="a file of JSON objects, one per line")
    im.add_argument("--org", required=True, help="the org the customers are registered for")
    im.add_argument("--key", required=True, help="PEM key file of an admin or agent of the org")
    im.add_argument("--node", action="append", required=True,
                    help="host:port or URL of a node (repeat for more: a node down is skipped)")
    im.add_argument("--map", default=None, help='a JSON mapping {"customer_id": COLUMN, "fields": {FIELD: COLUMN}, '
                                                '"customer_key": COLUMN}')
    im.add_argument("--id-column", default=None, help="the column holding the customer id")
    im.add_argument("--field", action="append", default=[], help="FIELD=COLUMN: a profile field and its column")
    im.add_argument("--batch", type=int, default=500, help="registrations per request")
    im.add_argument("--rejects", default=None, help="where refused rows go (default: FILE.rejects.csv)")
    im.add_argument("--quiet", action="store_true", help="no progress bar")
    from . import org_cmds
    org_cmds.add_parser(sub)
    jn = sub.add_parser("join", help="start a new firm's node once the orgs voted it in: it reads the consortium "
                                     "from a running node, then catches up and joins the Raft group")
    jn.add_argument("--from", dest="sources", action="append", required=True,
                    help="host:port of a running node's API (repeat for more)")
    jn.add_argument("--config", required=True, help="the new node's configuration")
    af = sub.add_parser("add-firm", help="local clusters: make the next firm's keys and node config, propose it "
                                         "and vote it in with the other orgs' keys (prints its number)")
    af.add_argument("--cluster-dir", default=".cluster")
    af.add_argument("--node", default=None, help="host:port of a node to send to (default: any that answers)")
    v = sub.add_parser("verify", help="audit a node's chain offline (SPEC §6)")
    v.add_argument("--data-dir", required=True, help="the node's data directory")
    v.add_argument("--workers", type=int, default=None, help="processes checking signatures (default: all cores)")
    a = ap.parse_args(argv)
    if a.cmd == "bench" and (a.runs <= 0 or a.scale <= 0):
        ap.error("--runs and --scale must be positive")
    benches = {"bench": ("cluster", lambda: (a.reference, a.runs, a.scale)),   # the local-cluster benches
               "bench-import": ("importbench", lambda: (a.rows, a.runs, a.batch)),
               "bench-catchup": ("catchup", lambda: (a.txs, a.runs)),
               "bench-failover": ("failover", lambda: (a.kills, a.stops))}
    if a.cmd in benches:
        module, args = benches[a.cmd]
        run_bench = importlib.import_module(f"crmledger.node.bench.{module}").run
        try:
            run_bench(*args())
        except (RuntimeError, OSError, TimeoutError, ValueError) as e:
            print(f"{a.cmd}: {e}", file=sys.stderr)
            return 1
        return 0
    if a.cmd == "soak":
        if a.minutes <= 0 or a.kill_every <= 5 or not 0 < a.load <= 1:
            ap.error("need --minutes > 0, --kill-every > 5 and 0 < --load <= 1")
        from crmledger.node.faults.soak import run as run_soak
        try:
            return run_soak(a.minutes, a.kill_every, a.load, a.chart)
        except (RuntimeError, OSError, TimeoutError) as e:
            print(f"soak: {e}", file=sys.stderr)
            return 1
    if a.cmd == "campaign":
        from crmledger.node.faults.campaign import main as run_campaign
        from crmledger.node.faults.netns import NetnsError
        if a.minutes <= 0:
            ap.error("--minutes must be positive")
        try:
            return run_campaign(a.seed, a.nodes, a.minutes, a.keep)
        except NetnsError as e:
            print(f"campaign: {e}", file=sys.stderr)
            return 1
    if a.cmd == "bench-store":
        from crmledger.node.bench.store import run as run_store
        if a.transactions < a.block or a.block <= 0:
            ap.error("need --transactions >= --block > 0")
        if a.runs <= 0:
            ap.error("--runs must be positive")
        run_store(a.transactions, a.block, workdir=a.workdir, runs=a.runs)
        return 0
    if a.cmd in ("status", "keygen", "submit", "read"):
        from . import client_cmds as client
        if a.cmd == "status":
            return client.print_status(a.cluster_dir)
        if a.cmd == "keygen":
            return client.keygen(a.out)
        if a.cmd == "read":
            return client.read(a.node, a.key, a.path)
        return client.submit(a.node, a.key, a.type_, a.org, a.payload, not a.no_wait, a.print_only, a.private)
    if a.cmd == "import":
        from .crm_import import Mapping, MappingError, run as run_import
        try:
            mapping = Mapping.load(a.map, a.id_column, a.field)
        except MappingError as e:
            print(f"import: {e}", file=sys.stderr)
            return 2
        if not 1 <= a.batch <= 5000:
            print("import: --batch is 1 to 5000", file=sys.stderr)
            return 2
        return run_import(a.csv or a.jsonl, "csv" if a.csv else "jsonl", a.org, a.key, a.node, mapping,
                          batch=a.batch, reject_file=a.rejects, quiet=a.quiet)
    if a.cmd == "org":
        return org_cmds.run(a)
    if a.cmd in ("join", "add-firm"):
        from . import join
        return join.join(a.config, a.sources) if a.cmd == "join" else join.add_firm(a.cluster_dir, a.node)
    if a.cmd == "node":
        from crmledger.node.main import run as run_node
        return run_node(a.config)
    if a.cmd == "init":
        from .cluster_init import init_cluster, init_from
        from crmledger.ledger.genesis import GenesisError
        try:
            if a.template is not None:
                d = init_from(a.template, a.out)
            else:
                d = init_cluster(a.out, a.nodes, base_port=a.base_port, peer_base_port=a.peer_base_port,
                                 host=a.host, https=a.https)
        except (ValueError, FileExistsError, OSError, GenesisError) as e:
            print(f"init: {e}", file=sys.stderr)
            return 2
        what = "the consortium" if a.template is not None else f"a {a.nodes}-node consortium"
        print(f"created {what} in {d}")
        return 0
    if a.cmd == "verify":
        from .verify import main as verify_main
        if a.workers is not None and a.workers <= 0:
            ap.error("--workers must be positive")
        return verify_main(a.data_dir, a.workers)
    if a.cmd == "bench-raft":
        from crmledger.node.bench.raft import run
        for name in ("entries", "batch", "size", "runs"):
            if getattr(a, name) <= 0:
                ap.error(f"--{name} must be positive")
        run(a.entries, a.batch, a.size, a.runs)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
