#!/usr/bin/env bash
# The compose lab's failover drill. For each variant it brings the lab up,
# waits for a primary and two secondaries, checks that show-state lists the
# two monitors with exactly one holding the lease, that the monitors speak
# mutual TLS only (a plaintext client, a client without a certificate and a
# keeper's certificate running an operator command are refused; the CLI on
# this host reaches both through their published ports with the lab's
# operator certificate), runs two writing clients (one through the
# multi-host URI, one through HAProxy's port 5000), takes the primary away,
# waits for a new primary, checks that every acknowledged row is on it,
# brings the old node back, waits until it is a secondary again holding
# every acknowledged row, and tears the lab down (also on failure).
#
#   compose/drill.sh [--local] [--release] [--variant stop|partition|monitor]...
#
#   --variant stop       `docker stop` the primary's container: its keeper hands over
#                        (default: all three variants)
#   --variant partition  `docker network disconnect` it from the lab network
#   --variant monitor    `docker kill` the monitor the keepers talk to ("monitor",
#                        first in their list) and `docker stop` the primary at the
#                        same moment: the failover goes through monitor2; then
#                        "monitor" is started again before the old node
#   --local              build where no image can be pulled: the base image from
#                        compose/base-image.sh, pgpilot built on this host
#                        (debug build unless --release) and copied in
#   --release            with --local: copy a release build instead
#   --build-only         build the images (pgpilot-lab:latest) and stop: then
#                        `docker compose -f compose/docker-compose.yml up -d` runs the lab
#
# Exit status 0 only when every check of every variant passed. Needs docker,
# docker compose or docker-compose 1.29, psql and python3 on this host.
set -euo pipefail
cd "$(dirname "$0")/.."

variants=()
local_build=0
build_only=0
profile=debug
while [ $# -gt 0 ]; do
  case "$1" in
    --local) local_build=1 ;;
    --release) profile=release ;;
    --build-only) build_only=1 ;;
    --variant)
      case "${2:-}" in
        stop | partition | monitor) variants+=("$2") ;;
        *) echo "error: --variant takes stop, partition or monitor, not '${2:-}'" >&2; exit 2 ;;
      esac
      shift ;;
    -h | --help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument '$1': see compose/drill.sh --help" >&2; exit 2 ;;
  esac
  shift
