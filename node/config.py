"""A node's configuration: one TOML file, loaded once into a frozen dataclass and passed
down. Any problem is a `ConfigError` naming the file and the field, never a traceback."""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class RaftConfig:
    tick_ms: int = 100
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    snapshot_every_blocks: int = 500
    keep_entries: int = 200


@dataclass(frozen=True, slots=True)
class BlockConfig:
    max_txs: int = 500
    max_bytes: int = 1 << 20
    max_wait_ms: int = 2


@dataclass(frozen=True, slots=True)
class MempoolConfig:
    max_txs: int = 50_000
    gossip_ms: int = 2
    max_queue_ms: int = 400   # past what the cluster commits in this long, submissions get 503


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """What one signer or one client may take of a node, and how long a connection may
    hold it (see node.admission and node.httpguard)."""
    signer_tx_per_s: int = 5_000       # a signer's sustained rate of admitted transactions
    signer_burst: int = 20_000         # ... and the most it may send at once above that rate
    signer_max_pending: int = 12_500   # a signer's transactions waiting in this node's mempool
    client_tx_per_s: int = 20_000      # the same per client address, whatever the signers
    client_burst: int = 50_000
    client_connections: int = 512      # open HTTP connections per client address
    header_timeout_s: int = 10         # from connecting to the end of the first request's headers
    idle_timeout_s: int = 60           # from the end of one request to the end of the next one's headers
    body_timeout_s: int = 30           # to receive a request body
    read_workers: int = 2              # threads that serve heavy reads (history, full blocks, replays)
    read_queue: int = 16               # heavy reads that may wait for one; more get 503


@dataclass(frozen=True, slots=True)
class NodeConfig:
    node_id: str
    data_dir: Path
    genesis: Path
    node_key: Path      # Ed25519 PEM: signs block headers, and is the TLS identity
    tls_cert: Path      # the node's certificate, pinned in the genesis by its SHA-256
    api_listen: str
    peer_listen: str
    raft: RaftConfig = RaftConfig()
    blocks: BlockConfig = BlockConfig()
    mempool: MempoolConfig = MempoolConfig()
    limits: LimitsConfig = LimitsConfig()
    # HTTPS for the API and the pages (browsers sign only in a secure context): the
    # certificate and its key, PEM; plain HTTP when not given
    api_tls_cert: Path | None = None
    api_tls_key: Path | None = None


