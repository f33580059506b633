#!/bin/sh
# A three-node jinn cluster on loopback for trying things:
#   scripts/demo-cluster.sh start            # nodes n1..n3, API on :8081..:8083
#   scripts/demo-cluster.sh status           # which nodes run, and the cluster's health
#   scripts/demo-cluster.sh stop [NODE]      # all nodes, or one (n1, n2 or n3)
#   scripts/demo-cluster.sh restart [NODE]
#   TLS=pki scripts/demo-cluster.sh start    # raft over mutual TLS and the API
#       over https, with the certificates `jinn certs init pki; jinn certs add
#       pki nN --ip 127.0.0.1` made
# Every command is safe to run twice: start leaves running nodes (their
# logs, pid files and configuration) alone and starts only the stopped
# ones; stop signals only the processes its own pid files name, and only
# when that process is still a `jinn run` of this demo's configuration.
#
# Environment: JINN (the binary, default build/jinn), DIR (data, logs,
# pid files; default ./demo), HTTP_BASE and RAFT_BASE (node i listens on
# HTTP_BASE+i and RAFT_BASE+i; default 8080 and 7000).
set -eu
JINN=${JINN:-build/jinn}
DIR=${DIR:-demo}
HTTP_BASE=${HTTP_BASE:-8080}
RAFT_BASE=${RAFT_BASE:-7000}
NODES="n1 n2 n3"
TLS=${TLS:-}
SCHEME=http
if [ -n "$TLS" ]; then
    SCHEME=https
    JINN_CACERT=${JINN_CACERT:-$TLS/ca.crt}
    export JINN_CACERT
fi

usage() {
    echo "usage: $0 start|stop|restart [NODE]|status   (NODE: n1, n2 or n3)" >&2
    exit 2
}

# The pid of NODE when it runs (a live, non-zombie `jinn run` of our
# config), else nothing: a stale pid file never gets someone else killed.
node_pid() {
    pf="$DIR/$1.pid"
    [ -f "$pf" ] || return 0
    pid=$(cat "$pf" 2>/dev/null || true)
    case "$pid" in '' | *[!0-9]*) return 0 ;; esac
    kill -0 "$pid" 2>/dev/null || return 0
    [ "$(ps -o stat= -p "$pid" 2>/dev/null | cut -c1)" != Z ] || return 0
    if [ -r "/proc/$pid/cmdline" ]; then
        tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF -- "run -c $DIR/$1.conf" || return 0
    fi
    echo "$pid"
}

