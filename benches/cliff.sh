#!/usr/bin/env bash
# Throughput-cliff benchmark: inputs made of long runs of hash-alphabet bytes, scanned by
# storepatch and read by ripgrep (the read floor: counting a literal that occurs nowhere), side by
# side with hyperfine. Any input must scan within 3x the time of a same-size ordinary tree.
#
#   benches/cliff.sh [--smoke] [--storepatch PATH] [--compare DIR] [--out DIR]
#   benches/cliff.sh --generate [--smoke]    only make the inputs, print their directory
#
# Inputs (generated once under target/bench-cliff/, on the filesystem that holds target/):
#   zeros    one file of 50 MB of `0` (one alphabet byte repeated)
#   xruns    30 000 files, each a 20 KB run of `x` followed by one store path (600 MB)
# --compare DIR also times the same commands on DIR (for instance the run.sh corpus tree), so the
# ratios to an ordinary tree of similar size come from the same run.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
smoke=false storepatch="" compare="" out="" runs=5 generate=false
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) smoke=true ;;
        --generate) generate=true ;;
        --storepatch) storepatch=$2; shift ;;
        --compare) compare=$2; shift ;;
        --out) out=$2; shift ;;
        --runs) runs=$2; shift ;;
        -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "cliff.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
tools=(python3)
$generate || tools+=(hyperfine rg)
for tool in "${tools[@]}"; do
    command -v "$tool" >/dev/null || { echo "cliff.sh: $tool is required" >&2; exit 2; }
done

target_dir=${CARGO_TARGET_DIR:-$repo/target}
if [ -z "$storepatch" ] && ! $generate; then
    (cd "$repo" && cargo build --release --quiet -p storepatch)
    storepatch="$target_dir/release/storepatch"
fi

if $smoke; then
    zero_bytes=2000000 files=600 runs=3
else
    zero_bytes=50000000 files=30000
fi
inputs="$target_dir/bench-cliff/z$zero_bytes-f$files"
if [ ! -f "$inputs/done" ]; then
    rm -rf "$inputs"
    mkdir -p "$inputs"
    python3 - "$inputs" "$zero_bytes" "$files" <<'PY'
import os, sys
root, zero_bytes, files = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(f"{root}/zeros")
with open(f"{root}/zeros/zeros.bin", "wb") as out:
    out.write(b"0" * zero_bytes)
path = b"/nix/store/0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1-dep-"
for i in range(files):
    directory = f"{root}/xruns/d{i // 100}"
    os.makedirs(directory, exist_ok=True)
    with open(f"{directory}/f{i}", "wb") as out:
        out.write(b"x" * 20000 + path + str(i % 7).encode() + b"/lib\n")
PY
    touch "$inputs/done"
fi
if $generate; then
    echo "$inputs"
    exit 0
fi

out=${out:-$inputs/results}
mkdir -p "$out"
{
    echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "nproc=$(nproc)"
    echo "load=$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "rg=$(rg --version | head -1)"
} > "$out/context.env"

trees=(zeros "$inputs/zeros" xruns "$inputs/xruns")
[ -n "$compare" ] && trees+=(compare "$compare")
for ((i = 0; i < ${#trees[@]}; i += 2)); do
    name=${trees[i]} tree=${trees[i + 1]}
    # `scan -q` exits 1 when it finds nothing (zeros): that is an answer, not a failure.
    hyperfine -N --style basic --output pipe --warmup 1 --runs "$runs" -i \
        --export-json "$out/$name.json" \
        -n "storepatch scan" "$storepatch scan -q $tree" \
        -n "read floor (rg -c)" "rg -a -c -j$(nproc) zqzqzqzqnotthere $tree"
done

python3 - "$out" "${trees[@]}" <<'PY'
import json, sys
out, names = sys.argv[1], sys.argv[2::2]
means = {}
for name in names:
    results = json.load(open(f"{out}/{name}.json"))["results"]
    means[name] = {r["command"]: r["mean"] for r in results}
print("| input | scan / read floor | scan / scan of compare |")
print("|---|---:|---:|")
for name, m in means.items():
    floor = m["storepatch scan"] / m["read floor (rg -c)"]
    other = ""
    if "compare" in means:
        other = f'{m["storepatch scan"] / means["compare"]["storepatch scan"]:.2f}x'
    print(f"| {name} | {floor:.2f}x | {other} |")
PY
