"""A cluster of real nodes on separate hosts (network namespaces), and the faults done to
it: partitions and heals (both ways and one way), random loss, kill -9, SIGSTOP/SIGCONT,
SIGTERM and restarts. Every fault is logged with its time."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from crmledger.node.bench.localcluster import LocalCluster
from crmledger.node.faults.netns import Hosts
from crmledger.node.faults.relay import MARK

RELAY_PORT = 7500   # + the receiving node's number: where a delay relay listens


class NetCluster(LocalCluster):
    """Node i runs on host i of `net`, with that host's address in its config and in the
    genesis, as a firm would deploy it."""

    def __init__(self, folder: Path, net: Hosts, **kw) -> None:
        self.net = net
        super().__init__(folder, net.n, hosts=[net.addr(i) for i in range(1, net.n + 1)], **kw)

    def launcher(self, i: int) -> list[str]:
        return self.net.exec_prefix(i)


class Nemesis:
    def __init__(self, cluster: NetCluster) -> None:
        self.c, self.net = cluster, cluster.net
        self.t0 = time.monotonic()
        self.log: list[tuple[float, str]] = []
        self.stopped: set[int] = set()   # SIGSTOPped
        self.down: set[int] = set()      # killed or terminated, to be restarted
        self.relays: list[subprocess.Popen] = []

    def _note(self, what: str) -> None:
        self.log.append((time.monotonic() - self.t0, what))

    @property
    def faults(self) -> int:
        return sum(1 for _, w in self.log if not w.startswith(("heal", "restart", "resume")))

    # -- the network ---------------------------------------------------------------------------
    def _rules(self, i: int, lines: list[str]) -> None:
        self.net.nft(i, "flush chain inet crl cut_in\nflush chain inet crl cut_out\n" + "\n".join(lines) + "\n")

    def _addrs(self, nodes) -> str:
        return "{ " + ", ".join(self.net.addr(j) for j in sorted(nodes)) + " }"

    def partition(self, *groups: set[int]) -> None:
        """Nodes reach only the nodes of their own group (both ways)."""
        everyone = set(range(1, self.c.n + 1))
        for g in groups:
            for i in g:
                other = everyone - g
                self._rules(i, [f"add rule inet crl cut_in ip saddr {self._addrs(other)} drop",
                                f"add rule inet crl cut_out ip daddr {self._addrs(other)} drop"] if other else [])
        self._note("partition " + " | ".join(",".join(map(str, sorted(g))) for g in groups))

    def one_way(self, frm: int, to: int) -> None:
        """Nothing `frm` sends reaches `to`; what `to` sends still reaches `frm`."""
        self._rules(frm, [f"add rule inet crl cut_out ip daddr {self.net.addr(to)} drop"])
        self._note(f"one-way cut {frm}->{to}")

    def loss(self, percent: int) -> None:
        """Every packet between nodes is dropped with probability `percent`/100."""
        for i in range(1, self.c.n + 1):
            others = set(range(1, self.c.n + 1)) - {i}
            self._rules(i, [f"add rule inet crl cut_out ip daddr {self._addrs(others)} "
                            f"numgen random mod 100 < {percent} drop"])
        self._note(f"loss {percent}%")

    def delay(self, frm: int, to: int, ms: float) -> None:
        """What `frm` sends to `to` arrives `ms` later: frm's connections to to's peer port
        are steered (nftables, nat) into a relay on frm's host that holds each chunk that
        long (relay.py); frm's open connections to it are ended, so that it dials again."""
        port, rport = self.c.base + 100 + to, RELAY_PORT + to
        relay = subprocess.Popen([*self.net.exec_prefix(frm), sys.executable, "-m", "crmledger.node.faults.relay",
                                  "--listen", f"{self.net.addr(frm)}:{rport}", "--to", f"{self.net.addr(to)}:{port}",
                                  "--delay-ms", str(ms)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.relays.append(relay)
        if relay.stdout.readline().strip() != "ready":
            raise RuntimeError("the delay relay did not start")
        self.net.nft(frm, f"add rule ip crlnat out meta mark != {MARK} ip daddr {self.net.addr(to)} tcp dport {port} "
                          f"dnat to {self.net.addr(frm)}:{rport}\n")
        subprocess.run([*self.net.exec_prefix(frm), "ss", "-K", "dst", self.net.addr(to), "dport", "=", str(port)],
                       capture_output=True)
        self._note(f"delay {frm}->{to} {ms:g} ms")

    def heal_network(self) -> None:
        for i in range(1, self.c.n + 1):
            self._rules(i, [])
            if self.relays:
                self.net.nft(i, "flush chain ip crlnat out\n")
        for relay in self.relays:   # the connections through it end with it, and are dialled again
            relay.terminate()
            relay.wait()
        self.relays.clear()
        self._note("heal network")

    # -- the processes -------------------------------------------------------------------------
    def kill(self, i: int) -> None:
        self.c.stop(i, signal.SIGKILL)
        self.down.add(i)
        self._note(f"kill -9 node{i}")

    def terminate(self, i: int) -> None:
        self.c.stop(i, signal.SIGTERM)
        self.down.add(i)
        self._note(f"SIGTERM node{i}")

    def pause(self, i: int) -> None:
        self.c.procs[i].send_signal(signal.SIGSTOP)
        self.stopped.add(i)
        self._note(f"SIGSTOP node{i}")

    def resume(self, i: int) -> None:
        self.c.procs[i].send_signal(signal.SIGCONT)
        self.stopped.discard(i)
        self._note(f"resume node{i}")

    def restart(self, i: int) -> None:
        self.c.start(i)
        self.down.discard(i)
        self._note(f"restart node{i}")

    def close(self) -> None:
        """Resume what is paused and stop the delay relays (the nodes are the cluster's to stop)."""
        for i in list(self.stopped):
            self.resume(i)
        for relay in self.relays:
            relay.kill()
            relay.wait()
        self.relays.clear()

    def heal(self) -> None:
        """Undo every fault: links healed, paused nodes resumed, stopped nodes restarted."""
        self.heal_network()
        for i in sorted(self.stopped):
            self.resume(i)
        for i in sorted(self.down):
            self.restart(i)
