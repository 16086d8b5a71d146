#!/usr/bin/env bash
# DHCP load: perfdhcp (kea-admin) with 100,000 distinct clients against
# Ironwulf's embedded DHCP server and against dnsmasq, in the same run, over
# a veth pair between two network namespaces this script creates (and
# deletes). The /12 subnet holds every client, so neither server runs out. Every run is bounded: -p seconds and -R clients.
#
#   bench/dhcp.sh            # saturation + 2,000/s drop check, ours vs dnsmasq
#
# Prints one summary line per figure. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
CLIENTS=${CLIENTS:-100000}
OURS_RATE=${OURS_RATE:-20000}     # offered rate when measuring saturation
DNSMASQ_RATE=${DNSMASQ_RATE:-300} # dnsmasq saturates near 220/s here
STEADY_RATE=${STEADY_RATE:-2000}

need() { command -v "$1" >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null; }; }
need perfdhcp kea-admin
need dnsmasq dnsmasq-base
need ip iproute2

if [ -z "${WWCTL:-}" ]; then
  cargo build --release -q -p head
  WWCTL=$PWD/target/release/wwctl
fi

tmp=$(mktemp -d)
SRV=iwbs$$ CLI=iwbc$$
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  ip netns del "$SRV" 2>/dev/null || true
  ip netns del "$CLI" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip netns add "$SRV"; ip netns add "$CLI"
ip link add vs$$ netns "$SRV" type veth peer name vc$$ netns "$CLI"
ip -n "$SRV" addr add 10.96.0.1/12 dev vs$$
ip -n "$CLI" addr add 10.96.0.2/12 dev vc$$
for ns in "$SRV" "$CLI"; do ip -n "$ns" link set lo up; done
ip -n "$SRV" link set vs$$ up; ip -n "$CLI" link set vc$$ up

# perfdhcp prints "Rate: N 4-way exchanges/second" and per-exchange drops.
perf() { # rate
  ip netns exec "$CLI" timeout $((SECONDS_PER_RUN + 30)) \
    perfdhcp -4 -l vc$$ -r "$1" -R "$CLIENTS" -p "$SECONDS_PER_RUN" 2>&1 || true
}
rate_of() { awk '/^Rate:/ {print $2; exit}' ; }
drops_of() { awk '/drops:/ {s+=$2} END {print s+0}' ; }
sent_of() { awk '/sent packets:/ {s+=$3} END {print s+0}' ; }

# --- ours
mkdir -p "$tmp/ours/etc/warewulf"
cat > "$tmp/ours/etc/warewulf/warewulf.conf" <<CONF
ipaddr: 10.96.0.1
netmask: 255.240.0.0
warewulf:
  port: 19873
dhcp:
  enabled: true
  range start: 10.96.1.0
  range end: 10.111.255.250
  interfaces: [vs$$]
tftp:
  enabled: false
paths:
  sysconfdir: $tmp/ours/etc
  localstatedir: $tmp/ours/var
  wwprovisiondir: $tmp/ours/provision
  wwchrootdir: $tmp/ours/chroots
  wwoverlaydir: $tmp/ours/overlays
CONF
echo 'nodes: {}' > "$tmp/ours/etc/warewulf/nodes.conf"

run_ours() { # rate output-file
  rm -rf "$tmp/ours/var"
  ip netns exec "$SRV" "$WWCTL" --warewulfconf "$tmp/ours/etc/warewulf/warewulf.conf" server 2>"$tmp/ours.log" &
  local pid=$!; pids+=("$pid"); sleep 1
  perf "$1" > "$2"
  grep VmHWM "/proc/$pid/status" >> "$2" 2>/dev/null || true
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
run_dnsmasq() { # rate output-file
  rm -f "$tmp/dnsmasq.leases"
  ip netns exec "$SRV" dnsmasq --no-daemon --port=0 --no-ping --dhcp-authoritative --quiet-dhcp \
    --dhcp-lease-max=200000 --dhcp-range=10.96.1.0,10.111.255.250,2m --interface=vs$$ --bind-interfaces \
    --dhcp-leasefile="$tmp/dnsmasq.leases" --pid-file="$tmp/dnsmasq.pid" --conf-file=/dev/null 2>"$tmp/dnsmasq.log" &
  local pid=$!; pids+=("$pid"); sleep 1
  perf "$1" > "$2"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

echo "# perfdhcp -4 -R $CLIENTS -p $SECONDS_PER_RUN, veth between two namespaces, $(nproc) cores"
run_ours "$OURS_RATE" "$tmp/ours_sat.txt"
run_dnsmasq "$DNSMASQ_RATE" "$tmp/dnsmasq_sat.txt"
run_ours "$STEADY_RATE" "$tmp/ours_steady.txt"
ours_sat=$(cat "$tmp/ours_sat.txt")
dm_sat=$(cat "$tmp/dnsmasq_sat.txt")
ours_steady=$(cat "$tmp/ours_steady.txt")

o_rate=$(rate_of <<<"$ours_sat"); d_rate=$(rate_of <<<"$dm_sat")
printf 'ironwulf saturation: %s leases/s offered %s/s (drops %s of %s sent)\n' "$o_rate" "$OURS_RATE" "$(drops_of <<<"$ours_sat")" "$(sent_of <<<"$ours_sat")"
printf 'dnsmasq  saturation: %s leases/s offered %s/s (drops %s of %s sent)\n' "$d_rate" "$DNSMASQ_RATE" "$(drops_of <<<"$dm_sat")" "$(sent_of <<<"$dm_sat")"
awk -v o="$o_rate" -v d="$d_rate" 'BEGIN { if (d > 0) printf "ratio ironwulf/dnsmasq: %.1fx\n", o / d }'
printf 'ironwulf at %s/s: %s leases/s, drops %s of %s sent\n' "$STEADY_RATE" "$(rate_of <<<"$ours_steady")" "$(drops_of <<<"$ours_steady")" "$(sent_of <<<"$ours_steady")"
grep -h 'avg delay\|avg' <<<"$ours_steady" | head -2 | sed 's/^/ironwulf steady /'
grep -h VmHWM <<<"$ours_sat" | sed 's/^/ironwulf peak RSS /' || true
if [ -n "${VERBOSE:-}" ]; then printf '%s\n---\n%s\n---\n%s\n' "$ours_sat" "$dm_sat" "$ours_steady"; fi
