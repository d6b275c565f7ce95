#!/usr/bin/env bash
# The README's Quickstart, run as a newcomer would run it, and checked step by step.
#
# The commands are not copied here: they are read out of README.md, from the fenced blocks
# whose info string is `sh first-run=<step>`. Each step below says how to run its block and
# what it must do (exit code, output, row counts). A block without a check here, or a check
# without its block, fails the run, so the README and this script cannot drift apart.
#
# Where: a scratch folder, target/first-run (the README's `.capydb-dev/` lands there, not in
# your clone), against the Postgres on 127.0.0.1:5432 when it answers, else the throwaway
# cluster dev mode starts in that folder (stopped at exit). It uses the Quickstart's ports
# (50051, 8080, 9464, 8787) and refuses to start while anything listens on them, and it drops
# the dev databases (capydb_auth_sync_dev, capydb_dev_shop, capydb_dev_blog) before and
# after, as the README's "fresh start". Needs bash, cargo, psql and Postgres's binaries.
# Bounded: every step has a deadline (FIRST_RUN_STEP_SECS, default 180 s).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
readme="$repo/README.md"
work="$repo/target/first-run"
step_secs=${FIRST_RUN_STEP_SECS:-180}
pg_default=postgres://postgres@127.0.0.1:5432
ports=(50051 8080 9464 8787)
dev_dbs=(capydb_auth_sync_dev capydb_dev_shop capydb_dev_blog)

say() { printf 'first-run: %s\n' "$*"; }
die() {
  printf 'first-run: FAILED: %s\n' "$*" >&2
  exit 1
}

# A newcomer's shell: none of the service's settings, default log levels.
while read -r var; do unset "$var"; done < <(compgen -e | grep -E '^(CAPYDB_AUTH_SYNC_|RUST_LOG$)' || true)

for tool in cargo psql timeout setsid; do
  command -v "$tool" >/dev/null || die "$tool is not installed (see the README's prerequisites)"
done

# --- The README's blocks --------------------------------------------------------------------

# The steps, in README order, with how each runs: `background` (a server, left running) or
# `step` (runs to completion; `setup` steps are also sourced by every later step, as the
# README's shell 3 keeps its exports and alias), or `optional:<tool>` (skipped without it).
steps=(fake-clerk:background server:background setup:setup configure:step watch:step
  test-webhook:step look:step blog:step grpcurl:optional:grpcurl)

# Prints the block `sh first-run=$1` of the README (empty if there is none).
block() {
  awk -v want="$1" '
    /^```/ && inside { exit }
    inside { print }
    $0 == "```sh first-run=" want { inside = 1 }
  ' "$readme"
}

# Every first-run block in the README must be a known step, in this order.
readme_steps=$(sed -n 's/^```.*first-run=\(.*\)$/\1/p' "$readme" | tr '\n' ' ')
known_steps=$(for s in "${steps[@]}"; do printf '%s ' "${s%%:*}"; done)
[ "$readme_steps" = "$known_steps" ] ||
  die "README.md's first-run blocks are [$readme_steps], this script checks [$known_steps]"
for s in "${steps[@]}"; do
  [ -n "$(block "${s%%:*}")" ] || die "README.md's first-run block '${s%%:*}' is empty"
done

# --- A clean place to run -------------------------------------------------------------------

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "${ports[@]}"; do
  port_busy "$port" && die "something listens on 127.0.0.1:$port (a dev server or fake Clerk?); stop it first"
done

pg_ctl_as_owner() {
  local bin
  bin=$(pg_config --bindir 2>/dev/null || true)
  local pg_ctl=pg_ctl
  [ -x "$bin/pg_ctl" ] && pg_ctl="$bin/pg_ctl"
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$pg_ctl" "$@"; else "$pg_ctl" "$@"; fi
}

stop_throwaway_cluster() {
  if [ -f "$work/.capydb-dev/pg/data/postmaster.pid" ]; then
    pg_ctl_as_owner -D "$work/.capydb-dev/pg/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
}

local_pg=no
psql "$pg_default/postgres" -Atqc 'SELECT 1' >/dev/null 2>&1 && local_pg=yes

drop_dev_databases() {
  [ "$local_pg" = yes ] || return 0
  for db in "${dev_dbs[@]}"; do
    PGOPTIONS="-c client_min_messages=warning" psql "$pg_default/postgres" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null
  done
}

stop_throwaway_cluster
rm -rf "$work"
mkdir -p "$work"
drop_dev_databases

# --- Cleanup --------------------------------------------------------------------------------

