#!/usr/bin/env bash
# Memory of three durable `bank branch` processes holding many accounts: starts them on free
# loopback ports with temporary data directories, drives them with `bank bench --branch`, and
# prints each branch's peak (VmHWM) and final (VmRSS) resident memory from /proc.
#
#   ACCOUNTS=1000000 COUNT=20000 CLIENTS=16 bench/memory.sh
#
# BANK=path/to/bank (default target/release/bank, built if missing).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ACCOUNTS="${ACCOUNTS:-1000000}"
COUNT="${COUNT:-20000}"
CLIENTS="${CLIENTS:-16}"
BANK="${BANK:-target/release/bank}"
[ -x "$BANK" ] || cargo build --release --quiet

work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

read -r -a ports <<<"$(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))')"

for i in 1 2 3; do
    peers=()
    for j in 1 2 3; do [ "$j" = "$i" ] || peers+=(--peer "$j=127.0.0.1:${ports[$((j-1))]}"); done
    "$BANK" branch --id "$i" --listen "127.0.0.1:${ports[$((i-1))]}" "${peers[@]}" \
        --data-dir "$work/bank-$i" >"$work/bank-$i.log" 2>&1 &
    pids+=($!)
done
for _ in $(seq 1 300); do
    if "$BANK" status --branch "127.0.0.1:${ports[0]}" --json 2>/dev/null | grep -q "\"leader\": [0-9]"; then
        break
    fi
    sleep 0.1
done

branches=()
for i in 0 1 2; do branches+=(--branch "127.0.0.1:${ports[$i]}"); done
echo "machine: $(nproc) cores, $(uname -srm); $(date -u +%Y-%m-%dT%H:%MZ)"
echo "== bank bench ${branches[*]} --accounts $ACCOUNTS --count $COUNT --clients $CLIENTS"
/usr/bin/time -f "bench client: peak RSS %M KB" \
    "$BANK" bench "${branches[@]}" --accounts "$ACCOUNTS" --count "$COUNT" --clients "$CLIENTS"
for i in 0 1 2; do
    pid="${pids[$i]}"
    peak=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
    now=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    db=$(du -k "$work/bank-$((i+1))" | tail -1 | cut -f1)
    printf 'branch %d: peak RSS %d MB, RSS now %d MB, data dir %d MB\n' \
        $((i+1)) $((peak/1024)) $((now/1024)) $((db/1024))
done
