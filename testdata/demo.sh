#!/usr/bin/env bash
# Builds storepatch and runs it on a copy of the bundled example venv:
# scan it, scrub it as a fixed-output derivation would, and scan it again.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet --bin storepatch
storepatch=$PWD/target/release/storepatch
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -a testdata/trees/demo-venv "$work/venv"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { step "$@"; "$@" || echo "(exit status $?)"; }

cd "$work"
run "$storepatch" scan venv
run "$storepatch" scan --files venv
run "$storepatch" scrub venv
run "$storepatch" scan venv
step "readelf -d venv/lib/python3.12/site-packages/demo/_speedups.so | grep RUNPATH"
readelf -d venv/lib/python3.12/site-packages/demo/_speedups.so | grep RUNPATH
