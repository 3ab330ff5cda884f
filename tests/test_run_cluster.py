"""scripts/run_cluster.sh (SPEC §5): start returns once a leader is elected; start again
restarts only what is not running; status; stop. It runs with the test environment's
virtualenv, so it does not install anything here."""
import os
import signal
import subprocess
import sys
from pathlib import Path

from crmledger.node.bench.localcluster import free_ports, wait_for

ROOT = Path(__file__).resolve().parent.parent


def _run(env, *args, timeout=90):
    return subprocess.run(["bash", str(ROOT / "scripts" / "run_cluster.sh"), *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_start_status_restart_missing_and_stop(tmp_path):
    base = free_ports([1, 2, 3, 101, 102, 103])
    env = {**os.environ, "CLUSTER_DIR": str(tmp_path / "cl"), "VENV": str(Path(sys.executable).parent.parent),
           "BASE_PORT": str(base)}
    cl = tmp_path / "cl"
    stranger = subprocess.Popen(["true"])
    try:
        out = _run(env, "start")
        assert out.returncode == 0, out.stderr
        assert "leader" in out.stdout and f"http://127.0.0.1:{base + 1}" in out.stdout
        for f in ("genesis.json", "keys/org1.pem", "node1.toml", "node3.pid", "node2.log"):
            assert (cl / f).exists(), f
        pids = {i: int((cl / f"node{i}.pid").read_text()) for i in (1, 2, 3)}
        # kill -9, then start at once, as an operator would: the dead node may still be a
        # zombie (kill -0 says it is there); it is started again all the same
        os.kill(pids[2], signal.SIGKILL)
        out = _run(env, "start")
        assert out.returncode == 0, out.stderr
        new = {i: int((cl / f"node{i}.pid").read_text()) for i in (1, 2, 3)}
        assert new[1] == pids[1] and new[3] == pids[3] and new[2] != pids[2]   # only the missing one
        st = _run(env, "status")
        assert st.returncode == 0 and st.stdout.count("127.0.0.1:") == 3
        # a node's PID now used by another program: that program is neither the node nor stopped
        os.kill(pids[3], signal.SIGKILL)
        wait_for(lambda: not Path(f"/proc/{pids[3]}").exists() or
                 Path(f"/proc/{pids[3]}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z", 10, "node 3 to die")
        stranger = subprocess.Popen(["sleep", "120"])
        (cl / "node3.pid").write_text(f"{stranger.pid}\n")
        out = _run(env, "start")
        assert out.returncode == 0, out.stderr
        assert int((cl / "node3.pid").read_text()) != stranger.pid
    finally:
        out = _run(env, "stop")
    try:
        assert out.returncode == 0 and "stopped 3" in out.stdout
        assert not list(cl.glob("*.pid"))
        assert stranger.poll() is None, "stop must not signal a program that is not a node"
    finally:
        stranger.kill()
        stranger.wait()


def test_add_votes_a_firm_in_and_its_node_joins(tmp_path):
    base = free_ports([1, 2, 3, 4, 101, 102, 103, 104])
    env = {**os.environ, "CLUSTER_DIR": str(tmp_path / "cl"), "VENV": str(Path(sys.executable).parent.parent),
           "BASE_PORT": str(base)}
    try:
        assert _run(env, "start").returncode == 0
        out = _run(env, "add", timeout=120)
        assert out.returncode == 0, out.stderr
        assert "node4 (org4) joined" in out.stdout
        st = _run(env, "status")
        assert st.returncode == 0 and st.stdout.count("127.0.0.1:") == 4, st.stdout
        assert "node4" in st.stdout and "down" not in st.stdout
        # a later start starts the fourth node as it does the others
        pid4 = int((tmp_path / "cl" / "node4.pid").read_text())
        os.kill(pid4, signal.SIGTERM)
        wait_for(lambda: not Path(f"/proc/{pid4}").exists() or
                 Path(f"/proc/{pid4}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z", 20, "node 4 to stop")
        assert _run(env, "start").returncode == 0
        wait_for(lambda: _run(env, "status").stdout.count(" follower ") + _run(env, "status").stdout.count(" leader ")
                 == 4, 30, "four nodes serving")
    finally:
        out = _run(env, "stop")
    assert "stopped 4" in out.stdout
