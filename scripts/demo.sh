#!/usr/bin/env bash
# Boot a small Debian cluster from an Ironwulf head, on one machine (root,
# Debian 12):
#
#   1. install what is missing, build wwctl and the static node binaries
#      (wwinit, wwclient), fetch Debian's kernel and build the Debian 12 node
#      image once (scripts/build-debian-image.sh, cached);
#   2. make a temporary site: warewulf.conf, the shipped overlays installed
#      with scripts/install.sh, `wwctl configure ssh` with a throw-away root
#      key (the head runs with a private /root: nothing in your /root/.ssh is
#      read or changed), two nodes in nodes.conf, `wwctl image build` and
#      `wwctl overlay build`;
#   3. make a private network (a namespace with a bridge and two taps; no
#      packet leaves it) and start `wwctl server` there: embedded DHCP, TFTP,
#      HTTP;
#   4. power on two QEMU nodes (TCG, SeaBIOS + iPXE): DHCP → iPXE → kernel,
#      image and overlays over HTTP → wwinit → systemd → multi-user.target,
#      with host name, address, SSH keys from the overlays and wwclient
#      keeping the runtime overlay current;
#   5. print each node's boot status from the head's /status and run a
#      command on each node over SSH, then clean up (--keep leaves the head
#      and the nodes running and prints how to reach and stop them).
set -euo pipefail

keep=0
[[ "${1:-}" == "--keep" ]] && keep=1

repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
step() { printf '\n==== %s ====\n' "$*"; }
musl=x86_64-unknown-linux-musl
target="${CARGO_TARGET_DIR:-$repo/target}"

if [[ $EUID -ne 0 ]]; then
  echo "demo: run as root (network namespaces, QEMU taps, debootstrap)" >&2
  exit 1
fi

step "prerequisites"
need=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
[[ -e /usr/lib/ipxe/undionly.kpxe ]] || need+=(ipxe)
for pkg in curl:curl ip:iproute2 debootstrap:debootstrap ssh:openssh-client \
  ssh-keygen:openssh-client depmod:kmod musl-gcc:musl-tools cc:build-essential; do
  PATH="$PATH:/usr/sbin:/sbin" command -v "${pkg%%:*}" >/dev/null 2>&1 || need+=("${pkg#*:}")
