#!/usr/bin/env bash
# Tails under a given load: three durable `bank branch` processes on 127.0.0.1; first RUNS
# closed-loop runs of CLIENTS clients sending deposits back to back (their median throughput is
# the capacity), then RUNS open-loop runs (`bank bench --rate`) at each percentage of it in
# PERCENTS, with at most CLIENTS requests in flight. Open-loop latencies are from each
# request's due time. Prints every run and the medians.
#
#   bench/open_loop.sh                         # 3 runs of 10 s, 64 clients, 50% and 90%
#   RUNS=1 DURATION=3 PERCENTS="25 75" bench/open_loop.sh
#
# Builds the release binary first unless BANK names one.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-64}
PERCENTS=${PERCENTS:-50 90}
if [ -z "${BANK:-}" ]; then
    cargo build --release --quiet
    BANK=${CARGO_TARGET_DIR:-target}/release/bank
fi
. bench/cluster.sh

work=$(mktemp -d)
cleanup() {
    stop_cluster
    rm -rf "$work"
}
trap cleanup EXIT

start_cluster "$work"
leader=$(wait_for_leader 30)
branches=()
for port in "${ports[@]}"; do branches+=(--branch "127.0.0.1:$port"); done
"$BANK" bench "${branches[@]}" --clients 1 --accounts 1000 --count 1 >/dev/null
echo "machine: $(nproc) cores, $(uname -srm); $(date -u +%Y-%m-%dT%H:%MZ); leader $leader"

# One run's figures from its JSON report (stdin), as one line; fails if its check failed.
summary() {
    python3 -c '
import json, sys
r = json.load(sys.stdin)
assert r["invariants"]["passed"], r["invariants"]
l, o = r["latency"], r.get("open_loop")
line = "ops/s %.0f p50 %.2f p99 %.2f p99.9 %.2f max %.2f ms" % (
    r["operations_per_s"], l["p50_us"] / 1e3, l["p99_us"] / 1e3, l["p999_us"] / 1e3,
    l["max_us"] / 1e3)
if o:
    line += " | achieved %.0f/s, late %d of %d, worst %.1f ms" % (
        o["achieved_per_s"], o["late"], o["requests"], o["worst_late_us"] / 1e3)
print(line)'
}

# The median of column $1 (1-based, whitespace-separated) of the lines on stdin.
median() { awk -v c="$1" '{print $c}' | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

run() {
    "$BANK" bench "${branches[@]}" --clients "$CLIENTS" --accounts 1000 --mix deposit=100 \
        --duration "$DURATION" --json "$@" 2>/dev/null | summary
}

report() {
    local runs=$1
    echo "  median: ops/s $(median 2 <<<"$runs"), p50 $(median 4 <<<"$runs"), p99 $(median 6 <<<"$runs"), p99.9 $(median 8 <<<"$runs"), max $(median 10 <<<"$runs") ms"
}

echo "closed loop, $CLIENTS clients, deposits, $DURATION s:"
closed=""
for _ in $(seq "$RUNS"); do
    line=$(run)
    echo "  $line"
    closed+="$line"$'\n'
done
closed=${closed%$'\n'}
report "$closed"
capacity=$(median 2 <<<"$closed")
for percent in $PERCENTS; do
    rate=$(python3 -c "print(round($capacity * $percent / 100))")
    echo "open loop at $percent% of $capacity: --rate $rate:"
    runs=""
    for _ in $(seq "$RUNS"); do
        line=$(run --rate "$rate")
        echo "  $line"
        runs+="$line"$'\n'
    done
    runs=${runs%$'\n'}
    report "$runs"
done
