#!/usr/bin/env bash
# A local crmledger cluster (SPEC §5).
#   scripts/run_cluster.sh start [N]   create (if absent) and start N nodes (default 3), return once a leader is elected
#   scripts/run_cluster.sh stop        SIGTERM every node, wait for them to exit
#   scripts/run_cluster.sh status      role, term and height of each node
#   scripts/run_cluster.sh add         vote the next firm into the running cluster (every org's key is here)
#                                      and start its node, which joins, catches up and becomes a voter
#   scripts/run_cluster.sh [N]         start, then follow the logs until Ctrl-C, which stops the cluster
# Environment: CLUSTER_DIR (./.cluster), VENV (./.venv), BASE_PORT (8000: node K serves HTTP on BASE_PORT+K).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CLUSTER_DIR=${CLUSTER_DIR:-./.cluster}
VENV=${VENV:-./.venv}
BASE_PORT=${BASE_PORT:-8000}
PYTHON=${PYTHON:-python3}

ensure_venv() {
    if [ ! -x "$VENV/bin/crmledger" ]; then
        echo "creating $VENV and installing crmledger ..." >&2
        "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "need Python 3.11+" >&2; exit 1; }
        "$PYTHON" -m venv "$VENV"
        "$VENV/bin/python" -m pip install -q --upgrade pip
        "$VENV/bin/python" -m pip install -q "$ROOT"
    fi
}

node_count() { ls "$CLUSTER_DIR"/node*.toml 2>/dev/null | wc -l; }

proc_alive() {  # is process $1 alive? (a zombie is not: kill -0 alone would say it is)
    local state
    state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    case "$state" in ""|Z|X|x) return 1 ;; *) return 0 ;; esac
}

is_node() {  # is process $1 alive and node $2 of this cluster (not a program that reuses its PID)?
    proc_alive "$1" || return 1
    local args=()
    mapfile -d '' -t args <"/proc/$1/cmdline" 2>/dev/null || return 1
    local n=${#args[@]}
    [ "$n" -ge 2 ] && [ "${args[n-2]}" = "--config" ] || return 1
    local cfg=${args[n-1]}
    [[ "$cfg" = /* ]] || cfg="$(readlink "/proc/$1/cwd")/$cfg"
    [ "$(readlink -f "$cfg")" = "$(readlink -f "$CLUSTER_DIR/node$2.toml")" ]
}

running() {  # is node $1 running?
    local pidf="$CLUSTER_DIR/node$1.pid"
    [ -f "$pidf" ] && is_node "$(cat "$pidf")" "$1"
}

start() {
    local n=${1:-3}
    ensure_venv
    if [ ! -f "$CLUSTER_DIR/genesis.json" ]; then
        "$VENV/bin/crmledger" init --nodes "$n" --out "$CLUSTER_DIR" --base-port "$BASE_PORT" >/dev/null
    fi
    n=$(node_count)
    for i in $(seq 1 "$n"); do
        if running "$i"; then continue; fi
        nohup "$VENV/bin/crmledger" node --config "$CLUSTER_DIR/node$i.toml" >>"$CLUSTER_DIR/node$i.log" 2>&1 &
        echo $! >"$CLUSTER_DIR/node$i.pid"
    done
    for _ in $(seq 1 300); do
        if "$VENV/bin/crmledger" status --cluster-dir "$CLUSTER_DIR" >/dev/null 2>&1; then
            "$VENV/bin/crmledger" status --cluster-dir "$CLUSTER_DIR"
            echo "cluster of $n nodes in $CLUSTER_DIR; HTTP endpoints:"
            for i in $(seq 1 "$n"); do
                grep -A1 '^\[api\]' "$CLUSTER_DIR/node$i.toml" | sed -n 's/^listen = "\(.*\)"/  http:\/\/\1/p'
            done
            return 0
        fi
        sleep 0.1
    done
    echo "no leader was elected within 30 s; see $CLUSTER_DIR/node*.log" >&2
    return 1
}

stop() {
    local pids=()
    for pidf in "$CLUSTER_DIR"/node*.pid; do
        [ -f "$pidf" ] || continue
        local pid i; pid=$(cat "$pidf"); i=${pidf##*/node}; i=${i%.pid}
        if is_node "$pid" "$i"; then kill -TERM "$pid"; pids+=("$pid"); fi
    done
    for pid in "${pids[@]}"; do
        for _ in $(seq 1 150); do proc_alive "$pid" || break; sleep 0.1; done
        if proc_alive "$pid"; then echo "node $pid did not stop in 15 s: killing it" >&2; kill -KILL "$pid"; fi
    done
    rm -f "$CLUSTER_DIR"/node*.pid
    echo "stopped ${#pids[@]} node(s)"
}

add() {
    ensure_venv
    [ -f "$CLUSTER_DIR/genesis.json" ] || { echo "no cluster in $CLUSTER_DIR: start one first" >&2; exit 1; }
    local k from=()
    for cfg in "$CLUSTER_DIR"/node*.toml; do
        from+=(--from "$(grep -A1 '^\[api\]' "$cfg" | sed -n 's/^listen = "\(.*\)"/\1/p')")
    done
    k=$("$VENV/bin/crmledger" add-firm --cluster-dir "$CLUSTER_DIR") || exit 1
    nohup "$VENV/bin/crmledger" join "${from[@]}" --config "$CLUSTER_DIR/node$k.toml" >>"$CLUSTER_DIR/node$k.log" 2>&1 &
    echo $! >"$CLUSTER_DIR/node$k.pid"
    for _ in $(seq 1 600); do
        if "$VENV/bin/crmledger" status --cluster-dir "$CLUSTER_DIR" 2>/dev/null \
                | awk -v n="node$k" '$1 == n && $3 != "down" && $6 == 0 {ok=1} END {exit !ok}'; then
            "$VENV/bin/crmledger" status --cluster-dir "$CLUSTER_DIR"
            echo "node$k (org$k) joined the cluster in $CLUSTER_DIR"
            return 0
        fi
        sleep 0.1
    done
    echo "node$k did not catch up within 60 s; see $CLUSTER_DIR/node$k.log" >&2
    return 1
}

status() {
    ensure_venv
    "$VENV/bin/crmledger" status --cluster-dir "$CLUSTER_DIR"
}

case "${1:-}" in
    start) start "${2:-3}" ;;
    stop) stop ;;
    status) status ;;
    add) add ;;
    ""|[0-9]*)
        start "${1:-3}"
        trap 'echo; stop; exit 0' INT TERM
        tail -n 0 -F "$CLUSTER_DIR"/node*.log &
        wait $!
        ;;
    *) echo "usage: $0 [start [N] | stop | status | add | N]" >&2; exit 2 ;;
esac