write_conf() {
    n=${1#n}
    peers=""
    for p in $NODES; do
        peers="$peers $p=127.0.0.1:$((RAFT_BASE + ${p#n}))"
    done
    # Written to a temporary file and renamed: a running node's file is
    # replaced whole, never seen half-written.
    cat > "$DIR/$1.conf.tmp" <<CONF
{
    server_name      $1
    data_dir         $DIR/data/$1
    http_listen      127.0.0.1:$((HTTP_BASE + n))
    cluster_name     demo
    cluster_listen   127.0.0.1:$((RAFT_BASE + n))
    cluster_peers   $peers
    cluster_replicas 3
$(if [ -n "$TLS" ]; then printf '    cluster_tls {\n        cert %s/%s.crt\n        key  %s/%s.key\n        ca   %s/ca.crt\n    }' "$TLS" "$1" "$TLS" "$1" "$TLS"; fi)
$(if [ -n "$TLS" ]; then printf '    http_tls {\n        cert %s/%s.crt\n        key  %s/%s.key\n    }' "$TLS" "$1" "$TLS" "$1"; fi)
    consensus {
        payments { mode cp  stale_reads false }
        sessions { mode ap  stale_reads true }
    }
}
CONF
    mv "$DIR/$1.conf.tmp" "$DIR/$1.conf"
}

start_node() {
    pid=$(node_pid "$1")
    if [ -n "$pid" ]; then
        echo "$1 is already running (pid $pid)"
        return 0
    fi
    write_conf "$1"
    # --bootstrap only while the demo cluster has never had a leader (no
    # $DIR/founded yet, written once one is elected): it founds the
    # cluster. A restart (data_dir exists) recovers; a node whose data_dir
    # was wiped later comes back as a new node to add with `jinn members
    # add`, never as the voter it was.
    flag="" fresh=""
    [ -d "$DIR/data/$1" ] || fresh=1
    if [ -n "$fresh" ] && [ ! -f "$DIR/founded" ]; then
        flag="--bootstrap"
    fi
    # Appends: a log is never truncated by a start.
    "$JINN" run -c "$DIR/$1.conf" $flag >> "$DIR/$1.log" 2>&1 &
    pid=$!
    echo $pid > "$DIR/$1.pid"
    # A node that refuses to start (a port taken, a data_dir of another
    # cluster) exits at once: wait (up to 10 s) until it serves HTTP
    # (`jinn status` exits 0, or 3 while there is no quorum yet) or is gone.
    # A node founding the cluster serves HTTP only once every peer answers:
    # for it, half a second alive is enough (wait_leader does the rest).
    i=0
    while :; do
        rc=0
        if [ -n "$flag" ]; then
            [ $i -lt 5 ] || break
        else
            "$JINN" status --addr "$SCHEME://127.0.0.1:$((HTTP_BASE + ${1#n}))" >/dev/null 2>&1 ||
                rc=$?
            if [ $rc -eq 0 ] || [ $rc -eq 3 ]; then
                break
            fi
        fi
        if ! kill -0 "$pid" 2>/dev/null || [ "$(ps -o stat= -p "$pid" | cut -c1)" = Z ]; then
            wait "$pid" 2>/dev/null || true
            rm -f "$DIR/$1.pid"
            echo "$1 did not start; the end of $DIR/$1.log says:" >&2
            tail -n 5 "$DIR/$1.log" >&2
            return 1
        fi
        i=$((i + 1))
        if [ $i -gt 100 ]; then
            break
        fi
        sleep 0.1
    done
    echo "$1 started (pid $pid, API $SCHEME://127.0.0.1:$((HTTP_BASE + ${1#n})), log $DIR/$1.log)"
    if [ -n "$fresh" ] && [ -z "$flag" ]; then
        a=$SCHEME://127.0.0.1:$((HTTP_BASE + 1))
        [ "$1" != n1 ] || a=$SCHEME://127.0.0.1:$((HTTP_BASE + 2))
        echo "$1 has an empty data_dir: it joins as a new node once the old one is replaced:"
        echo "    $JINN members remove $1 --addr $a     # the old, dead voter"
        echo "    $JINN members add $1=127.0.0.1:$((RAFT_BASE + ${1#n})) --addr $a"
    fi
}

stop_node() {
    pid=$(node_pid "$1")
    if [ -z "$pid" ]; then
        echo "$1 is not running"
        rm -f "$DIR/$1.pid"
        return 0
    fi
    kill "$pid" 2>/dev/null || true
    # Wait (up to 15 s) so a restart does not find the ports still taken.
    i=0
    while kill -0 "$pid" 2>/dev/null && [ "$(ps -o stat= -p "$pid" | cut -c1)" != Z ]; do
        i=$((i + 1))
        if [ $i -gt 150 ]; then
            echo "$1 (pid $pid) did not stop within 15 s" >&2
            return 1
        fi
        sleep 0.1
    done
    rm -f "$DIR/$1.pid"
    echo "$1 stopped"
}

# Waits (up to 30 s) until some node answers `jinn status` with a leader
# and a quorum, so the next command pasted after `start` just works.
wait_leader() {
    i=0
    while [ $i -lt 300 ]; do
        for n in $NODES; do
            if [ -n "$(node_pid "$n")" ] &&
                "$JINN" status --addr "$SCHEME://127.0.0.1:$((HTTP_BASE + ${n#n}))" >/dev/null 2>&1; then
                echo "leader elected; try: $JINN status --addr $SCHEME://127.0.0.1:$((HTTP_BASE + ${n#n}))"
                return 0
            fi
        done
        i=$((i + 1))
        sleep 0.1
    done
    echo "no leader with a quorum after 30 s (fewer than two nodes running?); see $DIR/n*.log" >&2
    return 1
}

# The nodes a command applies to: all, or the one named (checked below).
targets() {
    echo "${1:-$NODES}"
}

cmd=${1:-}
node=${2:-}
[ $# -le 2 ] || usage
if [ -n "$node" ]; then
    case " $NODES " in *" $node "*) ;; *) usage ;; esac
fi
case "$cmd" in
start)
    mkdir -p "$DIR"
    for n in $(targets "$node"); do start_node "$n"; done
    wait_leader
    : > "$DIR/founded"
    ;;
stop)
    for n in $(targets "$node"); do stop_node "$n"; done
    ;;
restart)
    mkdir -p "$DIR"
    for n in $(targets "$node"); do stop_node "$n" && start_node "$n"; done
    wait_leader
    : > "$DIR/founded"
    ;;
status)
    [ -z "$node" ] || usage
    addr=""
    for n in $NODES; do
        pid=$(node_pid "$n")
        if [ -n "$pid" ]; then
            echo "$n running (pid $pid) $SCHEME://127.0.0.1:$((HTTP_BASE + ${n#n}))"
            addr=${addr:-$SCHEME://127.0.0.1:$((HTTP_BASE + ${n#n}))}
        else
            echo "$n stopped"
        fi
    done
    [ -n "$addr" ] || exit 1
    "$JINN" status --addr "$addr"
    ;;
*)
    usage
    ;;
esac
