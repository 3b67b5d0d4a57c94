#!/usr/bin/env bash
# Failover as a client sees it: from SIGKILL of the leader to the next acknowledged write.
#
#   bench/failover.sh                  # 10 runs, each on a fresh three-branch durable cluster
#   RUNS=3 KILL_AFTER=2 bench/failover.sh
#
# Each run starts three durable `bank branch` processes on 127.0.0.1, runs one sequential
# writing client (`bank bench --clients 1`, deposits only, the leader first in its branch list),
# SIGKILLs the leader after KILL_AFTER seconds and restarts it RESTART_AFTER seconds later (so
# the bench's final reads at every branch succeed). The bench reports its longest stall between
# acknowledged writes and when it ended; the failover is that end minus the time of the kill.
# Prints each run and the median. Builds the release binary first unless BANK names one.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-10}
KILL_AFTER=${KILL_AFTER:-2}
RESTART_AFTER=${RESTART_AFTER:-5}
if [ -z "${BANK:-}" ]; then
    cargo build --release --quiet
    BANK=${CARGO_TARGET_DIR:-target}/release/bank
fi
. bench/cluster.sh

work=$(mktemp -d)
bench_pid=""
cleanup() {
    [ -z "$bench_pid" ] || kill "$bench_pid" 2>/dev/null || true
    stop_cluster
    rm -rf "$work"
}
trap cleanup EXIT

one_run() {
    local run=$1 dir="$work/run-$1" leader order=() i kill_at
    mkdir -p "$dir"
    start_cluster "$dir"
    leader=$(wait_for_leader 30)
    order=(--branch "127.0.0.1:${ports[$((leader-1))]}")
    for i in 1 2 3; do [ "$i" = "$leader" ] || order+=(--branch "127.0.0.1:${ports[$((i-1))]}"); done
    "$BANK" bench "${order[@]}" --clients 1 --accounts 2 --mix deposit=100 \
        --duration "$((KILL_AFTER + RESTART_AFTER + 3))" --json >"$dir/bench.json" 2>"$dir/bench.err" &
    bench_pid=$!
    sleep "$KILL_AFTER"
    kill_at=$(date +%s.%N)
    kill -9 "${pids[$leader]}"
    wait "${pids[$leader]}" 2>/dev/null || true
    sleep "$RESTART_AFTER"
    start_branch "$dir" "$leader"
    if ! wait "$bench_pid"; then
        bench_pid=""
        echo "run $run: the bench failed:" >&2
        cat "$dir/bench.err" >&2
        return 1
    fi
    bench_pid=""
    stop_cluster
    python3 - "$dir/bench.json" "$kill_at" "$run" "$leader" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
kill_at, stall = float(sys.argv[2]), report["longest_stall"]
failover = stall["ended_unix_s"] - kill_at
# A write acknowledged just after the kill was answered before it (it was on the wire): the
# stall that covers the kill may start a little after it.
if failover < 0 or stall["ended_unix_s"] - stall["seconds"] > kill_at + 0.1:
    sys.exit(f"run {sys.argv[3]}: the longest stall ({stall}) does not cover the kill at {kill_at}")
print(f"run {sys.argv[3]}: failover {failover:.3f} s (longest stall {stall['seconds']:.3f} s, "
      f"killed leader {sys.argv[4]}, {report['operations']} writes, errors {report['errors'] or 'none'})")
with open(sys.argv[1] + ".failover", "w") as out:
    out.write(f"{failover}\n")
PY
    cat "$dir/bench.json.failover" >>"$work/failovers"
}

echo "machine: $(nproc) cores, $(uname -srm); $(date -u +%Y-%m-%dT%H:%MZ); $RUNS runs"
for run in $(seq 1 "$RUNS"); do one_run "$run"; done
python3 - "$work/failovers" <<'PY'
import statistics, sys
runs = [float(line) for line in open(sys.argv[1])]
print(f"failover median {statistics.median(runs):.3f} s over {len(runs)} runs "
      f"(min {min(runs):.3f}, max {max(runs):.3f})")
PY
