#!/usr/bin/env bash
# Times `bank backup` and `bank account export` of a three-branch durable cluster holding
# 100,000 accounts (plus the shared one): RUNS runs each, prints every time and the median.
#
#   cargo build --release
#   bench/backup_export.sh [BANK_BINARY] [BASE_PORT]
#
# The branches run on 127.0.0.1:BASE_PORT+1..+3 (default 39500) with their data in a
# temporary directory, removed at the end.
set -euo pipefail
BANK=${1:-target/release/bank}
BASE=${2:-39500}
RUNS=5
ACCOUNTS=100000
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

addr() { echo "127.0.0.1:$((BASE + $1))"; }
for id in 1 2 3; do
    peers=()
    for other in 1 2 3; do
        [ "$other" = "$id" ] || peers+=(--peer "$other=$(addr "$other")")
    done
    "$BANK" branch --id "$id" --listen "$(addr "$id")" "${peers[@]}" --data-dir "$WORK/d$id" \
        --balance 1000 2>"$WORK/branch-$id.log" &
    PIDS+=($!)
done
# Opens accounts 1..=ACCOUNTS (bench does it before its run) and makes one deposit.
"$BANK" bench --branch "$(addr 1)" --branch "$(addr 2)" --branch "$(addr 3)" \
    --accounts "$ACCOUNTS" --count 1 --mix deposit=100 >/dev/null

millis() { echo $(( $(date +%s%N) / 1000000 )); }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }

time_runs() {
    local name=$1; shift
    local times=()
    for run in $(seq 1 "$RUNS"); do
        local start end
        start=$(millis)
        "$@" >"$WORK/out" 2>"$WORK/err"
        end=$(millis)
        times+=($((end - start)))
        echo "$name run $run: $((end - start)) ms; $(cat "$WORK/out" "$WORK/err" | head -1)"
    done
    printf '%s\n' "${times[@]}" | median | xargs echo "$name median ms:"
}

time_runs backup "$BANK" backup --branch "$(addr 2)" -o "$WORK/bank.backup"
time_runs export-csv "$BANK" account export --format csv -o "$WORK/accounts.csv" --branch "$(addr 2)"
time_runs export-json "$BANK" account export --format json -o "$WORK/accounts.json" --branch "$(addr 2)"
ls -l "$WORK/bank.backup" "$WORK/accounts.csv" "$WORK/accounts.json"
