#!/usr/bin/env bash
# Measures three durable bank branches against PostgreSQL with two synchronous streaming
# standbys on this machine, on the same transfer workload, in alternating runs.
#
#   bench/compare-postgres.sh               # 1 and 64 clients, 3 runs of 10 s per side each
#   RUNS=5 DURATION=10 bench/compare-postgres.sh 64
#   RUNS=1 DURATION=1 bench/compare-postgres.sh    # smoke
#
# PostgreSQL: a primary and two standbys (pg_basebackup -R, application_name s1 and s2) with
# synchronous_standby_names = 'ANY 1 (s1, s2)', synchronous_commit = on and fsync = on, so a
# commit waits for the primary's flush and one standby's, as a Raft write with three replicas
# waits for two. bank: three `bank branch` processes with --data-dir (fsync before
# acknowledging). Both hold 100,000 accounts of 1,000,000,000 and receive the transfer workload
# of `bank bench --mix transfer=100`: two distinct random accounts, an amount 1..=100, in one
# transaction, refused (changing nothing) if the debit would leave a negative balance; pgbench
# runs it as one call of a PL/pgSQL function over TCP on loopback, prepared. Afterwards both
# sides must still hold exactly the loaded total with no negative balance.
#
# Installs Debian's postgresql if missing. PostgreSQL refuses to run as root: as root, its
# binaries run as the user postgres. Everything runs on 127.0.0.1 with temporary data
# directories, removed at exit. Builds the release binary first unless BANK names one.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
CLIENTS=("$@")
[ ${#CLIENTS[@]} -gt 0 ] || CLIENTS=(1 64)
ACCOUNTS=100000
OPENING=1000000000 # bank::load::bench::OPENING_BALANCE
AMOUNT_MAX=100     # bank bench's transfers move 1..=AMOUNT_MAX

if ! ls /usr/lib/postgresql/*/bin/pg_basebackup >/dev/null 2>&1; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq && $sudo apt-get install -y -qq postgresql
fi
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
if [ "$(id -u)" -eq 0 ]; then as_pg() { runuser -u postgres -- "$@"; }; else as_pg() { "$@"; }; fi

if [ -z "${BANK:-}" ]; then
    cargo build --release --quiet
    BANK=${CARGO_TARGET_DIR:-target}/release/bank
fi
. bench/cluster.sh

work=$(mktemp -d)
chmod 755 "$work"
mkdir "$work/pg"
[ "$(id -u)" -ne 0 ] || chown postgres: "$work/pg"
pg_pids=()
cleanup() {
    local pid dir
    for pid in "${pg_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    # As root the pids above are runuser's: stop the postmasters themselves too.
    for dir in "$work"/pg/*/; do
        [ -f "$dir/postmaster.pid" ] || continue
        pid=$(head -1 "$dir/postmaster.pid")
        kill -INT "$pid" 2>/dev/null || true
    done
    stop_cluster
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# --- PostgreSQL: a primary, two synchronous standbys ---
read -r -a pg_ports <<<"$(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))')"
pg="$work/pg"
psql_() { "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "${pg_ports[0]}" -U postgres "$@"; }
pg_ready() {
    for _ in $(seq 1 300); do
        "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$1" && return 0
        sleep 0.1
    done
    echo "PostgreSQL on port $1 did not start:" >&2
    cat "$pg/$2.log" >&2
    return 1
}
as_pg "$PGBIN/initdb" -D "$pg/primary" -U postgres -A trust >"$pg/initdb.log" 2>&1
cat >>"$pg/primary/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$pg'
fsync = on
synchronous_commit = on
synchronous_standby_names = 'ANY 1 (s1, s2)'
EOF
as_pg "$PGBIN/postgres" -D "$pg/primary" -p "${pg_ports[0]}" >"$pg/primary.log" 2>&1 &
pg_pids+=($!)
pg_ready "${pg_ports[0]}" primary
for s in 1 2; do
    as_pg "$PGBIN/pg_basebackup" -h 127.0.0.1 -p "${pg_ports[0]}" -U postgres -D "$pg/s$s" -R \
        -X stream >"$pg/s$s-basebackup.log" 2>&1
    echo "primary_conninfo = 'host=127.0.0.1 port=${pg_ports[0]} user=postgres application_name=s$s'" \
        >>"$pg/s$s/postgresql.auto.conf"
    as_pg "$PGBIN/postgres" -D "$pg/s$s" -p "${pg_ports[$s]}" >"$pg/s$s.log" 2>&1 &
    pg_pids+=($!)
    pg_ready "${pg_ports[$s]}" "s$s"
done
for _ in $(seq 1 300); do
    sync_state=$(psql_ -At -c "SELECT string_agg(application_name || ':' || sync_state, ' '
        ORDER BY application_name) FROM pg_stat_replication")
    [ "$sync_state" = "s1:quorum s2:quorum" ] && break
    sleep 0.1
done
[ "$sync_state" = "s1:quorum s2:quorum" ] || { echo "standbys not in sync: $sync_state" >&2; exit 1; }

psql_ <<EOF
CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
INSERT INTO accounts SELECT g, $OPENING FROM generate_series(1, $ACCOUNTS) g;
VACUUM ANALYZE accounts;
-- Moves amt from src to dst, or nothing if src would go negative. The rows are locked in id
-- order first, so that two opposite transfers cannot deadlock.
CREATE FUNCTION transfer(src int, dst int, amt bigint) RETURNS boolean AS \$\$
BEGIN
    PERFORM 1 FROM accounts WHERE id IN (src, dst) ORDER BY id FOR UPDATE;
    UPDATE accounts SET balance = balance - amt WHERE id = src AND balance >= amt;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE accounts SET balance = balance + amt WHERE id = dst;
    RETURN true;
END
\$\$ LANGUAGE plpgsql;
EOF
# The same choice as bank bench: from uniform, to = one of the other accounts, uniform.
cat >"$work/transfer.sql" <<EOF
\\set a random(1, $ACCOUNTS)
\\set r random(0, $((ACCOUNTS - 2)))
\\set b 1 + (:a + :r) % $ACCOUNTS
\\set amt random(1, $AMOUNT_MAX)
SELECT transfer(:a, :b, :amt);
EOF

# --- bank: three durable branches ---
start_cluster "$work"
wait_for_leader 30 >/dev/null
bank_branches=()
for port in "${ports[@]}"; do bank_branches+=(--branch "127.0.0.1:$port"); done
mix=deposit=0,withdraw=0,transfer=100,query=0
# Opens the accounts (a single transfer moves no money in total).
"$BANK" bench "${bank_branches[@]}" --accounts "$ACCOUNTS" --mix "$mix" --count 1 --clients 1 \
    >"$work/open.log" 2>&1

# Sum of all balances, count of accounts 1..=ACCOUNTS and of negative balances: of PostgreSQL's
# table, and of bank's export from each branch (whose ledger also lists account 0, holding 0).
pg_totals() {
    psql_ -At -F ' ' -c "SELECT sum(balance), count(*), count(*) FILTER (WHERE balance < 0)
        FROM accounts"
}
bank_totals() {
    local port
    for port in "${ports[@]}"; do
        "$BANK" account export --format csv --branch "127.0.0.1:$port" 2>/dev/null | python3 -c '
import sys
next(sys.stdin)
rows = [tuple(map(int, line.split(","))) for line in sys.stdin]
opened = sum(1 <= a <= int(sys.argv[1]) for a, _ in rows)
print(sum(b for _, b in rows), opened, sum(b < 0 for _, b in rows))' "$ACCOUNTS"
    done | sort -u | tr '\n' ';'
}
expected="$((ACCOUNTS * OPENING)) $ACCOUNTS 0"
echo "machine: $(nproc) cores, $(uname -srm); $(date -u +%Y-%m-%dT%H:%MZ); $("$PGBIN/postgres" --version)"
echo "loaded: PostgreSQL (sum count negative) $(pg_totals); bank, per branch: $(bank_totals)"

# One pgbench run; prints "ops/s p50_us p99_us" from its summary and its per-transaction log.
pg_run() {
    local clients=$1 dir
    dir=$(mktemp -d "$work/pgbench.XXXX")
    "$PGBIN/pgbench" -n -h 127.0.0.1 -p "${pg_ports[0]}" -U postgres -M prepared \
        -c "$clients" -j "$(( clients < $(nproc) ? clients : $(nproc) ))" -T "$DURATION" \
        -f "$work/transfer.sql" --log --log-prefix="$dir/log" postgres >"$dir/out" 2>&1 \
        || { cat "$dir/out" >&2; return 1; }
    python3 - "$dir" <<'PY'
import glob, re, sys
out = open(sys.argv[1] + "/out").read()
tps = float(re.search(r"tps = ([0-9.]+)", out).group(1))
failed = re.search(r"number of failed transactions: (\d+)", out)
if failed and int(failed.group(1)):
    sys.exit("pgbench: failed transactions:\n" + out)
lat = sorted(int(line.split()[2]) for f in glob.glob(sys.argv[1] + "/log.*") for line in open(f))
pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
print(f"{tps:.0f} {pick(0.50)} {pick(0.99)}")
PY
}

# One bank bench run, same output.
bank_run() {
    local clients=$1
    "$BANK" bench "${bank_branches[@]}" --accounts "$ACCOUNTS" --mix "$mix" --clients "$clients" \
        --duration "$DURATION" --json >"$work/bank-bench.json" 2>"$work/bank-bench.err" \
        || { cat "$work/bank-bench.err" >&2; return 1; }
    python3 - "$work/bank-bench.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
if r["errors"]:
    sys.exit(f"bank bench: errors {r['errors']}")
print(f"{r['operations_per_s']:.0f} {r['latency']['p50_us']} {r['latency']['p99_us']}")
PY
}

ms() { python3 -c "print(f'{$1 / 1000:.1f} ms')"; }
: >"$work/results"
for clients in "${CLIENTS[@]}"; do
    echo "== transfers, $clients clients, $RUNS alternating runs of ${DURATION}s each"
    for run in $(seq 1 "$RUNS"); do
        figures=$(pg_run "$clients")
        read -r ops p50 p99 <<<"$figures"
        echo "run $run: PostgreSQL $ops transfers/s, p50 $(ms "$p50"), p99 $(ms "$p99")"
        echo "$clients pg $ops $p50 $p99" >>"$work/results"
        figures=$(bank_run "$clients")
        read -r ops p50 p99 <<<"$figures"
        echo "run $run: bank       $ops transfers/s, p50 $(ms "$p50"), p99 $(ms "$p99")"
        echo "$clients bank $ops $p50 $p99" >>"$work/results"
    done
done
python3 - "$work/results" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
print("medians:")
print("| clients | bank transfers/s | bank p50 | bank p99 | PostgreSQL transfers/s | PostgreSQL p50 | PostgreSQL p99 | bank / PostgreSQL |")
print("|---|---|---|---|---|---|---|---|")
for clients in dict.fromkeys(r[0] for r in rows):
    med = {}
    for side in ("bank", "pg"):
        runs = [r for r in rows if r[0] == clients and r[1] == side]
        med[side] = [statistics.median(float(r[i]) for r in runs) for i in (2, 3, 4)]
    b, p = med["bank"], med["pg"]
    print(f"| {clients} | {b[0]:,.0f} | {b[1]/1000:.1f} ms | {b[2]/1000:.1f} ms | {p[0]:,.0f} | "
          f"{p[1]/1000:.1f} ms | {p[2]/1000:.1f} ms | {b[0]/p[0]:.2f}× |")
PY

pg_after=$(pg_totals)
bank_after=$(bank_totals)
echo "after: PostgreSQL (sum count negative) $pg_after; bank, per branch: $bank_after"
if [ "$pg_after" = "$expected" ] && [ "$bank_after" = "$expected;" ]; then
    echo "conservation: both hold the loaded total $((ACCOUNTS * OPENING)) with no negative balance"
else
    echo "conservation FAILED: expected $expected on both sides" >&2
    exit 1
fi
