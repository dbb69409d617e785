#!/usr/bin/env bash
# A maintainer's check, not used by CI: the README's quick start on a fresh Debian bookworm, in a
# container, exactly as a newcomer would run it: install git, curl and ca-certificates, clone the
# repository, then `bash testdata/demo.sh` and `bash .ci/run`.
#
# Usage (as root on the host): bash testdata/fresh-machine.sh ROOT [LOGDIR]
#
#   ROOT    the container's root; if it does not exist, `debootstrap --variant=minbase bookworm`
#           creates it (about 200 MB). Reuse it only knowingly: what a run installs stays there.
#   LOGDIR  where demo.log and ci.log go (default: the current directory).
#
# What is NOT fresh, and why:
#   - The Rust toolchain is the host's: ~/.rustup is bind-mounted read-only and ~/.cargo/bin
#     (rustup and its proxies) copied into the container's ~/.cargo/bin, instead of running rustup's
#     installer, so that the check does not depend on reaching rustup's servers.
#     FRESH_RUSTUP=1 runs the README's rustup command in the container instead.
#   - With FRESH_HOST_NEXTEST=1, the host's cargo-nextest is bind-mounted in (read-only, as
#     /usr/local/bin/cargo-nextest); otherwise `.ci/install-deps` builds it with `cargo install`,
#     which takes half an hour on a small machine.
#   - A network that intercepts TLS needs its certificate authority trusted: every .crt in the
#     host's /usr/local/share/ca-certificates is copied into the container's before
#     ca-certificates is installed there, and SSL_CERT_FILE names the system bundle (uv and the
#     tests' fixed-output derivation read it).
#   - The repository is cloned from this checkout's HEAD (committed work only, through a bare copy
#     bind-mounted read-only as /src), instead of from its public home.
#
# The container is bubblewrap's (apt-get install bubblewrap): its root is set with pivot_root, not
# chroot, because the kernel refuses user namespaces (which nix-build's sandbox needs) to a
# chrooted process. bwrap's /proc has read-only submounts (/proc/bus, /proc/irq), and the kernel
# lets a user namespace mount a new proc (nix-build's sandbox does) only where a proc is fully
# visible, so the container mounts a plain proc over it first. The root is bound with device
# files allowed and /tmp is the root's own directory, as on a Debian bookworm installation (a
# nodev tmpfs /tmp, as systemd's tmp.mount makes, is what the tests' device cases skip on).
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: $0 ROOT [LOGDIR]" >&2
  exit 2
fi
repo=$(cd "$(dirname "$0")/.." && pwd)
root=$1
logdir=$(mkdir -p "${2:-.}" && cd "${2:-.}" && pwd)
command -v bwrap >/dev/null || { echo "error: bwrap not found (apt-get install bubblewrap)" >&2; exit 2; }

if [ ! -e "$root" ]; then
  echo "creating $root (debootstrap --variant=minbase bookworm)"
  debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >"$logdir/debootstrap.log"
fi
root=$(cd "$root" && pwd)
if [ -e "$root/root/storepatch" ]; then
  echo "error: $root/root/storepatch exists (a previous run's clone); remove it first" >&2
  exit 2
fi

mkdir -p "$root/usr/local/share/ca-certificates" "$root/root/.cargo/bin" "$root/src" "$root/logs"
for crt in /usr/local/share/ca-certificates/*.crt; do
  [ -f "$crt" ] && cp "$crt" "$root/usr/local/share/ca-certificates/"
done

src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
git clone -q --bare "$repo" "$src/storepatch.git"
binds=(--ro-bind "$src/storepatch.git" /src)
if [ "${FRESH_RUSTUP:-0}" != 1 ]; then
  mkdir -p "$root/root/.rustup"
  cp -a "$HOME/.cargo/bin/." "$root/root/.cargo/bin/"
  cp "$HOME/.cargo/env" "$root/root/.cargo/env"
  binds+=(--ro-bind "$HOME/.rustup" /root/.rustup)
fi
if [ "${FRESH_HOST_NEXTEST:-0}" = 1 ]; then
  nextest=$(command -v cargo-nextest)
  touch "$root/usr/local/bin/cargo-nextest"
  binds+=(--ro-bind "$nextest" /usr/local/bin/cargo-nextest)
fi

# The steps, as README.md's quick start gives them.
script='
set -u
mount -t proc proc /proc || exit 1
export DEBIAN_FRONTEND=noninteractive
echo "### prerequisites ($(date -u +%T))"
apt-get update -qq && apt-get install -y -qq --no-install-recommends git curl ca-certificates >/dev/null || exit 1
if [ "${FRESH_RUSTUP:-0}" = 1 ]; then
  curl --proto "=https" --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y || exit 1
fi
. ~/.cargo/env
cargo --version
git clone -q /src /root/storepatch && cd /root/storepatch || exit 1
git log -1 --format="### commit %h %s"
echo "### bash testdata/demo.sh ($(date -u +%T))"
start=$SECONDS
bash testdata/demo.sh >/logs/demo.log 2>&1; echo "### demo.sh: exit status $?, $((SECONDS - start)) s"
echo "### bash .ci/run ($(date -u +%T))"
start=$SECONDS
bash .ci/run >/logs/ci.log 2>&1; echo "### .ci/run: exit status $?, $((SECONDS - start)) s"
'

bwrap \
  --dev-bind "$root" / \
  --dev /dev \
  --proc /proc \
  --ro-bind /etc/resolv.conf /etc/resolv.conf \
  --bind "$logdir" /logs \
  "${binds[@]}" \
  --unshare-pid --unshare-ipc --unshare-uts --hostname fresh \
  --cap-add ALL \
  --die-with-parent \
  --clearenv \
  --setenv HOME /root \
  --setenv PATH /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --setenv TERM dumb \
  --setenv LANG C.UTF-8 \
  --setenv SSL_CERT_FILE /etc/ssl/certs/ca-certificates.crt \
  --setenv FRESH_RUSTUP "${FRESH_RUSTUP:-0}" \
  --chdir /root \
  bash -c "$script"
