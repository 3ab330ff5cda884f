"""Separate hosts on one machine: each node in a network namespace of its own, with its
own address, joined by veth pairs to a bridge in a "switch" namespace; the machine
itself is one more host on that bridge (the client's). Addresses come from 198.18.0.0/15,
the range set aside for network tests (RFC 2544), one /24 per harness.

Everything made here is removed by `close()`, which the harness's users call in a
`finally` (and a harness left behind by a killed run is removed by the next one: its
names carry the PID that made them). Needs root, `ip` (iproute2) and `nft` (nftables).
"""
from __future__ import annotations

import fcntl
import os
import re
import subprocess
from pathlib import Path

LOCK = Path("/tmp/crmledger-netns.lock")
PREFIX = "crl"


class NetnsError(RuntimeError):
    pass


def _run(*args: str, check: bool = True, input_: str | None = None) -> subprocess.CompletedProcess:
    r = subprocess.run(list(args), capture_output=True, text=True, input=input_)
    if check and r.returncode != 0:
        raise NetnsError(f"{' '.join(args)}: {r.stderr.strip() or r.stdout.strip()}")
    return r


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _sweep_abandoned() -> None:
    """Remove the namespaces and links of harnesses whose process is gone."""
    for name in _run("ip", "netns", "list", check=False).stdout.split():
        m = re.fullmatch(rf"{PREFIX}(\d+)[a-z](\d+)?", name)
        if m and not _alive(int(m.group(1))):
            _run("ip", "netns", "del", name, check=False)
    for line in _run("ip", "-o", "link", "show", check=False).stdout.splitlines():
        m = re.match(rf"\d+: ({PREFIX}(\d+)h)[@:]", line)
        if m and not _alive(int(m.group(2))):
            _run("ip", "link", "del", m.group(1), check=False)


def check_possible() -> str | None:
    """Why namespaces cannot be made here, in one line; None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root (run the tests as root)"
    for tool in ("ip", "nft"):
        if _run("sh", "-c", f"command -v {tool}", check=False).returncode != 0:
            return f"`{tool}` is missing (scripts/system_deps.sh installs it)"
    return None


class Hosts:
    """`n` hosts 198.18.S.1 … 198.18.S.n and the machine at 198.18.S.254."""

    def __init__(self, n: int) -> None:
        why = check_possible()
        if why:
            raise NetnsError(why)
        self.n, self.pid = n, os.getpid()
        self.tag = f"{PREFIX}{self.pid}"
        self.made: list[str] = []
        self.host_link: str | None = None
        with open(LOCK, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)   # one harness set up at a time: subnets differ
            _sweep_abandoned()
            used = set(re.findall(r"198\.18\.(\d+)\.", _run("ip", "-o", "addr", "show").stdout))
            free = [s for s in range(1, 255) if str(s) not in used]
            if not free:
                raise NetnsError("no free 198.18.S.0/24 subnet")
            self.subnet = free[(self.pid * 7) % len(free)]
            try:
                self._make()
            except BaseException:
                self.close()
                raise

    # names and addresses
    def ns(self, i: int) -> str:
        return f"{self.tag}n{i}"

    def addr(self, i: int) -> str:
        return f"198.18.{self.subnet}.{i}"

    @property
    def client_addr(self) -> str:
        return f"198.18.{self.subnet}.254"

    def _make(self) -> None:
        sw = f"{self.tag}s"
        _run("ip", "netns", "add", sw)
        self.made.append(sw)
        _run("ip", "-n", sw, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", sw, "link", "set", "br0", "up")
        for i in range(1, self.n + 1):
            ns, outer = self.ns(i), f"{self.tag}v{i}"
            _run("ip", "netns", "add", ns)
            self.made.append(ns)
            _run("ip", "link", "add", outer, "type", "veth", "peer", "name", f"{self.tag}e{i}")
            _run("ip", "link", "set", f"{self.tag}e{i}", "netns", ns)
            _run("ip", "link", "set", outer, "netns", sw)
            _run("ip", "-n", ns, "link", "set", f"{self.tag}e{i}", "name", "eth0")
            _run("ip", "-n", ns, "addr", "add", f"{self.addr(i)}/24", "dev", "eth0")
            _run("ip", "-n", ns, "link", "set", "eth0", "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            _run("ip", "-n", sw, "link", "set", outer, "master", "br0")
            _run("ip", "-n", sw, "link", "set", outer, "up")
            _run("ip", "netns", "exec", ns, "nft", "-f", "-", input_=_BASE_RULES)
        self.host_link = f"{self.tag}h"
        _run("ip", "link", "add", self.host_link, "type", "veth", "peer", "name", f"{self.tag}hb")
        _run("ip", "link", "set", f"{self.tag}hb", "netns", sw)
        _run("ip", "addr", "add", f"{self.client_addr}/24", "dev", self.host_link)
        _run("ip", "link", "set", self.host_link, "up")
        _run("ip", "-n", sw, "link", "set", f"{self.tag}hb", "master", "br0")
        _run("ip", "-n", sw, "link", "set", f"{self.tag}hb", "up")

    def exec_prefix(self, i: int) -> list[str]:
        """The command prefix that runs a program on host i."""
        return ["ip", "netns", "exec", self.ns(i)]

    # the packet filter of host i (table inet crl: chains cut_in, cut_out; table ip crlnat:
    # chain out, which steers connections into a delay relay)
    def nft(self, i: int, script: str) -> None:
        _run("ip", "netns", "exec", self.ns(i), "nft", "-f", "-", input_=script)

    def close(self) -> None:
        for ns in reversed(self.made):
            _run("ip", "netns", "del", ns, check=False)
        self.made.clear()
        if self.host_link:
            _run("ip", "link", "del", self.host_link, check=False)   # gone with the switch, or now
            self.host_link = None

    def __enter__(self) -> "Hosts":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_BASE_RULES = """
table inet crl {
    chain cut_in { type filter hook input priority 0; policy accept; }
    chain cut_out { type filter hook output priority 0; policy accept; }
}
table ip crlnat {
    chain out { type nat hook output priority -100; policy accept; }
}
"""