def read_private_key(path: Path) -> bytes:
    """A private key file's bytes. Refused, as ssh refuses an unprotected key file, when
    its group or anyone else may read or write it."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read this private key: {e.strerror}") from None
    if mode & 0o077:
        raise ConfigError(f"{path}: this private key may be read by others (mode {mode & 0o777:04o}); "
                          f"make it private: chmod 600 {path}")
    return data


def load_signing_key(path: str | Path):
    """The Ed25519 key of a PEM file (a node's, an org admin's, a customer's), read as
    `read_private_key` reads it; a ConfigError naming the file otherwise."""
    from crmledger.ledger.keys import SigningKey
    path = Path(path)
    try:
        return SigningKey.from_pem(read_private_key(path))
    except ConfigError:
        raise
    except ValueError:
        raise ConfigError(f"{path}: not an Ed25519 private key in PEM form") from None


_MAY_BE_ZERO = {"max_wait_ms"}  # 0: cut a block as soon as the previous one is applied


def _host_port(v: Any, where: str) -> str:
    if type(v) is not str or ":" not in v:
        raise ConfigError(f"{where}: expected \"host:port\"")
    host, _, port = v.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{where}: expected \"host:port\" with a port in 1-65535, got {v!r}")
    return v


def _section(cls, raw: Any, where: str):
    if raw is None:
        return cls()
    if type(raw) is not dict:
        raise ConfigError(f"{where}: expected a table")
    names = {f.name for f in fields(cls)}
    unknown = set(raw) - names
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    for k, v in raw.items():
        if type(v) is not int or v < (0 if k in _MAY_BE_ZERO else 1):
            kind = "a non-negative" if k in _MAY_BE_ZERO else "a positive"
            raise ConfigError(f"{where}.{k}: expected {kind} integer, got {v!r}")
    return cls(**raw)


def load_config(path: str | Path) -> NodeConfig:
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such file") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    base = p.resolve().parent

    def need(key: str) -> Any:
        if key not in raw:
            raise ConfigError(f"{p}: missing key '{key}'")
        return raw[key]

    def path_of(key: str) -> Path:
        v = need(key)
        if type(v) is not str or not v:
            raise ConfigError(f"{p}: {key}: expected a path")
        return (base / v).resolve()

    known = {"node_id", "data_dir", "genesis", "node_key", "tls_cert", "api", "peer", "raft", "blocks", "mempool",
             "limits"}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"{p}: unknown key(s) {', '.join(sorted(unknown))}")
    node_id = need("node_id")
    if type(node_id) is not str or not node_id:
        raise ConfigError(f"{p}: node_id: expected a name")
    if type(need("peer")) is not dict or set(raw["peer"]) != {"listen"}:
        raise ConfigError(f"{p}: [peer] must hold exactly 'listen'")
    api = need("api")
    if type(api) is not dict or "listen" not in api or set(api) - {"listen", "tls_cert", "tls_key"} \
            or ("tls_cert" in api) != ("tls_key" in api):
        raise ConfigError(f"{p}: [api] holds 'listen', and for HTTPS both 'tls_cert' and 'tls_key'")
    api_tls = [None, None]
    for i, k in enumerate(("tls_cert", "tls_key")):
        if k in api:
            if type(api[k]) is not str or not api[k]:
                raise ConfigError(f"{p}: [api] {k}: expected a path")
            api_tls[i] = (base / api[k]).resolve()
    raft = _section(RaftConfig, raw.get("raft"), f"{p}: [raft]")
    if raft.election_ticks <= raft.heartbeat_ticks:
        raise ConfigError(f"{p}: [raft] election_ticks must exceed heartbeat_ticks")
    return NodeConfig(
        node_id=node_id, data_dir=path_of("data_dir"), genesis=path_of("genesis"),
        node_key=path_of("node_key"), tls_cert=path_of("tls_cert"),
        api_listen=_host_port(raw["api"]["listen"], f"{p}: [api] listen"),
        peer_listen=_host_port(raw["peer"]["listen"], f"{p}: [peer] listen"),
        raft=raft, blocks=_section(BlockConfig, raw.get("blocks"), f"{p}: [blocks]"),
        mempool=_section(MempoolConfig, raw.get("mempool"), f"{p}: [mempool]"),
        limits=_section(LimitsConfig, raw.get("limits"), f"{p}: [limits]"),
        api_tls_cert=api_tls[0], api_tls_key=api_tls[1])


def _toml_value(v: Any) -> str:
    import json
    return json.dumps(v) if isinstance(v, str) else str(v)


def render_config(node_id: str, *, data_dir: str, genesis: str, node_key: str, tls_cert: str,
                  api_listen: str, peer_listen: str, tables: dict[str, dict[str, int]] | None = None,
                  api_tls: tuple[str, str] | None = None) -> str:
    """TOML text of a node's configuration (paths relative to the file's folder)."""
    lines = [f"node_id = {_toml_value(node_id)}", f"data_dir = {_toml_value(data_dir)}",
             f"genesis = {_toml_value(genesis)}", f"node_key = {_toml_value(node_key)}",
             f"tls_cert = {_toml_value(tls_cert)}", "", "[api]", f"listen = {_toml_value(api_listen)}"]
    if api_tls is not None:   # HTTPS: the API's certificate and key
        lines += [f"tls_cert = {_toml_value(api_tls[0])}", f"tls_key = {_toml_value(api_tls[1])}"]
    lines += ["", "[peer]", f"listen = {_toml_value(peer_listen)}"]
    defaults = {"raft": RaftConfig(), "blocks": BlockConfig(), "mempool": MempoolConfig(),
                "limits": LimitsConfig()}
    for name, d in defaults.items():
        lines += ["", f"[{name}]"]
        vals = {f.name: getattr(d, f.name) for f in fields(d)} | (tables or {}).get(name, {})
        lines += [f"{k} = {v}" for k, v in vals.items()]
    return "\n".join(lines) + "\n"
