#!/bin/bash
# The monitor's own PostgreSQL: initdb on the first start (trusting the lab
# network, lab only), a database named pgpilot, then PostgreSQL in the
# foreground.
set -euo pipefail
data=/var/lib/pgpilot/data
if [ ! -f "$data/PG_VERSION" ]; then
  initdb -D "$data" -U postgres --auth=trust --encoding=UTF8 --no-instructions >/dev/null
  echo "host all all samenet trust" >>"$data/pg_hba.conf"
  echo "CREATE DATABASE pgpilot" | postgres --single -D "$data" postgres >/dev/null
fi
exec postgres -D "$data" -c listen_addresses='*' -c port=5432 \
  -c unix_socket_directories=/run/pgpilot
