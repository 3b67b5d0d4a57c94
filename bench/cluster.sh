# Sourced by bench/failover.sh and bench/elections.sh: three durable `bank branch` processes on
# 127.0.0.1 (fsync before acknowledging), with temporary data directories and free ports.
#
#   start_cluster DIR      starts branches 1..3 with their data in DIR; sets ports[], pids[]
#   start_branch DIR I     (re)starts branch I alone
#   wait_for_leader S      prints the leader's id once branch 1..3 agree on one, within S seconds
#   status_field FIELD     prints FIELD of every reachable branch (one per line) from `bank status`
#   stop_cluster           SIGKILLs the branches still running
# BANK is the `bank` binary.

pids=()
ports=()

free_ports() {
    python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))'
}

start_branch() {
    local dir=$1 i=$2 peers=() j
    for j in 1 2 3; do [ "$j" = "$i" ] || peers+=(--peer "$j=127.0.0.1:${ports[$((j-1))]}"); done
    "$BANK" branch --id "$i" --listen "127.0.0.1:${ports[$((i-1))]}" "${peers[@]}" \
        --data-dir "$dir/bank-$i" >>"$dir/bank-$i.log" 2>&1 &
    pids[$i]=$!
}

start_cluster() {
    local dir=$1 i
    read -r -a ports <<<"$(free_ports)"
    pids=()
    for i in 1 2 3; do start_branch "$dir" "$i"; done
}

stop_cluster() {
    local pid
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}

# `bank status --json` of the first branch that answers, or nothing.
cluster_status() {
    local port
    for port in "${ports[@]}"; do
        if "$BANK" status --branch "127.0.0.1:$port" --json 2>/dev/null; then return 0; fi
    done
    return 1
}

status_field() {
    cluster_status | python3 -c '
import json, sys
for b in json.load(sys.stdin)["branches"]:
    if b.get(sys.argv[1]) is not None: print(b[sys.argv[1]])' "$1"
}

wait_for_leader() {
    local deadline=$((SECONDS + $1)) leader
    while [ "$SECONDS" -lt "$deadline" ]; do
        leader=$(cluster_status | python3 -c '
import json, sys
s = json.load(sys.stdin)
leaders = {b.get("leader") for b in s["branches"]}
print(s["leader"] if len(leaders) == 1 and s["leader"] else "")' 2>/dev/null || true)
        if [ -n "$leader" ]; then echo "$leader"; return 0; fi
        sleep 0.1
    done
    echo "no leader within $1 s" >&2
    return 1
}
