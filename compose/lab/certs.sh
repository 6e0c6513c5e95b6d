#!/bin/bash
# The compose lab's one-shot "certs" service: a throw-away CA and the
# certificates of the lab, made with `pgpilot-monitor gen-certs` on the
# first start and kept in the lab's volumes until `down -v`.
#
#   /etc/pgpilot/tls            (volume tls-ca, this service only) the CA and
#                               every certificate; ca.key never leaves it
#   /var/lib/pgpilot-tls/SVC    (volume tls-SVC, mounted read-only at
#                               /etc/pgpilot/tls in service SVC) what SVC needs
#
# Each monitor has its own certificate naming its service name (how keepers
# and the CLI reach it on the lab network: monitor.crt names "monitor",
# monitor2.crt "monitor2") and localhost / 127.0.0.1 (the CLI on the host
# through the published ports). Both monitor containers also get the
# operator certificate operator:lab for the CLI; each node its keeper's
# certificate and its PostgreSQL's (postgres-NODE, naming NODE, for TLS
# between the nodes). Keys are 0600 and owned by postgres, the user every
# lab container runs as.
set -euo pipefail
ca=/etc/pgpilot/tls
out=/var/lib/pgpilot-tls
nodes=(node1 node2 node3)
operator=lab

files=(ca.crt ca.key monitor.crt monitor.key monitor2.crt monitor2.key
  "operator-$operator.crt" "operator-$operator.key")
for n in "${nodes[@]}"; do
  files+=("keeper-default-$n.crt" "keeper-default-$n.key" "postgres-$n.crt" "postgres-$n.key")
done
missing=0
for f in "${files[@]}"; do [ -f "$ca/$f" ] || missing=1; done
if [ "$missing" -eq 1 ]; then
  args=(--dir "$ca" --monitor-host monitor --monitor-host localhost --monitor-host 127.0.0.1
    --operator "$operator")
  for n in "${nodes[@]}"; do args+=(--keeper "default/$n" --postgres "$n=$n"); done
  pgpilot-monitor gen-certs "${args[@]}"
  # gen-certs writes one monitor.crt per directory: monitor2's is made in a
  # scratch directory (in this volume) holding a copy of the same CA.
  scratch=$(mktemp -d "$ca/monitor2.XXXXXX")
  install -m 0644 "$ca/ca.crt" "$scratch/ca.crt"
  install -m 0600 "$ca/ca.key" "$scratch/ca.key"
  pgpilot-monitor gen-certs --dir "$scratch" --monitor-host monitor2 --monitor-host localhost \
    --monitor-host 127.0.0.1
  mv "$scratch/monitor.crt" "$ca/monitor2.crt"
  mv "$scratch/monitor.key" "$ca/monitor2.key"
  rm -rf "$scratch"
else
  echo "certificates exist in $ca (down -v removes them)"
fi

# give DEST_DIR STEM...: STEM.crt (0644) and STEM.key (0600) into DEST_DIR.
give() {
  local dest=$1
  shift
  install -m 0644 "$ca/ca.crt" "$dest/ca.crt"
  for stem in "$@"; do
    install -m 0644 "$ca/$stem.crt" "$dest/$stem.crt"
    install -m 0600 "$ca/$stem.key" "$dest/$stem.key"
  done
}
give "$out/monitor" monitor "operator-$operator"
give "$out/monitor2" monitor2 "operator-$operator"
for n in "${nodes[@]}"; do give "$out/$n" "keeper-default-$n" "postgres-$n"; done
echo "certificates handed to monitor, monitor2 and ${nodes[*]}"
