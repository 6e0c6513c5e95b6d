#!/usr/bin/env bash
# The local lab: a monitor database, a monitor and three PostgreSQL nodes
# on 127.0.0.1, no Docker. Prints the state table and the connection
# string; Ctrl-C tears everything down. Installs what is missing first.
#   scripts/lab.sh [--nodes N] [--dir PATH]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --workspace --bins
exec target/debug/pgpilot-lab "$@"
