"""`crmledger init` and node configuration files."""
import subprocess
import sys
from pathlib import Path

import pytest

from crmledger.node.ops.cluster_init import init_cluster
from crmledger.node.config import ConfigError, load_config
from crmledger.ledger.keys import SigningKey
from crmledger.node.ops.tlscerts import fingerprint_pem
from crmledger.storage.datadir import genesis_of

ROOT = Path(__file__).resolve().parent.parent


def test_init_lays_out_a_consortium(tmp_path):
    d = init_cluster(tmp_path / "c", 3, base_port=9400)
    g = genesis_of(d)
    assert sorted(g.orgs) == ["org1", "org2", "org3"] and sorted(g.nodes) == ["node1", "node2", "node3"]
    for i in (1, 2, 3):
        org_key = SigningKey.from_pem((d / "keys" / f"org{i}.pem").read_bytes())
        assert org_key.public_hex in g.orgs[f"org{i}"]
        assert (d / "keys" / f"org{i}.pem").stat().st_mode & 0o077 == 0   # private keys are private
        node = g.nodes[f"node{i}"]
        assert SigningKey.from_pem((d / "keys" / f"node{i}.pem").read_bytes()).public_hex == node.pubkey
        cert = (d / "keys" / f"node{i}.crt").read_bytes()
        assert fingerprint_pem(cert) == node.tls_cert_sha256 and node.tls_cert == cert.decode()
        cfg = load_config(d / f"node{i}.toml")
        assert cfg.node_id == f"node{i}" and cfg.api_listen == f"127.0.0.1:{9400 + i}"
        assert cfg.peer_listen == node.peer_addr and cfg.data_dir == (d / f"node{i}").resolve()
    with pytest.raises(FileExistsError):
        init_cluster(tmp_path / "c", 3)


def test_init_cli(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "crmledger.node.ops.cli", "init", "--nodes", "2",
                         "--out", str(tmp_path / "x")], cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0 and "2-node" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "crmledger.node.ops.cli", "init", "--nodes", "0",
                          "--out", str(tmp_path / "y")], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "--nodes" in bad.stderr and "Traceback" not in bad.stderr


GOOD = """node_id = "node1"
data_dir = "d"
genesis = "genesis.json"
node_key = "k.pem"
tls_cert = "k.crt"
[api]
listen = "127.0.0.1:8001"
[peer]
listen = "127.0.0.1:8101"
[raft]
tick_ms = 50
"""


@pytest.mark.parametrize("text, words", [
    (GOOD.replace('node_id = "node1"\n', ""), "missing key 'node_id'"),
    (GOOD.replace("tick_ms = 50", "tick_ms = -1"), "[raft].tick_ms"),
    (GOOD.replace("tick_ms = 50", "tick_ms = \"fast\""), "[raft].tick_ms"),
    (GOOD.replace("tick_ms = 50", "tik_ms = 5"), "unknown key(s) tik_ms"),
    (GOOD.replace('"127.0.0.1:8001"', '"8001"'), "[api] listen"),
    (GOOD.replace('"127.0.0.1:8001"', '"127.0.0.1:99999"'), "[api] listen"),
    (GOOD + "colour = 1\n", "unknown key(s) colour"),
    ("node_id = ", "not valid TOML"),
])
def test_bad_config_names_the_field(tmp_path, text, words):
    f = tmp_path / "n.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(f)
    assert words in str(e.value) and str(f) in str(e.value)


def test_good_config_and_defaults(tmp_path):
    f = tmp_path / "n.toml"
    f.write_text(GOOD)
    cfg = load_config(f)
    assert cfg.raft.tick_ms == 50 and cfg.raft.election_ticks == 10 and cfg.blocks.max_txs == 500
    assert cfg.genesis == (tmp_path / "genesis.json").resolve()
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.toml")