done
if ((${#need[@]})); then
  echo "installing ${need[*]}"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"
fi
if [[ -f "$HOME/.cargo/env" ]]; then
  # shellcheck disable=SC1091
  source "$HOME/.cargo/env"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "installing the Rust toolchain (rustup)"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  # shellcheck disable=SC1091
  source "$HOME/.cargo/env"
fi
rustup target list --installed 2>/dev/null | grep -qx "$musl" || rustup target add "$musl"
echo "ok"

step "build wwctl, wwinit, wwclient (release)"
cargo build --release -p head
cargo build --release --target "$musl" -p wwinit -p agent
wwctl="$target/release/wwctl"

step "the Debian 12 node image (built once, then cached)"
image="$(scripts/build-debian-image.sh)"
echo "image tree: $image"

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
mkdir -p "$site"/{etc/warewulf,chroots,overlays,provision,var,tftpboot,roothome}
chmod 0700 "$site/roothome"
conf="$site/etc/warewulf/warewulf.conf"
cat >"$conf" <<CONF
ipaddr: 10.99.0.1/24
warewulf:
  port: 9873
  secure: false
  update interval: 10
dhcp:
  enabled: true
  range start: 10.99.0.100
  range end: 10.99.0.200
  interfaces: [br0]
tftp:
  enabled: true
  tftproot: $site/tftpboot
ssh:
  key types: [ed25519]
paths:
  sysconfdir: $site/etc
  localstatedir: $site/var
  datadir: $site/install/usr/share
  wwoverlaydir: $site/overlays
  wwchrootdir: $site/chroots
  wwprovisiondir: $site/provision
  ipxesource: /usr/lib/ipxe
CONF
cat >"$site/etc/warewulf/nodes.conf" <<'NODES'
nodeprofiles:
  default:
    image name: debian
    system overlay: [wwinit, wwclient, hosts, hostname, ssh.host_keys, issue, systemd.networkd]
    runtime overlay: [hosts, ssh.authorized_keys]
    kernel:
      args: [console=ttyS0, wwinit.crash=poweroff]
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
DESTDIR="$site/install" NO_BUILD=1 scripts/install.sh >/dev/null
export WAREWULFCONF="$conf"
# Every wwctl runs with $site/roothome as /root, so `configure ssh` makes
# root's key pair there and the ssh.authorized_keys overlay reads it there.
home="$site/roothome"
private_root() {
  unshare --mount --propagation private -- sh -c 'mount --bind "$0" /root && exec "$@"' "$home" "$@"
}
ww() { private_root env HOME=/root "$wwctl" "$@"; }
ww configure ssh
ww node list
# Hard links are enough: `wwctl image build` only reads the tree.
mkdir -p "$site/chroots/debian"
cp -al "$image" "$site/chroots/debian/rootfs" 2>/dev/null ||
  { rm -rf "$site/chroots/debian/rootfs" && cp -a "$image" "$site/chroots/debian/rootfs"; }
ww image build debian
ww overlay build
ww image list

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
# `exec` so that the PID recorded is the server's own (unshare, sh, env and
# ip each exec the next): the clean-up must stop the server, not a shell.
(exec unshare --mount --propagation private -- sh -c 'mount --bind "$0" /root && exec "$@"' \
  "$home" env HOME=/root ip netns exec "$ns" "$wwctl" -v server) 2>"$site/server.log" &
pids+=($!)
for _ in $(seq 100); do
  ip netns exec "$ns" curl -fsS http://10.99.0.1:9873/status >/dev/null 2>&1 && break
  sleep 0.2
done
echo "head up: http://10.99.0.1:9873 (log: $site/server.log)"

step "power on n01 and n02 (QEMU, TCG, network boot; about 1-3 minutes)"
for n in 1 2; do
  ip netns exec "$ns" qemu-system-x86_64 -accel tcg -m 1024 -display none -no-reboot \
    -boot n -serial "file:$site/n0$n.console" \
    -netdev "tap,id=n0,ifname=tap$((n - 1)),script=no,downscript=no" \
    -device "virtio-net-pci,netdev=n0,mac=52:54:00:00:00:0$n" </dev/null 2>/dev/null &
  pids+=($!)
done
ssh_node() {
  ip netns exec "$ns" ssh -F /dev/null -i "$home/.ssh/id_ed25519" \
    -o UserKnownHostsFile="$site/known_hosts" -o StrictHostKeyChecking=yes \
    -o BatchMode=yes -o ConnectTimeout=5 -o LogLevel=ERROR "root@$1" "$2"
}
hostkey="$(cat "$site/etc/warewulf/keys/ssh_host_ed25519_key.pub")"
printf '10.99.0.11 %s\n10.99.0.12 %s\n' "$hostkey" "$hostkey" >"$site/known_hosts"
boot_start=$SECONDS
deadline=$((SECONDS + 600))
for n in 1 2; do
  until grep -aq "n0$n login:" "$site/n0$n.console" 2>/dev/null &&
    ssh_node "10.99.0.1$n" "systemctl is-active --quiet multi-user.target" 2>/dev/null; do
    if ((SECONDS > deadline)); then
      echo "n0$n did not boot in time; its console:" >&2
      tail -20 "$site/n0$n.console" >&2 || true
      echo "server log:" >&2
      tail -20 "$site/server.log" >&2
      exit 1
    fi
    sleep 2
  done
  echo "n0$n: multi-user.target reached $((SECONDS - boot_start)) s after power-on"
done

step "node status (from the head's /status)"
# One node per line from the pretty-printed JSON of GET /status.
ip netns exec "$ns" curl -fsS http://10.99.0.1:9873/status | awk -F'"' '
  BEGIN { printf "%-8s %-16s %-14s %-10s %s\n", "NODE", "STAGE", "IPADDR", "MB SENT", "LAST SEEN" }
  /"node name"/ { name = $4 }
  /"stage"/ { stage = $4 }
  /"ipaddr"/ { ip = $4 }
  /"bytes sent"/ { split($0, a, ":"); sent = a[2] + 0 }
  /"last seen"/ { split($0, a, ":"); seen = a[2] + 0 }
  /^    }/ {
    printf "%-8s %-16s %-14s %-10.1f %ds ago\n", name, stage, ip, sent / 1e6, systime() - seen
  }'

step "a command on each node, over SSH with the site's root key"
for n in 1 2; do
  ssh_node "10.99.0.1$n" 'echo "$(hostname): $(uname -sr), systemd $(systemctl is-system-running), $(ip -4 -br addr show scope global | tr -s " ")"'
done

if ((keep)); then
  cat <<EOF

Left running (--keep): head and nodes (PIDs ${pids[*]}) in namespace $ns,
site $site. Log in to a node:
  ip netns exec $ns ssh -i $home/.ssh/id_ed25519 -o UserKnownHostsFile=$site/known_hosts root@10.99.0.11
Stop everything with:
  kill ${pids[*]}; ip netns del $ns; rm -rf $site
EOF
else
  step "cleaning up"
fi