done
[ ${#variants[@]} -gt 0 ] || variants=(stop partition monitor)

for tool in docker psql python3; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "error: $tool is not installed: the drill needs docker, psql (postgresql-client) and python3" >&2
    exit 2
  fi
done
if docker compose version >/dev/null 2>&1; then
  compose_cmd=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose_cmd=(docker-compose)
else
  echo "error: neither 'docker compose' nor 'docker-compose' is installed" >&2
  exit 2
fi

project=${PGPILOT_DRILL_PROJECT:-pgpilot-drill}
C=("${compose_cmd[@]}" -p "$project" -f compose/docker-compose.yml)
network="${project}_default"
work=$(mktemp -d /tmp/pgpilot-drill.XXXXXX)
drill_start=$SECONDS
lab_up=0
report=()

log() { printf '[%4ds] %s\n' $((SECONDS - drill_start)) "$*"; }

# cli ARGS...: the operator CLI in monitor2's container (the one monitor no
# variant takes away), pointed at both monitors (PGPILOT_MONITOR of the
# compose file): it uses the first that answers.
cli() {
  "${C[@]}" exec -T monitor2 pgpilot-monitor "$@"
}

# The lab's state as "name reported goal connection" lines.
states() {
  cli show-state --json 2>/dev/null |
    python3 -c '
import json, sys
for n in json.load(sys.stdin)["nodes"]:
    print(n["name"], n["reported_state"], n["goal_state"], n["connection"])'
}

# The monitors show-state lists, as "url holds_lease seen_ago_ms" lines,
# after a first line "answered URL" naming the monitor that answered.
monitors() {
  cli show-state --json 2>/dev/null |
    python3 -c '
import json, sys
s = json.load(sys.stdin)
ms = s.get("monitors") or []
print("answered", next((m["url"] for m in ms if m["monitor_id"] == s.get("answered_by")), "?"))
for m in ms:
    print(m["url"], str(m["holds_lease"]).lower(), m["seen_ago_ms"])'
}

# two_monitors_one_lease LISTED: show-state lists LISTED monitors (a killed
# one stays listed for an hour), two of them seen in the last 3 s under two
# URLs, and exactly one holds the lease; the holder's URL is then in
# $work/holder, the URL of the monitor that answered in $work/answered.
two_monitors_one_lease() {
  monitors >"$work/monitors" || return 1
  awk '$1 == "answered" { print $2 }' "$work/monitors" >"$work/answered"
  awk '$1 != "answered"' "$work/monitors" >"$work/listed-monitors"
  awk '$3 < 3000' "$work/listed-monitors" >"$work/live-monitors"
  awk '$2 == "true" { print $1 }' "$work/listed-monitors" >"$work/holder"
  [ "$(wc -l <"$work/listed-monitors")" -eq "$1" ] &&
    [ "$(awk '{ print $1 }' "$work/live-monitors" | sort -u | wc -l)" -eq 2 ] &&
    [ "$(wc -l <"$work/holder")" -eq 1 ]
}

dump() {
  echo "---- show-state ----"
  cli show-state 2>&1 || true
  echo "---- show-events ----"
  cli show-events --count 30 2>&1 || true
  echo "---- containers ----"
  "${C[@]}" ps 2>&1 || true
  echo "---- logs (last 30 lines per service) ----"
  "${C[@]}" logs --no-color --tail=30 2>&1 || true
}

fail() {
  echo "DRILL FAILED: $*" >&2
  dump >&2
  exit 1
}

# wait_for SECONDS DESCRIPTION COMMAND...: run COMMAND every half second
# until it succeeds; fail with the cluster state after SECONDS.
wait_for() {
  local limit=$1 what=$2
  shift 2
  local deadline=$((SECONDS + limit))
  until "$@"; do
    if [ $SECONDS -ge $deadline ]; then
      fail "$what: not reached within ${limit}s"
    fi
    sleep 0.5
  done
}

teardown() {
  if [ "$lab_up" -eq 1 ]; then
    "${C[@]}" down -v --remove-orphans >"$work/down.log" 2>&1 || cat "$work/down.log" >&2
    lab_up=0
  fi
}

cleanup() {
  local status=$?
  [ -f "$work/stop-writers" ] || touch "$work/stop-writers"
  wait 2>/dev/null || true
  teardown
  rm -rf "$work"
  exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------
# Ports and images
# ---------------------------------------------------------------------------

ports=(5000 5001 7000 7430 7431 9187 9188 6001 6002 6003 8001 8002 8003)
for port in "${ports[@]}"; do
  if [ "$build_only" -eq 0 ] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "error: 127.0.0.1:$port is in use: stop what listens there (another lab?) before the drill" >&2
    exit 1
  fi
done

phase=$SECONDS
if [ "$local_build" -eq 1 ]; then
  export PGPILOT_BASE_IMAGE=${PGPILOT_BASE_IMAGE:-pgpilot-base:bookworm-pg15}
  export PGPILOT_BUILD_IMAGE=$PGPILOT_BASE_IMAGE PGPILOT_BINARIES=prebuilt
  compose/base-image.sh
  log "base image ready ($((SECONDS - phase))s)"
  phase=$SECONDS
  if [ "$profile" = release ]; then
    cargo build --release -p pgpilot-monitor -p pgpilot-keeper --bins
  else
    # The selection scripts/test.sh builds: after the tests nothing is
    # rebuilt (another selection unifies other dependency features and
    # recompiles sqlx, tonic's build and both binaries, about 3 min).
    cargo build --workspace --all-targets
  fi
  target_dir=${CARGO_TARGET_DIR:-target}
  mkdir -p compose/.bin
  for b in pgpilot-monitor pgpilot-keeper; do
    # Debug information is most of a debug build's size.
    if command -v strip >/dev/null 2>&1; then
      strip -o "compose/.bin/$b.tmp" "$target_dir/$profile/$b"
    else
      cp "$target_dir/$profile/$b" "compose/.bin/$b.tmp"
    fi
    mv "compose/.bin/$b.tmp" "compose/.bin/$b"
  done
  log "pgpilot $profile binaries built on the host ($((SECONDS - phase))s)"
  phase=$SECONDS
fi
"${C[@]}" build >"$work/build.log" 2>&1 || { tail -n 40 "$work/build.log" >&2; echo "DRILL FAILED: building the lab images failed" >&2; exit 1; }
image=${PGPILOT_LAB_IMAGE:-pgpilot-lab:latest}
log "lab image $image built ($((SECONDS - phase))s, $(docker image inspect -f '{{.Size}}' "$image" | awk '{ printf "%.0f MB", $1 / 1e6 }'))"

# The image holds no build toolchain.
tools=$(docker run --rm --entrypoint /bin/bash "$image" -c \
  'for t in cc gcc g++ clang rustc cargo make ld as protoc; do command -v "$t" || true; done')
[ -z "$tools" ] || { echo "DRILL FAILED: the lab image contains build tools: $tools" >&2; exit 1; }
log "check: no build toolchain in $image"
if [ "$build_only" -eq 1 ]; then
  echo "images built; start the lab with: ${compose_cmd[*]} -f compose/docker-compose.yml up -d"
  exit 0
fi

# ---------------------------------------------------------------------------
# One drill
# ---------------------------------------------------------------------------

uri="postgresql://postgres@127.0.0.1:6001,127.0.0.1:6002,127.0.0.1:6003/postgres?target_session_attrs=read-write&connect_timeout=2"
haproxy_uri="postgresql://postgres@127.0.0.1:5000/postgres?connect_timeout=2"

# writer NAME URI FIRST_ID: insert one row every 50 ms until stop-writers
# exists; each acknowledged insert appends "id time" to NAME.acked.
writer() {
  local name=$1 target=$2 id=$3
  while [ ! -f "$work/stop-writers" ]; do
    if psql "$target" -qAtX -v ON_ERROR_STOP=1 \
      -c "INSERT INTO drill (id, via) VALUES ($id, '$name')" >/dev/null 2>>"$work/$name.err"; then
      echo "$id $EPOCHREALTIME" >>"$work/$name.acked"
    fi
    id=$((id + 1))
    sleep 0.05
  done
}

# http_has URL TEXT: the page answers 200 and contains TEXT.
http_has() {
  python3 -c '
import sys, urllib.request
body = urllib.request.urlopen(sys.argv[1], timeout=5).read().decode()
sys.exit(0 if sys.argv[2] in body else 1)' "$1" "$2" 2>/dev/null
}

# psql inside a node's container, over its unix socket.
node_sql() {
  "${C[@]}" exec -T "$1" psql -h /var/lib/pgpilot -p 5432 -U postgres -d postgres -qAtX -c "$2"
}

settled() {
  local s
  s=$(states) || return 1
  [ "$(grep -c ' primary primary read-write$' <<<"$s")" -eq 1 ] &&
    [ "$(grep -c ' secondary secondary read-only$' <<<"$s")" -eq 2 ]
}

new_primary_up() {
  local s
  s=$(states) || return 1
  grep -E '^[^ ]+ (primary|wait_primary) [^ ]+ read-write$' <<<"$s" | grep -v "^$old " >"$work/new-primary" || return 1
  [ "$(wc -l <"$work/new-primary")" -eq 1 ]
}

old_is_secondary() {
  states | grep "^$old secondary secondary read-only$" >/dev/null
}

# run_status VAR COMMAND...: run COMMAND, its output to $work/out, its exit
# status into VAR (also when it fails: set -e stays quiet).
run_status() {
  local var=$1
  shift
  if "$@" >"$work/out" 2>&1; then printf -v "$var" 0; else printf -v "$var" %s $?; fi
}

# expect_refused STATUS TEXT WHAT COMMAND...: COMMAND (a CLI call) must exit
# with STATUS and print TEXT: 2 and "refused:" when the monitor refused the
# credentials, 3 and "unreachable" when it did not talk to the client at all.
expect_refused() {
  local want=$1 text=$2 what=$3 rc
  shift 3
  run_status rc "$@"
  if [ "$rc" != "$want" ] || ! grep -q -- "$text" "$work/out"; then
    cat "$work/out" >&2
    fail "$what was not refused as expected: exit status $rc (expected $want and \"$text\")"
  fi
}

# The lab's transport security: mutual TLS with the certificates of the
# certs service, and nothing else accepted.
standbys_over_tls() {
  [ "$(node_sql "$old" "SELECT count(*) FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) WHERE s.ssl AND r.state = 'streaming'" 2>/dev/null)" = 2 ]
}

tls_checks() {
  local svc rc
  for svc in monitor monitor2 node1 node2 node3; do
    "${C[@]}" exec -T "$svc" bash -c 'cd /etc/pgpilot/tls && stat -c "%a %U %n" *' >"$work/tls-files" 2>&1 ||
      { cat "$work/tls-files" >&2; fail "listing /etc/pgpilot/tls in $svc failed"; }
    if grep -q ' ca\.key$' "$work/tls-files" || grep '\.key$' "$work/tls-files" | grep -qv '^600 postgres '; then
      cat "$work/tls-files" >&2
      fail "$svc holds the CA's key, or a key that is not 0600 and owned by postgres"
    fi
  done
  log "check: each service holds its own certificate, keys 0600 owned by postgres, no CA key"

  wait_for 30 "both standbys streaming from $old over TLS (pg_stat_ssl)" standbys_over_tls
  log "check: both standbys stream from $old over TLS (verify-full)"

  local no_tls=(env -u PGPILOT_TLS_CA -u PGPILOT_TLS_CERT -u PGPILOT_TLS_KEY)
  local m
  for m in monitor monitor2; do
    expect_refused 3 unreachable "a plaintext (http://) client of $m" \
      "${C[@]}" exec -T "$m" "${no_tls[@]}" pgpilot-monitor --monitor http://127.0.0.1:7430 show-nodes
    expect_refused 2 refused: "a TLS client of $m without a client certificate" \
      "${C[@]}" exec -T "$m" env -u PGPILOT_TLS_CERT -u PGPILOT_TLS_KEY pgpilot-monitor --monitor "https://$m:7430" show-nodes
    expect_refused 2 refused: "node1's keeper certificate running an operator command on $m" \
      "${C[@]}" exec -T node1 pgpilot-monitor --monitor "https://$m:7430" --tls-ca /etc/pgpilot/tls/ca.crt \
      --tls-cert /etc/pgpilot/tls/keeper-default-node1.crt --tls-key /etc/pgpilot/tls/keeper-default-node1.key show-nodes
  done
  log "check: both monitors refuse plaintext, a client without a certificate, and a keeper's certificate for operator commands"

  # The CLI on this host, through the published port, with the operator
  # certificate copied out of the monitor's container (as README shows).
  local cli=""
  if [ "$local_build" -eq 1 ]; then
    cli=$PWD/compose/.bin/pgpilot-monitor
  elif command -v pgpilot-monitor >/dev/null 2>&1; then
    cli=$(command -v pgpilot-monitor)
  fi
  if [ -z "$cli" ]; then
    log "no pgpilot-monitor on this host (--local builds one): the CLI from the host is not checked"
    return
  fi
  rm -rf "$work/tls"
  mkdir -p "$work/tls"
  "${C[@]}" exec -T monitor tar -C /etc/pgpilot/tls -c ca.crt operator-lab.crt operator-lab.key |
    tar -C "$work/tls" -x --no-same-owner || fail "copying the operator certificate out of the monitor's container failed"
  local host_tls=(--tls-ca "$work/tls/ca.crt" --tls-cert "$work/tls/operator-lab.crt" --tls-key "$work/tls/operator-lab.key")
  local port
  for port in 7430 7431; do
    run_status rc env -u PGPILOT_MONITOR -u PGPILOT_TLS_CA -u PGPILOT_TLS_CERT -u PGPILOT_TLS_KEY \
      "$cli" --monitor "https://127.0.0.1:$port" "${host_tls[@]}" show-nodes
    [ "$rc" = 0 ] || { cat "$work/out" >&2; fail "the CLI on this host cannot reach the monitor at https://127.0.0.1:$port (exit status $rc)"; }
  done
  expect_refused 3 unreachable "a plaintext (http://) client on this host" \
    env -u PGPILOT_MONITOR -u PGPILOT_TLS_CA -u PGPILOT_TLS_CERT -u PGPILOT_TLS_KEY "$cli" --monitor http://127.0.0.1:7430 show-nodes
  log "check: the CLI on this host reaches https://127.0.0.1:7430 and :7431 with the operator certificate; http:// is refused"
}

acked_after() { # FILE TIME: acknowledged inserts after TIME
  awk -v t="$2" '$2 > t' "$1" 2>/dev/null | wc -l
}

haproxy_writes_again() {
  [ "$(acked_after "$work/haproxy.acked" "$fault_at")" -ge 10 ] &&
    [ "$(acked_after "$work/uri.acked" "$fault_at")" -ge 10 ]
}

# Every acknowledged id is on NODE.
all_rows_on() {
  node_sql "$1" "SELECT id FROM drill ORDER BY id" >"$work/present" 2>/dev/null || return 1
  sort -n "$work/acked-ids" | comm -23 - <(sort -n "$work/present") >"$work/missing"
  [ ! -s "$work/missing" ]
}

# outage FILE: the longest time between two consecutive acknowledged writes
# from just before the fault on (the write outage the client saw).
outage() {
  sort -k2 -g "$1" | awk -v t="$fault_at" '
    $2 + 0 >= t - 1 { if (prev != "" && $2 - prev > gap) gap = $2 - prev; prev = $2 }
    END { if (gap == "") print "n/a"; else printf "%.2f", gap }'
}

# The nodes other than $old, one a line.
survivors() {
  printf '%s\n' node1 node2 node3 | grep -vx "$old"
}

# keeper_monitor NODE: the monitor URL NODE's keeper uses (field "monitor"
# of its /health, published on 127.0.0.1:800N).
keeper_monitor() {
  python3 -c '
import json, sys, urllib.error, urllib.request
try:
    body = urllib.request.urlopen(sys.argv[1], timeout=5).read()
except urllib.error.HTTPError as e:
    body = e.read()
print(json.loads(body).get("monitor") or "")' "http://127.0.0.1:800${1#node}/health" 2>/dev/null
}

survivors_use_monitor2() {
  local n
  for n in $(survivors); do
    [ "$(keeper_monitor "$n")" = https://monitor2:7430 ] || return 1
  done
}

# monitor2 answers show-state (the CLI's first monitor is dead) and holds
# the lease.
monitor2_holds_lease() {
  monitors >"$work/monitors" || return 1
  grep -qx 'answered https://monitor2:7430' "$work/monitors" &&
    grep -qx 'https://monitor2:7430 true [0-9]*' "$work/monitors"
}

container_healthy() {
  [ "$(docker inspect -f '{{.State.Health.Status}}' "$1" 2>/dev/null)" = healthy ]
}

drill() {
  local variant=$1
  local start=$SECONDS
  log "== variant $variant: lab up"
  rm -f "$work"/*.acked "$work"/*.err "$work/stop-writers"
  lab_up=1
  # A lab left by an earlier, killed drill would not start fresh.
  "${C[@]}" down -v --remove-orphans >"$work/down.log" 2>&1 || { cat "$work/down.log" >&2; fail "docker compose down of an earlier lab failed"; }
  "${C[@]}" up -d --no-build >"$work/up.log" 2>&1 || { cat "$work/up.log" >&2; fail "docker compose up failed"; }
  wait_for 240 "a primary and two secondaries" settled
  old=$(states | awk '$2 == "primary" { print $1 }')
  log "settled: $old is primary ($((SECONDS - start))s)"
  wait_for 30 "show-state listing two monitors, exactly one holding the lease" two_monitors_one_lease 2
  log "check: show-state lists two monitors ($(awk '{ printf "%s%s", sep, $1; sep = ", " }' "$work/live-monitors")); $(cat "$work/holder") holds the lease"

  # Every process of the lab runs as a non-root user.
  local svc cid
  for svc in monitor-db monitor monitor2 node1 node2 node3 haproxy; do
    cid=$("${C[@]}" ps -q "$svc")
    docker top "$cid" -eo pid,uid,comm >"$work/top" || fail "docker top $svc failed"
    if ! awk 'NR > 1 { n++; if ($2 == 0) root = 1 } END { exit !(n > 0 && !root) }' "$work/top"; then
      cat "$work/top" >&2
      fail "a process of $svc runs as root (or none was listed)"
    fi
  done
  log "check: every process of every service runs as a non-root user"
  http_has http://127.0.0.1:9187/metrics pgpilot_ || fail "the monitor's /metrics (127.0.0.1:9187) does not answer with pgpilot metrics"
  http_has http://127.0.0.1:9188/metrics pgpilot_ || fail "monitor2's /metrics (127.0.0.1:9188) does not answer with pgpilot metrics"
  http_has http://127.0.0.1:8001/metrics pgpilot_keeper || fail "node1's /metrics (127.0.0.1:8001) does not answer with keeper metrics"
  http_has "http://127.0.0.1:7000/;csv" primary,node1 || fail "HAProxy's statistics page (127.0.0.1:7000) does not answer"
  log "check: both monitors' and a keeper's /metrics and the HAProxy statistics page answer"
  tls_checks

  node_sql "$old" "CREATE TABLE drill (id bigint PRIMARY KEY, via text NOT NULL, at timestamptz NOT NULL DEFAULT now())" >/dev/null ||
    fail "creating the drill's table on $old failed"
  writer uri "$uri" 1 &
  writer haproxy "$haproxy_uri" 1000000001 &
  fault_at=$EPOCHREALTIME # placeholder until the fault, for the wait below
  wait_for 30 "both writers acknowledging" haproxy_writes_again
  local old_cid monitor_cid
  old_cid=$("${C[@]}" ps -q "$old")
  monitor_cid=$("${C[@]}" ps -q monitor)
  fault_at=$EPOCHREALTIME
  local fault_start=$SECONDS
  case "$variant" in
    stop)
      log "docker stop $old (the primary)"
      docker stop "$old_cid" >/dev/null ;;
    partition)
      log "docker network disconnect $network $old (the primary)"
      docker network disconnect "$network" "$old_cid" ;;
    monitor)
      # Both at once: the keepers lose the monitor they talk to while the
      # primary goes (its keeper's handover too has to find monitor2).
      log "docker kill monitor (the keepers' first monitor; $(cat "$work/holder") held the lease) and docker stop $old (the primary), at once"
      local kill_pid stop_pid
      docker kill "$monitor_cid" >/dev/null &
      kill_pid=$!
      docker stop "$old_cid" >/dev/null &
      stop_pid=$!
      wait "$kill_pid" || fail "docker kill of the monitor failed"
      wait "$stop_pid" || fail "docker stop $old failed" ;;
  esac
  wait_for 60 "a new primary after losing $old" new_primary_up
  local new
  new=$(awk '{ print $1 }' "$work/new-primary")
  local elected=$((SECONDS - fault_start))
  log "new primary: $new (${elected}s after the fault)"
  if [ "$variant" = stop ]; then
    # docker stop sends SIGTERM to the keeper: it hands over, as in a
    # switchover, instead of leaving the monitor to detect a dead node.
    cli show-events --count 50 --json | python3 -c '
import json, sys
events = json.load(sys.stdin)
kinds = {e.get("kind") for e in events}
sys.exit(0 if "keeper_stopping" in kinds and not kinds & {"primary_unhealthy", "primary_postgres_down"} else 1)' ||
      fail "docker stop of $old was not a hand-over (no keeper_stopping event, or a failover event)"
    log "check: docker stop of $old handed over (keeper_stopping; no failover)"
  fi
  if [ "$variant" = monitor ]; then
    [ "$(docker inspect -f '{{.State.Running}}' "$monitor_cid")" = false ] ||
      fail "the monitor container runs again: the failover was not made without it"
    wait_for 10 "monitor2 answering show-state and holding the lease" monitor2_holds_lease
    wait_for 10 "the keepers of $(survivors | tr '\n' ' ')using monitor2 (their /health)" survivors_use_monitor2
    log "check: monitor stays dead; monitor2 answers and holds the lease; the keepers of $(survivors | tr '\n' ' ')use https://monitor2:7430"
  fi
  wait_for 60 "writes acknowledged again through the URI and through HAProxy port 5000" haproxy_writes_again
  local via
  via=$(psql "$haproxy_uri" -qAtX -c "SELECT current_setting('cluster_name')")
  [ "$via" = "pgpilot_$(cli show-node "$new" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["node_id"])')" ] ||
    fail "HAProxy port 5000 leads to $via, not to the new primary $new"
  touch "$work/stop-writers"
  wait
  cat "$work/uri.acked" "$work/haproxy.acked" | awk '{ print $1 }' >"$work/acked-ids"
  local acked
  acked=$(wc -l <"$work/acked-ids")
  all_rows_on "$new" || fail "$(wc -l <"$work/missing") acknowledged rows are missing on the new primary $new (first: $(head -n 3 "$work/missing" | tr '\n' ' '))"
  log "check: all $acked acknowledged rows are on $new"

  if [ "$variant" = monitor ]; then
    log "docker start monitor"
    docker start "$monitor_cid" >/dev/null
    wait_for 60 "the monitor container healthy again" container_healthy "$monitor_cid"
    # The killed process stays listed (seen ever longer ago) beside the new one.
    wait_for 30 "show-state listing the restarted monitor beside monitor2, one holding the lease" two_monitors_one_lease 3
    log "check: monitor is back: show-state lists it again beside monitor2; $(cat "$work/holder") holds the lease"
  fi

  local back_start=$SECONDS
  case "$variant" in
    stop | monitor)
      log "docker start $old"
      docker start "$old_cid" >/dev/null ;;
    partition)
      log "docker network connect $network $old"
      docker network connect --alias "$old" "$network" "$old_cid" ;;
  esac
  wait_for 180 "$old back as a secondary" old_is_secondary
  local rejoined=$((SECONDS - back_start))
  log "$old is secondary again (${rejoined}s)"
  wait_for 60 "every acknowledged row on $old" all_rows_on "$old"
  log "check: all $acked acknowledged rows are on $old"

  if [ "$variant" = stop ]; then
    # The operator commands work from the host through a monitor's container.
    log "docker compose exec monitor pgpilot-monitor perform-failover"
    "${C[@]}" exec -T monitor pgpilot-monitor perform-failover --timeout 90s >"$work/failover.log" 2>&1 ||
      { cat "$work/failover.log" >&2; fail "perform-failover did not finish"; }
    wait_for 90 "a primary and two secondaries after perform-failover" settled
    local after
    after=$(states | awk '$2 == "primary" { print $1 }')
    [ "$after" != "$new" ] || fail "perform-failover left $new primary"
    log "check: perform-failover moved the primary from $new to $after"
  fi

  teardown
  local took=$((SECONDS - start))
  report+=("$(printf '%-10s %-6s %-6s %8ss %12ss %9ss %11ss %6s %5s %6ss' "$variant" "$old" "$new" \
    "$(outage "$work/uri.acked")" "$(outage "$work/haproxy.acked")" "$elected" "$rejoined" "$acked" 0 "$took")")
  log "== variant $variant passed (${took}s)"
}

for variant in "${variants[@]}"; do
  drill "$variant"
done

echo
echo "pgpilot compose drill: every check passed ($((SECONDS - drill_start))s in all)"
printf '%-10s %-6s %-6s %9s %13s %10s %12s %6s %5s %7s\n' variant old new "outage" "outage:5000" "elected" "rejoined" acked lost time
for line in "${report[@]}"; do echo "$line"; done
echo "outage: longest gap between acknowledged writes around the fault (writer through the"
echo "multi-host URI / through HAProxy port 5000); elected: fault to new primary seen;"
echo "rejoined: old node back to secondary after docker start / network connect;"
echo "time: the whole variant, lab up to lab down. The monitor variant kills the"
echo "keepers' monitor at the primary's fault: its failover is made through monitor2."