def test_the_example_consortium_in_configs_runs_once_init_fills_in_its_keys(tmp_path):
    from dataclasses import fields

    from crmledger.node.config import NodeConfig
    from crmledger.node.runtime import Node

    out = tmp_path / "mine"
    r = subprocess.run([sys.executable, "-m", "crmledger.node.ops.cli", "init", "--from", str(ROOT / "configs"),
                        "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    g = genesis_of(out)
    assert sorted(g.orgs) == ["acme", "globex", "initech"]
    assert g.org_info["globex"].contact["email"] == "dpo@globex.example"
    assert g.org_info["globex"].first_response_ms == 3_600_000
    confs = sorted((ROOT / "configs").glob("*.toml"))
    assert [c.name for c in confs] == ["acme-node.toml", "globex-node.toml", "initech-node.toml"]
    for conf in confs:
        text = conf.read_text()
        lines = text.splitlines()
        cfg = load_config(out / conf.name)   # as it is, once the keys exist
        sections = {f.name: getattr(cfg, f.name) for f in fields(NodeConfig)}
        for name, value in sections.items():   # every key is written out, each after a comment
            if name.startswith("api_tls_"):   # HTTPS is optional: shown as a commented example
                assert f"# {name[4:]} = " in text, (conf.name, name)
                continue
            keys = [f.name for f in fields(value)] if hasattr(value, "__dataclass_fields__") else \
                ["listen"] if name.endswith("_listen") else [name]
            for key in keys:
                at = next(i for i, line in enumerate(lines) if line.startswith(f"{key} ="))
                while " = " in lines[at - 1] and not lines[at - 1].startswith("#"):
                    at -= 1   # keys grouped under one comment
                assert lines[at - 1].startswith("#"), (conf.name, key)
        node = Node(cfg)
        try:
            assert node.genesis.nodes[cfg.node_id].org in g.orgs
        finally:
            node.close()
    # a second init into the same folder is refused, naming the file
    r = subprocess.run([sys.executable, "-m", "crmledger.node.ops.cli", "init", "--from", str(ROOT / "configs"),
                        "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 2 and "exists already" in r.stderr


def test_genesis_org_details_are_checked():
    from crmledger.ledger.genesis import GenesisError, genesis_from_dict
    from tests.ledger_kit import genesis_dict

    for bad in ({"contact": {"name": 5}}, {"contact": {"fax": "x"}}, {"service_levels": {"resolution_ms": 0}},
                {"service_levels": []}, {"motto": "x"}):
        g = genesis_dict()
        g["orgs"]["org1"].update(bad)
        with pytest.raises(GenesisError, match="orgs.org1"):
            genesis_from_dict(g)


def test_init_https_serves_the_api_and_pages_over_https(tmp_path):
    """`crmledger init --https`: each node serves HTTPS with a certificate made for it."""
    import ssl
    import subprocess
    import sys
    import urllib.request

    from crmledger.node.bench.localcluster import free_ports, wait_for
    base = free_ports([1, 101])
    d = tmp_path / "c"
    r = subprocess.run([sys.executable, "-m", "crmledger.node.ops.cli", "init", "--nodes", "1", "--out", str(d),
                        "--base-port", str(base), "--https"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    ctx = ssl.create_default_context(cafile=str(d / "keys" / "node1-api.crt"))
    with open(d / "node1.log", "wb") as log:
        p = subprocess.Popen([sys.executable, "-m", "crmledger.node.ops.cli", "node", "--config",
                              str(d / "node1.toml")], stdout=log, stderr=log, cwd=d)
    try:
        def get(path: str) -> bytes:
            with urllib.request.urlopen(f"https://127.0.0.1:{base + 1}{path}", context=ctx, timeout=5) as resp:
                return resp.read()
        wait_for(lambda: b"leader" in get("/v1/status"), 20, "the node to serve HTTPS")
        assert b"Customer portal" in get("/ui/portal.html")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{base + 1}/healthz", timeout=5).read()
            raise AssertionError("plain HTTP must not be served next to HTTPS")
        except (OSError, ValueError) as e:
            assert not isinstance(e, AssertionError)
    finally:
        p.terminate()
        p.wait(15)
