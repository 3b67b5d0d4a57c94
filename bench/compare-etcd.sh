#!/usr/bin/env bash
# Measures three durable bank branches against a three-member etcd cluster on this machine,
# with the same load generator (bank::load::driver::drive), in alternating runs.
#
#   bench/compare-etcd.sh                # sequential writes, 64-client writes, 64 callers on one bank client, 64-client reads
#   RUNS=5 DURATION=10 bench/compare-etcd.sh write:1 write:64
#   bench/compare-etcd.sh write:64:64    # 64 bank callers sharing one client (batching)
#
# Installs Debian's etcd-server (and protobuf-compiler, which the etcd-client crate's build
# needs) if missing. Everything runs on 127.0.0.1 with temporary data directories, removed at
# exit.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
DURATION=${DURATION:-5}
CASES=("$@")
[ ${#CASES[@]} -gt 0 ] || CASES=(write:1 write:64 write:64:64 read:64)

need=()
command -v etcd >/dev/null || need+=(etcd-server)
command -v protoc >/dev/null || need+=(protobuf-compiler)
if [ ${#need[@]} -gt 0 ]; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq && $sudo apt-get install -y -qq "${need[@]}"
fi

cargo build --release --quiet
(cd bench/etcd-compare && cargo build --release --quiet)
BANK=${CARGO_TARGET_DIR:-target}/release/bank
COMPARE=${CARGO_TARGET_DIR:-bench/etcd-compare/target}/release/bank-etcd-compare

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# Nine free loopback ports: 3 bank, 3 etcd client, 3 etcd peer.
read -r -a ports <<<"$(python3 -c '
import socket
socks = [socket.socket() for _ in range(9)]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))')"

cluster=""
for i in 0 1 2; do cluster+="e$i=http://127.0.0.1:${ports[$((6+i))]},"; done
for i in 0 1 2; do
    etcd --name "e$i" --data-dir "$work/etcd-$i" \
        --listen-client-urls "http://127.0.0.1:${ports[$((3+i))]}" \
        --advertise-client-urls "http://127.0.0.1:${ports[$((3+i))]}" \
        --listen-peer-urls "http://127.0.0.1:${ports[$((6+i))]}" \
        --initial-advertise-peer-urls "http://127.0.0.1:${ports[$((6+i))]}" \
        --initial-cluster "${cluster%,}" --initial-cluster-state new \
        --initial-cluster-token bank-compare --log-level error >"$work/etcd-$i.log" 2>&1 &
    pids+=($!)
done
for i in 1 2 3; do
    peers=()
    for j in 1 2 3; do [ "$j" = "$i" ] || peers+=(--peer "$j=127.0.0.1:${ports[$((j-1))]}"); done
    "$BANK" branch --id "$i" --listen "127.0.0.1:${ports[$((i-1))]}" "${peers[@]}" \
        --data-dir "$work/bank-$i" >"$work/bank-$i.log" 2>&1 &
    pids+=($!)
done

bank_args=(); etcd_args=()
for i in 0 1 2; do
    bank_args+=(--bank "127.0.0.1:${ports[$i]}")
    etcd_args+=(--etcd "http://127.0.0.1:${ports[$((3+i))]}")
done
# Ready when bank answers a status for all three branches and etcd answers a put.
for _ in $(seq 1 300); do
    if "$BANK" status --branch "127.0.0.1:${ports[0]}" --json 2>/dev/null | grep -q "\"leader\": [0-9]" \
        && ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:${ports[3]}" put ready 1 >/dev/null 2>&1; then
        break
    fi
    sleep 0.1
done

echo "machine: $(nproc) cores, $(uname -srm); $(date -u +%Y-%m-%dT%H:%MZ); $(etcd --version | head -1)"
for case in "${CASES[@]}"; do
    IFS=: read -r workload clients callers <<<"$case"
    callers=${callers:-1}
    echo "== $workload, $clients clients ($callers per bank client), $RUNS runs of ${DURATION}s each"
    "$COMPARE" "${bank_args[@]}" "${etcd_args[@]}" --workload "$workload" \
        --clients "$clients" --callers-per-client "$callers" --duration "$DURATION" --runs "$RUNS"
done
