#!/usr/bin/env bash
# Memory of three durable `bank branch` processes holding many accounts: starts them on free
# loopback ports with temporary data directories, drives them with `bank bench --branch`, and
# prints each branch's peak (VmHWM) and final (VmRSS) resident memory from /proc, and the
# throughput of the run.
#
#   ACCOUNTS=1000000 COUNT=20000 CLIENTS=16 bench/memory.sh
#   LIMIT_MB=64 ACCOUNTS=1000000 bench/memory.sh   # also fail if a branch peaks above 64 MB
#
# BANK=path/to/bank (default target/release/bank, built if missing).
# Exits non-zero if the bench fails (its invariant check included) or, with LIMIT_MB, if any
# branch's peak resident memory is above LIMIT_MB megabytes (MiB); the figures are printed
# either way.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ACCOUNTS="${ACCOUNTS:-1000000}"
COUNT="${COUNT:-20000}"
CLIENTS="${CLIENTS:-16}"
LIMIT_MB="${LIMIT_MB:-}"
BANK="${BANK:-target/release/bank}"
[ -x "$BANK" ] || cargo build --release --quiet
case "$LIMIT_MB" in
    '' | *[!0-9]*) [ -z "$LIMIT_MB" ] || { echo "LIMIT_MB must be a whole number of MB, not '$LIMIT_MB'" >&2; exit 2; } ;;
esac

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
bench_status=0
/usr/bin/time -f "bench client: peak RSS %M KB" \
    "$BANK" bench "${branches[@]}" --accounts "$ACCOUNTS" --count "$COUNT" --clients "$CLIENTS" \
    2>&1 | tee "$work/bench.out" || bench_status=$?

status=0
peak_max=0
for i in 0 1 2; do
    pid="${pids[$i]}"
    if ! [ -r "/proc/$pid/status" ] || ! kill -0 "$pid" 2>/dev/null; then
        echo "branch $((i+1)): not running (it exited; its log follows)" >&2
        tail -20 "$work/bank-$((i+1)).log" >&2
        status=1
        continue
    fi
    peak=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
    now=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    db=$(du -k "$work/bank-$((i+1))" | tail -1 | cut -f1)
    printf 'branch %d: peak RSS %d MB, RSS now %d MB, data dir %d MB\n' \
        $((i+1)) $((peak/1024)) $((now/1024)) $((db/1024))
    [ $((peak/1024)) -le "$peak_max" ] || peak_max=$((peak/1024))
done
throughput=$(grep -o '[0-9.]* ops/s' "$work/bench.out" | head -1 || true)
echo "summary: throughput ${throughput:-unknown}, highest branch peak ${peak_max} MB${LIMIT_MB:+ (limit $LIMIT_MB MB)}"
if [ "$bench_status" -ne 0 ]; then
    echo "FAILED: bank bench exited with status $bench_status (see above: the invariant check or errors)" >&2
    status=1
fi
if ! grep -q '^invariants: ok' "$work/bench.out"; then
    echo "FAILED: the invariant check did not pass" >&2
    status=1
fi
if [ -n "$LIMIT_MB" ] && [ "$peak_max" -gt "$LIMIT_MB" ]; then
    echo "FAILED: a branch peaked at $peak_max MB, above LIMIT_MB=$LIMIT_MB" >&2
    status=1
fi
exit "$status"
