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
# The monitor's certificate names "monitor" (how keepers reach it on the lab
# network) and localhost / 127.0.0.1 (the CLI in the monitor's container, or
# on the host through the published port). The monitor's container also
# gets the operator certificate operator:lab for the CLI; each node its
# keeper's certificate and its PostgreSQL's (postgres-NODE, naming NODE, for
# TLS between the nodes). Keys are 0600 and
# owned by postgres, the user every lab container runs as.
set -euo pipefail
ca=/etc/pgpilot/tls
out=/var/lib/pgpilot-tls
nodes=(node1 node2 node3)
operator=lab

files=(ca.crt ca.key monitor.crt monitor.key "operator-$operator.crt" "operator-$operator.key")
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
for n in "${nodes[@]}"; do give "$out/$n" "keeper-default-$n" "postgres-$n"; done
echo "certificates handed to monitor and ${nodes[*]}"
