#!/usr/bin/env bash
# Runs every test of pgpilot: unit, property and end-to-end tests on real
# PostgreSQL processes. Installs what is missing first.
#   scripts/test.sh                 all tests
#   scripts/test.sh -E 'test(two)'  extra arguments go to cargo nextest
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --workspace --all-targets

# The keeper's PostgreSQL controller test runs a real PostgreSQL, which
# refuses root: as root, run that test binary again as the postgres user.
if [ "$(id -u)" -eq 0 ] && [ $# -eq 0 ]; then
  bin=$(cargo test -p pgpilot-keeper --lib --no-run 2>&1 | grep -oE 'target/[a-z]+/deps/pgpilot_keeper-[0-9a-f]+' | head -n 1)
  dir=$(mktemp -d /tmp/pgpilot-keeper-test.XXXXXX)
  cp "$bin" "$dir/keeper-tests"
  chown -R postgres "$dir"
  chmod 755 "$dir" "$dir/keeper-tests"
  (cd "$dir" && runuser -u postgres -- ./keeper-tests pg::tests::real_postgres_end_to_end)
  rm -rf "$dir"
fi

exec cargo nextest run --workspace --no-fail-fast "$@"
