#!/bin/sh
# Starts (or stops) a three-node jinn cluster on loopback for trying things:
#   scripts/demo-cluster.sh start   # nodes n1..n3, API on :8081..:8083
#   scripts/demo-cluster.sh stop
#   TLS=pki scripts/demo-cluster.sh start   # raft over mutual TLS with the
#       certificates `jinn certs init pki; jinn certs add pki nN` made
# Data and logs go to ./demo/.
set -eu
JINN=${JINN:-build/jinn}
DIR=${DIR:-demo}
TLS=${TLS:-}

case "${1:-}" in
start)
    mkdir -p "$DIR"
    for i in 1 2 3; do
        cat > "$DIR/n$i.conf" <<CONF
{
    server_name      n$i
    data_dir         $DIR/data/n$i
    http_listen      127.0.0.1:808$i
    cluster_name     demo
    cluster_listen   127.0.0.1:700$i
    cluster_peers    n1=127.0.0.1:7001 n2=127.0.0.1:7002 n3=127.0.0.1:7003
    cluster_replicas 3
$(if [ -n "$TLS" ]; then printf '    cluster_tls {\n        cert %s/n%s.crt\n        key  %s/n%s.key\n        ca   %s/ca.crt\n    }' "$TLS" $i "$TLS" $i "$TLS"; fi)
    consensus {
        payments { mode cp  stale_reads false }
        sessions { mode ap  stale_reads true }
    }
}
CONF
        if [ -f "$DIR/n$i.pid" ] && kill -0 "$(cat "$DIR/n$i.pid")" 2>/dev/null &&
            [ "$(ps -o stat= -p "$(cat "$DIR/n$i.pid")" | cut -c1)" != Z ]; then
            echo "n$i is already running (pid $(cat "$DIR/n$i.pid"))"
            continue
        fi
        # --bootstrap only on the very first start: it founds the cluster.
        # A restart (data_dir exists) recovers; a node whose data_dir was
        # wiped comes back as a new node to add with `jinn members add`.
        flag=""
        [ -d "$DIR/data/n$i" ] || flag="--bootstrap"
        "$JINN" run -c "$DIR/n$i.conf" $flag >> "$DIR/n$i.log" 2>&1 &
        echo $! > "$DIR/n$i.pid"
    done
    echo "started n1..n3; try: $JINN status --addr http://127.0.0.1:8082"
    ;;
stop)
    for i in 1 2 3; do
        [ -f "$DIR/n$i.pid" ] && kill "$(cat "$DIR/n$i.pid")" 2>/dev/null || true
        rm -f "$DIR/n$i.pid"
    done
    ;;
*)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
