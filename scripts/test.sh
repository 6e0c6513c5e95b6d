#!/usr/bin/env bash
# Runs every test of pgpilot: unit, property and end-to-end tests on real
# PostgreSQL processes. Installs what is missing first.
#   scripts/test.sh                 all tests
#   scripts/test.sh -E 'test(two)'  extra arguments go to cargo nextest
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --workspace --all-targets
exec cargo nextest run --workspace --no-fail-fast "$@"
