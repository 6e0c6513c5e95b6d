#!/usr/bin/env bash
# Installs what pgpilot needs to build and test when it is missing:
# protoc (protobuf-compiler), the PostgreSQL 15 server and client, and
# cargo-nextest. Debian/Ubuntu only; uses sudo when not root.
set -euo pipefail

need=()
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 && ! command -v pg_ctl >/dev/null 2>&1; then
  need+=(postgresql-15)
fi
command -v psql >/dev/null 2>&1 || need+=(postgresql-client-15)
command -v cc >/dev/null 2>&1 || need+=(build-essential)

if [ ${#need[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: missing ${need[*]} and no apt-get here: install them with your package manager" >&2
    exit 1
  fi
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing ${need[*]} ..." >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
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
