#!/usr/bin/env bash
# Builds the bundled example into DIR (which must not exist yet):
#
#   DIR/store/<hash>-libdemo-1.0/lib/libdemo.so.1   a tiny C library, as a store path
#   DIR/store/<hash>-python3-X.Y.Z                  the host's Python, as a store path (a symlink)
#   DIR/store/<hash>-source                         the demo package's source, as a store path
#   DIR/venv                                        the venv as `uv sync` leaves it in the FOD
#   DIR/store-paths                                 the three store paths, one per line
#
# The venv has a C extension built with gcc against the host Python's headers that needs libdemo
# (through a RUNPATH into the store), a console script whose shebang names the venv's own
# interpreter, pyvenv.cfg, the usual interpreter symlinks, RECORD and direct_url.json.
# The hashes are made up (valid nix-base32); DIR/store stands for /nix/store (export NIX_STORE).
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
if [ -e "$1" ]; then
  echo "error: $1 already exists; remove it or name another directory" >&2
  exit 2
fi
mkdir -p "$1"
dir=$(cd "$1" && pwd)

python=${PYTHON:-python3}
command -v "$python" >/dev/null || { echo "error: $python not found (apt-get install python3)" >&2; exit 2; }
command -v gcc >/dev/null || { echo "error: gcc not found (apt-get install gcc libc6-dev)" >&2; exit 2; }
read -r base_prefix version short ext_suffix include < <("$python" -c '
import sys, sysconfig, platform
print(sys.base_prefix, platform.python_version(), "%d.%d" % sys.version_info[:2],
      sysconfig.get_config_var("EXT_SUFFIX"), sysconfig.get_paths()["include"])')
if [ ! -f "$include/Python.h" ]; then
  echo "error: $include/Python.h not found: the Python headers are missing (apt-get install python3-dev)" >&2
  exit 2
fi

store=$dir/store
python_store=$store/0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1-python3-$version
libdemo_store=$store/1ix8vrm5f9r5l2v7mwnlbjjzvl0ai3gz-libdemo-1.0
source_store=$store/2w7bq0l3wzsgy6f8kjm3xfk6n5h4a9cd-source
venv=$dir/venv
site=$venv/lib/python$short/site-packages

# The store paths.
mkdir -p "$store" "$libdemo_store/lib" "$libdemo_store/include" "$source_store"
ln -s "$base_prefix" "$python_store"
cp "$here/src/libdemo.h" "$libdemo_store/include/"
gcc -shared -fPIC -O2 -Wl,-soname,libdemo.so.1 -o "$libdemo_store/lib/libdemo.so.1" \
  "$here/src/libdemo.c"
ln -s libdemo.so.1 "$libdemo_store/lib/libdemo.so"
cp -r "$here/src/." "$source_store/"

# The venv.
mkdir -p "$venv/bin" "$site/demo" "$site/demo-1.0.dist-info"
cat >"$venv/pyvenv.cfg" <<EOF
home = $python_store/bin
implementation = CPython
uv = 0.13.0
version_info = $version
include-system-site-packages = false
EOF
ln -s "$python_store/bin/python$short" "$venv/bin/python"
ln -s python "$venv/bin/python3"
ln -s python "$venv/bin/python$short"
cat >"$venv/bin/demo" <<EOF
#!$venv/bin/python
# -*- coding: utf-8 -*-
import sys
from demo import main
if __name__ == "__main__":
    sys.exit(main())
EOF
chmod 755 "$venv/bin/demo"
cp "$here/src/demo/__init__.py" "$site/demo/"
gcc -shared -fPIC -O2 -I"$include" -I"$libdemo_store/include" \
  -o "$site/demo/_demo$ext_suffix" "$here/src/_demo.c" \
  -L"$libdemo_store/lib" -ldemo -Wl,-rpath,"$libdemo_store/lib" -Wl,--enable-new-dtags
printf 'uv\n' >"$site/demo-1.0.dist-info/INSTALLER"
printf 'Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n' >"$site/demo-1.0.dist-info/METADATA"
printf '[console_scripts]\ndemo = demo:main\n' >"$site/demo-1.0.dist-info/entry_points.txt"
printf '{"url":"file://%s","dir_info":{}}\n' "$source_store" \
  >"$site/demo-1.0.dist-info/direct_url.json"
{
  printf '../../../bin/demo,,\n'
  printf 'demo/__init__.py,,\n'
  printf 'demo/_demo%s,,\n' "$ext_suffix"
  for file in INSTALLER METADATA RECORD direct_url.json entry_points.txt; do
    printf 'demo-1.0.dist-info/%s,,\n' "$file"
  done
} >"$site/demo-1.0.dist-info/RECORD"
# What a Nix build would have as its inputs, one store path per line.
printf '%s\n' "$python_store" "$libdemo_store" "$source_store" >"$dir/store-paths"
echo "built the example in $dir: venv/, store/ (3 store paths, listed in store-paths)"
