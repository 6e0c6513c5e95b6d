#!/usr/bin/env bash
# The local lab: a monitor database, a monitor and three PostgreSQL nodes
# on 127.0.0.1, no Docker. Prints the state table and the connection
# string; Ctrl-C tears everything down. Installs what is missing first.
#   scripts/lab.sh [--nodes N] [--dir PATH]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The same build as scripts/test.sh (all targets: the tests' dependencies
# unify some crates' features), so that running one after the other
# compiles nothing again.
cargo build --workspace --all-targets
exec target/debug/pgpilot-lab "$@"
