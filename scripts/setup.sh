#!/usr/bin/env bash
# Installs what pgpilot needs to build and test when it is missing:
# protoc (protobuf-compiler), the PostgreSQL 15 server and client,
# Prometheus (for the observability test; its daemon is not started), and
# cargo-nextest. Debian/Ubuntu only; uses sudo when not root.
set -euo pipefail

need=()
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 && ! command -v pg_ctl >/dev/null 2>&1; then
  need+=(postgresql-15)
fi
command -v psql >/dev/null 2>&1 || need+=(postgresql-client-15)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
# The observability test starts its own Prometheus on a free 127.0.0.1 port.
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)

if [ ${#need[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: missing ${need[*]} and no apt-get here: install them with your package manager" >&2
    exit 1
  fi
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing ${need[*]} ..." >&2
  $sudo apt-get update -qq
  # No package may start its daemon (Debian's prometheus would take port
  # 9090): policy-rc.d exit 101 forbids it, for this install only.
  policy_added=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod +x /usr/sbin/policy-rc.d
    policy_added=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  if [ -n "$policy_added" ]; then $sudo rm -f /usr/sbin/policy-rc.d; fi
  # Debian starts a default cluster on 5432; pgpilot never uses it.
  if [ -x /usr/bin/pg_lsclusters ] && pg_lsclusters -h 2>/dev/null | grep -q online; then
    $sudo pg_ctlcluster 15 main stop 2>/dev/null || true
  fi
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo not found: install Rust (https://rustup.rs) first" >&2
  exit 1
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest ..." >&2
  cargo install cargo-nextest --locked
fi