groups=()
cleanup() {
  local rc=$?
  for g in "${groups[@]}"; do kill -TERM -- "-$g" 2>/dev/null || true; done
  for g in "${groups[@]}"; do
    for _ in $(seq 100); do kill -0 -- "-$g" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$g" 2>/dev/null || true
  done
  stop_throwaway_cluster
  drop_dev_databases || true
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- Build first, so no step spends its deadline compiling ---------------------------------

say "building the binaries (cargo build)"
(cd "$repo" && cargo build -q --locked --bin capydb-auth-sync)
(cd "$repo" && cargo build -q --locked -p capydb-auth-sync-client --bin capydb-auth-sync-admin)
(cd "$repo" && cargo build -q --locked -p fake-clerk --bin fake-clerk)

# --- Running the steps ----------------------------------------------------------------------

session="$work/session.sh" # what shell 3 has defined so far (the setup steps)
: >"$session"
cd "$work"

# Runs step $1's block in the background, in a process group of its own (stopped at exit).
start_background() {
  local name=$1 file="$work/$1.sh"
  block "$name" >"$file"
  setsid bash -c 'echo $$ >"$0.pgid"; exec bash "$0"' "$file" >"$work/$name.log" 2>&1 </dev/null &
  for _ in $(seq 50); do [ -s "$file.pgid" ] && break; sleep 0.1; done
  [ -s "$file.pgid" ] || die "$name did not start"
  groups+=("$(cat "$file.pgid")")
}

# Waits (bounded) until `probe` succeeds, failing early when step $1's process group is gone.
wait_for() {
  local name=$1 what=$2 probe=$3 deadline=$((SECONDS + step_secs))
  local group=${groups[-1]}
  until eval "$probe"; do
    kill -0 -- "-$group" 2>/dev/null || die "$name stopped while waiting until $what; its log:
$(tail -n 30 "$work/$name.log")"
    [ "$SECONDS" -lt "$deadline" ] || die "$name: $what did not happen within ${step_secs}s; its log:
$(tail -n 30 "$work/$name.log")"
    sleep 0.2
  done
}

http_ok() { # GET http://127.0.0.1:$1$2 answers 200
  (
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
    read -r -t 5 status_line <&3 && [[ $status_line == *" 200 "* ]]
  ) 2>/dev/null
}

# Runs step $1's block to completion, as shell 3 would (setup sourced first); its output
# goes to $work/$1.out; returns the block's exit code.
run_step() {
  local name=$1 file="$work/$1.sh"
  block "$name" >"$file"
  set +e
  timeout -k 5 "$step_secs" bash -ec 'shopt -s expand_aliases; source "$0"; source "$1"' \
    "$session" "$file" >"$work/$name.out" 2>&1
  local rc=$?
  set -e
  return "$rc"
}

fail_step() {
  die "step '$1': $2
--- the block:
$(cat "$work/$1.sh")
--- its output:
$(tail -n 40 "$work/$1.out")
--- the server's log (last lines):
$(tail -n 20 "$work/server.log" 2>/dev/null)"
}

expect() { # step, text the output must contain
  grep -qF -- "$2" "$work/$1.out" || fail_step "$1" "the output does not say \"$2\""
}

# The checks, one per step.
check_fake_clerk() { wait_for fake-clerk "it listens on 8787" 'port_busy 8787'; }
check_server() {
  wait_for server "it answers /readyz on 8080 and wrote its token" \
    '[ -s .capydb-dev/admin-token ] && [ -s .capydb-dev/postgres-url ] && http_ok 8080 /readyz'
}
check_setup() {
  [ -n "$(bash -c 'source "$0"; echo "$CAPYDB_AUTH_SYNC_ADMIN_TOKEN$PG"' "$session")" ] ||
    fail_step setup "the token and the Postgres URL are empty"
}
check_configure() {
  expect configure "shop"
  expect configure "clerk"
  expect configure "sk_test_…"
}
check_watch() {
  expect watch "succeeded"
  expect watch "5000 of 5000"
}
check_test_webhook() {
  expect test-webhook "dry run"
  expect test-webhook "applied"
}
check_look() {
  expect look "live"
  # The psql count: every fake user, and no made-up test user.
  grep -qE '^ +5000$' "$work/look.out" || fail_step look "the table does not hold exactly the 5000 users"
}
check_blog() {
  expect blog "better_auth"
  expect blog '{"status":"applied"}'
  expect blog "(1 row)"
}
check_grpcurl() {
  expect grpcurl "capydb.auth_sync.v1.AuthSyncService"
  expect grpcurl "SYNC_MODE_LIVE"
}

started=$SECONDS
passed=0
for entry in "${steps[@]}"; do
  name=${entry%%:*}
  kind=${entry#*:}
  check="check_${name//-/_}"
  case $kind in
  background)
    say "$name (in the background)"
    start_background "$name"
    ;;
  optional:*)
    tool=${kind#optional:}
    if ! command -v "$tool" >/dev/null; then
      say "$name: skipped ($tool is not installed; the README says how to get it)"
      continue
    fi
    say "$name"
    run_step "$name" || fail_step "$name" "exit code $?"
    ;;
  *)
    say "$name"
    run_step "$name" || fail_step "$name" "exit code $?"
    [ "$kind" = setup ] && cat "$work/$name.sh" >>"$session"
    ;;
  esac
  "$check"
  passed=$((passed + 1))
done
say "all $passed steps of the README's Quickstart passed in $((SECONDS - started))s"
