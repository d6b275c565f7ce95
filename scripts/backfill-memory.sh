#!/usr/bin/env bash
# Peak RSS of the server across a full backfill of N users (fake Clerk in its own process).
# Usage: cargo build --release --bins --workspace && scripts/backfill-memory.sh 100000
# Needs psql and a trust-auth Postgres on 127.0.0.1:5432; talks to loopback only.
cd "$(dirname "$0")/.."
N=${1:-20000}
./target/release/fake-clerk --addr 127.0.0.1:8788 --users $N --no-rate-limit > /dev/null 2>&1 &
FC=$!
sleep 2
psql -h 127.0.0.1 -U postgres -qc "drop database if exists capymem" postgres 2>/dev/null
psql -h 127.0.0.1 -U postgres -qc "create database capymem" postgres
CAPYDB_AUTH_SYNC_CLERK_API_URL=http://127.0.0.1:8788 CAPYDB_AUTH_SYNC_CLERK_RATE_LIMIT_TEST=100000 CAPYDB_AUTH_SYNC_DEV_DIR=/tmp/memdev \
  ./target/release/capydb-auth-sync --dev --grpc-addr 127.0.0.1:50061 --http-addr 127.0.0.1:8091 --metrics-addr 127.0.0.1:9471 > /dev/null 2>&1 &
PID=$!
sleep 2
T=$(cat /tmp/memdev/admin-token)
A="./target/release/capydb-auth-sync-admin --endpoint http://127.0.0.1:50061 --token $T"
$A configure mem --provider clerk --database-url postgres://postgres@127.0.0.1:5432/capymem --secret-key sk_test_fakeclerk_local_dev_key > /dev/null
S=$(date +%s.%N); $A watch mem --json > /tmp/mem.json; E=$(date +%s.%N)
echo "users=$N written=$(python3 -c "import json;print(json.load(open('/tmp/mem.json'))['users_written'])") secs=$(python3 -c "print(round($E-$S,2))") server $(grep VmHWM /proc/$PID/status)"
kill $PID $FC; wait 2>/dev/null
psql -h 127.0.0.1 -U postgres -qc "drop database if exists capymem" postgres
