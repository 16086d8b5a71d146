#!/usr/bin/env bash
# Artifact serving: the same ~120 MB image archive served on loopback by
# nginx (`sendfile on`) and by `wwctl server`, measured with wrk in the same
# run: 32 connections against each, then 1,000 concurrent downloads against
# each (errors counted). Prints GB/s (best of REPEAT alternating runs), the
# ratio ours/nginx and the head's peak RSS (VmHWM).
#
#   bench/http.sh                      # builds wwctl --release first
#   WWCTL=target/debug/wwctl bench/http.sh
#   SIZE_MB=120 SECONDS_PER_RUN=10 REPEAT=3 bench/http.sh
#
# Only the processes it starts are stopped; the temp site is removed.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MB=${SIZE_MB:-120}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
OURS_PORT=${OURS_PORT:-19873}
NGINX_PORT=${NGINX_PORT:-19880}
MAC=aa:bb:cc:dd:ee:01

need() { command -v "$1" >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null; }; }
need nginx nginx-light
need wrk wrk
need curl curl

if [[ -z "${WWCTL:-}" ]]; then
  cargo build --release -q -p head
  WWCTL=$PWD/target/release/wwctl
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

# --- a site with one node and one image whose archive is ~SIZE_MB (random
# data does not compress, so the archive is as large as the tree).
mkdir -p "$tmp/etc/warewulf" "$tmp/chroots/bench/rootfs/boot" "$tmp/var"
echo "not a kernel" > "$tmp/chroots/bench/rootfs/boot/vmlinuz-6.1.0"
head -c "${SIZE_MB}M" /dev/urandom > "$tmp/chroots/bench/rootfs/payload"
cat > "$tmp/warewulf.conf" <<CONF
ipaddr: 127.0.0.1
warewulf:
  port: $OURS_PORT
  secure: false
dhcp:
  enabled: false
tftp:
  enabled: false
paths:
  sysconfdir: $tmp/etc
  localstatedir: $tmp/var
  cachedir: $tmp/var
  wwchrootdir: $tmp/chroots
  wwprovisiondir: $tmp/provision
  wwoverlaydir: $tmp/overlays
CONF
cat > "$tmp/etc/warewulf/nodes.conf" <<CONF
nodeprofiles: {}
nodes:
  n1:
    image name: bench
    network devices:
      default:
        hwaddr: $MAC
CONF
export WAREWULFCONF=$tmp/warewulf.conf
"$WWCTL" image build bench >/dev/null
artifact=$tmp/provision/images/bench.img.gz
size=$(stat -c %s "$artifact")
# nginx workers run as an unprivileged user.
chmod -R a+rX "$tmp"

# --- nginx, serving the very same file
cat > "$tmp/nginx.conf" <<CONF
worker_processes auto;
daemon off;
pid $tmp/nginx.pid;
error_log $tmp/nginx.err warn;
events { worker_connections 8192; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  client_body_temp_path $tmp/ngx-body;
  proxy_temp_path $tmp/ngx-proxy;
  fastcgi_temp_path $tmp/ngx-fcgi;
  uwsgi_temp_path $tmp/ngx-uwsgi;
  scgi_temp_path $tmp/ngx-scgi;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    root $tmp/provision/images;
  }
}
CONF
nginx -c "$tmp/nginx.conf" -e "$tmp/nginx.err" & pids+=($!)
"$WWCTL" server > "$tmp/server.log" 2>&1 & ours=$!; pids+=($ours)

wait_up() { for _ in $(seq 100); do curl -sf -o /dev/null -r 0-0 "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }
NGINX_URL=http://127.0.0.1:$NGINX_PORT/bench.img.gz
OURS_URL=http://127.0.0.1:$OURS_PORT/image/$MAC
wait_up "$NGINX_URL"; wait_up "$OURS_URL"
# Same bytes from both; warms the page cache.
a=$(curl -s "$NGINX_URL" | sha256sum); b=$(curl -s "$OURS_URL" | sha256sum)
[[ $a == "$b" ]] || { echo "bodies differ: nginx $a, ours $b" >&2; cat "$tmp/server.log" >&2; exit 1; }

# wrk prints "Transfer/sec: 1.87GB"; convert to GB/s.
gbps() { awk '/^Transfer\/sec/ { v=$2; u=substr(v, length(v)-1); n=substr(v, 1, length(v)-2);
  f = (u=="GB") ? 1 : (u=="MB") ? 1/1024 : (u=="KB") ? 1/1048576 : 1/1073741824; printf "%.3f", n*f }'; }
errors() { awk '/Socket errors/ { gsub(",", ""); s += $4 + $6 + $8 + $10 } /Non-2xx/ { s += $NF } END { print s+0 }'; }
run() { # url connections
  wrk -t2 -c"$2" -d"${SECONDS_PER_RUN}s" --timeout 60s "$1" 2>&1 || true
}

# The machine is shared: each figure is the best of REPEAT runs, nginx and
# ours alternating, so a burst of outside load hits both alike.
REPEAT=${REPEAT:-3}
best() { sort -g | tail -1; }
echo "artifact: $size bytes; best of $REPEAT runs of $SECONDS_PER_RUN s each; $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
for c in 32 1000; do
  n_all=() o_all=() n_err=0 o_err=0
  for _ in $(seq "$REPEAT"); do
    out=$(run "$NGINX_URL" "$c"); n_all+=("$(gbps <<<"$out")"); n_err=$((n_err + $(errors <<<"$out")))
    out=$(run "$OURS_URL" "$c"); o_all+=("$(gbps <<<"$out")"); o_err=$((o_err + $(errors <<<"$out")))
  done
  n=$(printf '%s\n' "${n_all[@]}" | best); o=$(printf '%s\n' "${o_all[@]}" | best)
  ratio=$(awk -v o="$o" -v n="$n" 'BEGIN { printf "%.2f", (n > 0) ? o / n : 0 }')
  printf '%5d connections: nginx %s GB/s (runs: %s; %d errors), ours %s GB/s (runs: %s; %d errors), ratio ours/nginx %s\n' \
    "$c" "$n" "${n_all[*]}" "$n_err" "$o" "${o_all[*]}" "$o_err" "$ratio"
done
printf 'head RSS peak (VmHWM): %s\n' "$(awk '/VmHWM/ {print $2, $3}' "/proc/$ours/status")"
