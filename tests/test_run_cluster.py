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
    try:
        out = _run(env, "start")
        assert out.returncode == 0, out.stderr
        assert "leader" in out.stdout and f"http://127.0.0.1:{base + 1}" in out.stdout
        for f in ("genesis.json", "keys/org1.pem", "node1.toml", "node3.pid", "node2.log"):
            assert (cl / f).exists(), f
        pids = {i: int((cl / f"node{i}.pid").read_text()) for i in (1, 2, 3)}
        os.kill(pids[2], signal.SIGKILL)
        wait_for(lambda: subprocess.run(["kill", "-0", str(pids[2])]).returncode != 0, 10, "node 2 to die")
        out = _run(env, "start")
        assert out.returncode == 0, out.stderr
        new = {i: int((cl / f"node{i}.pid").read_text()) for i in (1, 2, 3)}
        assert new[1] == pids[1] and new[3] == pids[3] and new[2] != pids[2]   # only the missing one
        st = _run(env, "status")
        assert st.returncode == 0 and st.stdout.count("127.0.0.1:") == 3
    finally:
        out = _run(env, "stop")
    assert out.returncode == 0 and "stopped 3" in out.stdout
    assert not list(cl.glob("*.pid"))
