#!/usr/bin/env bash
# Elections on a healthy cluster under load: three durable `bank branch` processes on
# 127.0.0.1 under 64 writing clients for DURATION seconds; an election is a new Raft term, so
# the count is the highest term after the run minus the highest before it (0 on a healthy
# cluster).
#
#   bench/elections.sh                 # 60 s, 64 clients
#   DURATION=20 CLIENTS=16 bench/elections.sh
#
# Builds the release binary first unless BANK names one.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-60}
CLIENTS=${CLIENTS:-64}
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

highest_term() { status_field term | sort -n | tail -1; }

start_cluster "$work"
leader=$(wait_for_leader 30)
branches=()
for port in "${ports[@]}"; do branches+=(--branch "127.0.0.1:$port"); done
# The accounts are opened before the terms are read: a run starts on a settled cluster.
"$BANK" bench "${branches[@]}" --clients 1 --accounts 1000 --count 1 >/dev/null
before=$(highest_term)
echo "machine: $(nproc) cores, $(uname -srm); $(date -u +%Y-%m-%dT%H:%MZ)"
echo "leader $leader, term $before; $CLIENTS clients writing for $DURATION s"
"$BANK" bench "${branches[@]}" --clients "$CLIENTS" --accounts 1000 \
    --mix deposit=40,withdraw=30,transfer=30 --duration "$DURATION" 2>/dev/null
after=$(highest_term)
reachable=$(status_field term | wc -l)
echo "term $before -> $after: $((after - before)) elections in $DURATION s ($reachable of 3 branches answered)"
