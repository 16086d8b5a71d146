#!/usr/bin/env bash
# Boot a small cluster from an Ironwulf head, on one machine (root, Debian 12):
#
#   1. install what is missing, build every binary (`cargo build --release`),
#      fetch Debian's kernel (scripts/fetch-kernel.sh);
#   2. make a temporary site: warewulf.conf, two nodes in nodes.conf, a small
#      busybox image with Debian's kernel, built with `wwctl image build` and
#      `wwctl overlay build`;
#   3. make a private network (a namespace with a bridge and two taps; no
#      packet leaves it) and start `wwctl server` there: embedded DHCP, TFTP,
#      HTTP;
#   4. power on two QEMU nodes (TCG, SeaBIOS + iPXE): DHCP → iPXE script →
#      kernel, image and overlays over HTTP → /init, which prints the host
#      name and /etc/hosts the overlays gave it, then powers off;
#   5. print the head's /status and clean up (--keep leaves the head running).
#
# The full Debian image with systemd, wwinit and wwclient arrives with the
# boot-matrix issue; this image's /init is a busybox script.
set -euo pipefail

keep=0
[[ "${1:-}" == "--keep" ]] && keep=1

repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
step() { printf '\n==== %s ====\n' "$*"; }
marker="IRONWULF-DEMO:"

step "prerequisites"
need=()
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
[[ -e /usr/lib/ipxe/qemu/pxe-virtio.rom || -e /usr/lib/ipxe/undionly.kpxe ]] || need+=(ipxe)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
if ((${#need[@]})); then
  echo "installing ${need[*]}"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"
fi
echo "ok"

step "cargo build --release"
cargo build --release
wwctl="${CARGO_TARGET_DIR:-$repo/target}/release/wwctl"

step "fetch Debian's kernel"
vmlinuz="$(scripts/fetch-kernel.sh amd64)"
echo "kernel: $vmlinuz"

site="$(mktemp -d /tmp/ironwulf-demo.XXXXXX)"
ns="iwdemo$$"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$site"
}
if ((keep == 0)); then
  trap cleanup EXIT
  trap 'exit 130' INT TERM
fi

step "a temporary site in $site"
mkdir -p "$site"/{etc/warewulf,chroots,overlays,provision,var,tftpboot}
conf="$site/etc/warewulf/warewulf.conf"
cat >"$conf" <<CONF
ipaddr: 10.99.0.1/24
warewulf:
  port: 9873
  secure: false
dhcp:
  enabled: true
  range start: 10.99.0.100
  range end: 10.99.0.200
  interfaces: [br0]
tftp:
  enabled: true
  tftproot: $site/tftpboot
paths:
  sysconfdir: $site/etc
  localstatedir: $site/var
  wwoverlaydir: $site/overlays
  wwchrootdir: $site/chroots
  wwprovisiondir: $site/provision
  ipxesource: /usr/lib/ipxe
CONF
cat >"$site/etc/warewulf/nodes.conf" <<'NODES'
nodeprofiles:
  default:
    image name: demo
    system overlay: [hostname, hosts, issue]
    runtime overlay: [hosts]
    kernel:
      args: [console=ttyS0, panic=-1, quiet]
nodes:
  n01:
    profiles: [default]
    network devices:
      default:
        hwaddr: 52:54:00:00:00:01
        ipaddr: 10.99.0.11
        netmask: 255.255.255.0
  n02:
    profiles: [default]
    network devices:
      default:
        hwaddr: 52:54:00:00:00:02
        ipaddr: 10.99.0.12
        netmask: 255.255.255.0
NODES
export WAREWULFCONF="$conf" IRONWULF_DIST_OVERLAYS="$repo/overlays"
"$wwctl" node list

# The image: busybox, a console device, the kernel where Warewulf looks for
# it, and an /init that reports what the overlays delivered.
root="$site/chroots/demo/rootfs"
mkdir -p "$root"/{bin,boot,dev,etc,proc,sys,tmp}
cp /bin/busybox "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
cp "$vmlinuz" "$root/boot/$(basename "$vmlinuz" | sed 's/^\(vmlinuz-\)\{0,1\}/vmlinuz-/')"
mknod "$root/dev/console" c 5 1
cat >"$root/init" <<'INIT'
#!/bin/sh
bb=/bin/busybox
$bb mount -t proc proc /proc
wwid=$($bb sed -n 's/.* wwid=\([^ ]*\).*/\1/p' /proc/cmdline)
echo "IRONWULF-DEMO: $($bb cat /etc/hostname) booted (wwid $wwid); /etc/hosts from the overlay:"
$bb grep -E '^10\.99' /etc/hosts | $bb sed 's/^/IRONWULF-DEMO:   /'
echo "IRONWULF-DEMO: done"
$bb poweroff -f
INIT
chmod 0755 "$root/init"
"$wwctl" image build demo
"$wwctl" overlay build
"$wwctl" image list

step "a private boot network ($ns: br0 10.99.0.1/24, tap0, tap1)"
ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" link add br0 type bridge
ip -n "$ns" addr add 10.99.0.1/24 dev br0
ip -n "$ns" link set br0 up
for t in tap0 tap1; do
  ip -n "$ns" tuntap add "$t" mode tap
  ip -n "$ns" link set "$t" master br0
  ip -n "$ns" link set "$t" up
done

step "wwctl server (DHCP, TFTP, HTTP)"
ip netns exec "$ns" "$wwctl" -v server 2>"$site/server.log" &
pids+=($!)
for _ in $(seq 50); do
  ip netns exec "$ns" curl -fsS http://10.99.0.1:9873/status >/dev/null 2>&1 && break
  sleep 0.2
done
echo "head up: http://10.99.0.1:9873 (log: $site/server.log)"

step "power on n01 and n02 (QEMU, TCG, network boot)"
for n in 1 2; do
  ip netns exec "$ns" qemu-system-x86_64 -accel tcg -m 512 -display none -no-reboot \
    -boot n -serial "file:$site/n0$n.console" \
    -netdev "tap,id=n0,ifname=tap$((n - 1)),script=no,downscript=no" \
    -device "virtio-net-pci,netdev=n0,mac=52:54:00:00:00:0$n" &
  pids+=($!)
done
deadline=$((SECONDS + 300))
for n in 1 2; do
  until grep -q "$marker done" "$site/n0$n.console" 2>/dev/null; do
    if ((SECONDS > deadline)); then
      echo "n0$n did not boot in time; its console:" >&2
      tail -20 "$site/n0$n.console" >&2 || true
      echo "server log:" >&2
      tail -20 "$site/server.log" >&2
      exit 1
    fi
    sleep 1
  done
done

step "what the nodes printed"
for n in 1 2; do grep -a "$marker" "$site/n0$n.console" | tr -d '\r'; done

step "the head's /status"
ip netns exec "$ns" curl -fsS http://10.99.0.1:9873/status
echo

if ((keep)); then
  cat <<EOF

Left running (--keep): head PID ${pids[0]} in namespace $ns, site $site.
Stop it with: kill ${pids[*]}; ip netns del $ns; rm -rf $site
EOF
else
  step "cleaning up"
fi
