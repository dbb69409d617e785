#!/usr/bin/env bash
# The whole round trip on the bundled example (testdata/trees/demo), as README.md shows it:
#
#   in the fixed-output derivation: scan the venv, scrub it, scan it again;
#   in the main derivation: copy it to out, restore, relink, audit, then run the console script
#   and import the C extension with an empty LD_LIBRARY_PATH.
#
# Usage: bash testdata/demo.sh [DIR]   (DIR must not exist; default: a temporary directory that is
# removed at the end). STOREPATCH=/path/to/storepatch skips building it.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

# Headings in bold on a terminal only, so that a log holds no escape sequences.
if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold="" plain=""; fi
say() { printf '\n%s%s%s\n' "$bold" "$*" "$plain"; }
note() { printf '  -> %s\n' "$*"; }
step() { printf '\n$ %s\n' "$*"; }

# What the example needs: gcc, the Python headers, readelf.
need=()
command -v gcc >/dev/null || need+=(gcc libc6-dev)
command -v readelf >/dev/null || need+=(binutils)
command -v python3 >/dev/null || need+=(python3)
if ! command -v python3 >/dev/null ||
  [ ! -f "$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" ]; then
  need+=(python3-dev)
fi
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo=sudo; fi
  say "Installing ${need[*]} (apt-get; its errors are shown, its progress is not)"
  $sudo apt-get update -qq
  # dpkg prints every unpacked package on stdout, even with -qq.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  note "installed"
fi

if [ -n "${STOREPATCH:-}" ]; then
  storepatch=$STOREPATCH
else
  say "Building storepatch (cargo build --release; the first build takes a few minutes)"
  cargo build --release --locked --bin storepatch
  storepatch=$repo/target/release/storepatch
fi
# The commands below call it as `storepatch`, as README.md does.
storepatch_dir=$(mktemp -d)
ln -s "$storepatch" "$storepatch_dir/storepatch"
export PATH="$storepatch_dir:$PATH"

if [ $# -ge 1 ]; then
  dir=$1
  trap 'rm -rf "$storepatch_dir"' EXIT
else
  parent=$(mktemp -d)
  dir=$parent/demo
  trap 'rm -rf "$storepatch_dir" "$parent"' EXIT
fi

say "Building the example (testdata/trees/demo/build.sh)"
bash testdata/trees/demo/build.sh "$dir"
cd "$dir"
export NIX_STORE=$PWD/store
note "store/ plays the part of /nix/store (NIX_STORE=$NIX_STORE); venv/ is what uv sync left in the FOD"

say "1. In the fixed-output derivation: find the store references"
step storepatch scan venv
storepatch scan venv
note "exit status 0: references found, one line per store path the venv refers to"
step storepatch scan --files venv
storepatch scan --files venv
note "where they are: a symlink target, the extension's RUNPATH, direct_url.json, pyvenv.cfg"

say "2. Scrub them, as the FOD must (its output may refer to no store path)"
step storepatch scrub venv
storepatch scrub venv
note "each hash became 32 e's (same length, so offsets inside binaries do not move)"
step storepatch scan venv
status=0
storepatch scan venv || status=$?
if [ "$status" -ne 1 ]; then
  echo "expected exit status 1 (no live references left), got $status" >&2
  exit 1
fi
note "exit status 1: no live references left; the scrubbed ones are listed as such"

say "3. In the main derivation: copy the FOD's output to \$out"
step cp -r venv out
cp -r venv out

say "4. Restore the real hashes and move the venv's own path to out"
step storepatch restore --candidates store-paths --relocate "$PWD/venv=$PWD/out" out
storepatch restore --candidates store-paths --relocate "$PWD/venv=$PWD/out" out
note "each scrubbed <store>/eeee...-NAME got back the hash of the one store path named NAME;"
note "the shebang of bin/demo now names out/bin/python"

say "5. Relink: point every ELF file at the libraries it needs"
step storepatch relink --library-path "store/*-libdemo-1.0/lib" out
storepatch relink --library-path store/*-libdemo-1.0/lib out
note "exit status 0: every NEEDED library was found; nothing to patch, as restore already put"
note "the real hash back into the extension's RUNPATH (the readelf line below shows it)"
step "readelf -d out/lib/python3.*/site-packages/demo/_demo.*.so | grep RUNPATH"
readelf -d out/lib/python3.*/site-packages/demo/_demo.*.so | grep RUNPATH

say "6. Audit the result (executes nothing)"
step storepatch audit out
storepatch audit out
note "exit status 0: healthy (1 would mean problems were found and listed)"

say "7. Run it: the console script, and the extension imported with an empty LD_LIBRARY_PATH"
step LD_LIBRARY_PATH= out/bin/demo
LD_LIBRARY_PATH='' out/bin/demo
step "LD_LIBRARY_PATH= out/bin/python -c 'import demo._demo as m; print(m.__file__)'"
LD_LIBRARY_PATH='' PYTHONDONTWRITEBYTECODE=1 out/bin/python -c 'import demo._demo as m; print(m.__file__)'
note "libdemo was loaded from the store through the extension's RUNPATH alone"

say "The round trip worked."
if [ $# -ge 1 ]; then
  echo "The example is in $dir."
else
  echo "(The example's directory is removed now; bash testdata/demo.sh DIR keeps it in DIR.)"
fi
