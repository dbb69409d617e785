#!/usr/bin/env bash
# Whole-tool benchmark: storepatch scan/scrub against ripgrep, the old grep pipeline, the best shell
# pipeline and the old one-sed-per-reference loop, measured side by side with hyperfine.
# See benches/README.md. Run from anywhere:
#
#   benches/run.sh            full size (500 MiB, 30 000 files), results in benches/runs/<date>-<machine>/
#   benches/run.sh --smoke    tiny corpus, one run each, under 30 s; results under the corpus dir
#   benches/run.sh --real     the real corpus instead (benches/real.sh; its options follow)
set -euo pipefail

for argument in "$@"; do
    if [ "$argument" = --real ]; then
        rest=()
        for other in "$@"; do [ "$other" = --real ] || rest+=("$other"); done
        exec "$(dirname "${BASH_SOURCE[0]}")/real.sh" "${rest[@]}"
    fi
done

usage() {
    cat <<'EOF'
usage: benches/run.sh [options]
  --real                  run benches/real.sh on the real corpus instead (see real.sh --help)
  --smoke                 tiny corpus (8 MiB, 600 files), one run each; for CI
  --corpus DIR            scratch dir for the corpus and working copies [target/bench-corpus]
  --size-mb N             corpus size in MiB [500]
  --files N               corpus file count [30000]
  --referencing-fraction F  fraction of files holding store references [0.1]
  --seed N                corpus seed [0]
  --runs N                timed runs per command [5]
  --old-runs N            timed runs of one old sed pass [3]
  --validate-old          also time the complete old loops once (slow: one pass per reference;
                          the one-sed-per-file loop takes minutes at full size)
  --storepatch PATH       use this binary instead of building one
  --rg PATH               ripgrep binary [rg on PATH]
  --out DIR               results dir [benches/runs/<YYYY-MM-DD>-<machine>]
  --machine NAME          machine part of the results dir name [<arch>-<nproc>cpu-<mem>g]
EOF
}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
benches="$repo/benches"
smoke=false
corpus_root="$repo/target/bench-corpus"
size_mb=500 files=30000 fraction=0.1 seed=0 runs=5 old_runs=3 warmup=1
validate_old=false storepatch="" rg=rg out="" machine=""
size_set=false files_set=false runs_set=false

while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) smoke=true ;;
        --corpus) corpus_root=$2; shift ;;
        --size-mb) size_mb=$2; size_set=true; shift ;;
        --files) files=$2; files_set=true; shift ;;
        --referencing-fraction) fraction=$2; shift ;;
        --seed) seed=$2; shift ;;
        --runs) runs=$2; runs_set=true; shift ;;
        --old-runs) old_runs=$2; shift ;;
        --validate-old) validate_old=true ;;
        --storepatch) storepatch=$2; shift ;;
        --rg) rg=$2; shift ;;
        --out) out=$2; shift ;;
        --machine) machine=$2; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "run.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

if $smoke; then
    $size_set || size_mb=8
    $files_set || files=600
    $runs_set || runs=1
    old_runs=1 warmup=0 validate_old=true
fi

for tool in hyperfine python3 find xargs sed grep sort cp; do
    command -v "$tool" >/dev/null || { echo "run.sh: $tool is required" >&2; exit 2; }
done
command -v "$rg" >/dev/null || { echo "run.sh: ripgrep ($rg) is required" >&2; exit 2; }
rg=$(command -v "$rg")

log() { printf '\n== %s\n' "$*" >&2; }

# --- Build ---------------------------------------------------------------------------------------
target_dir=${CARGO_TARGET_DIR:-$repo/target}
make_tree="$target_dir/release/examples/make-tree"
if [ -z "$storepatch" ]; then
    log "building storepatch and make-tree (release)"
    (cd "$repo" && cargo build --release --quiet -p storepatch \
        && cargo build --release --quiet -p storepatch-test --example make-tree)
    storepatch="$target_dir/release/storepatch"
elif [ ! -x "$make_tree" ]; then
    # With a given binary (CI passes the debug one the tests built), make-tree in the debug profile.
    make_tree="$target_dir/debug/examples/make-tree"
    (cd "$repo" && cargo build --quiet -p storepatch-test --example make-tree)
fi
storepatch=$(cd "$(dirname "$storepatch")" && pwd)/$(basename "$storepatch")

# --- Corpus --------------------------------------------------------------------------------------
mkdir -p "$corpus_root"
corpus_root=$(cd "$corpus_root" && pwd)
corpus="$corpus_root/corpus-${size_mb}m-${files}f-${fraction}r-s${seed}"
# The store dir is a scratch dir: make-tree writes the fixture's library packages into it, and
# the tree holds its absolute path in every reference.
store="$corpus/store"
tree="$corpus/tree"
work="$corpus_root/work"
if [ ! -f "$corpus/summary.txt" ]; then
    log "generating the corpus in $corpus"
    rm -rf "$corpus"
    mkdir -p "$corpus"
    "$make_tree" --out "$tree" --store-dir "$store" --size-mb "$size_mb" --files "$files" \
        --referencing-fraction "$fraction" --seed "$seed" > "$corpus/summary.tmp"
    mv "$corpus/summary.tmp" "$corpus/summary.txt"
else
    log "reusing the corpus in $corpus"
fi
cat "$corpus/summary.txt" >&2

# Discovery as the old pipeline sees it: the loop runs once per distinct match.
"$benches/shell/old-scan.sh" "$tree" "$store" > "$corpus/references.txt"
source "$benches/shell/common.sh"
hash_parts "$store" < "$corpus/references.txt" > "$corpus/hashes.txt"
reference_count=$(wc -l < "$corpus/references.txt")
hash_count=$(wc -l < "$corpus/hashes.txt")
[ "$hash_count" -gt 0 ] || { echo "run.sh: the corpus holds no references" >&2; exit 1; }
# The pass to time: the most frequent hash, so the pass does real replacements.
pass_hash=$(grep -aoh -F -f "$corpus/hashes.txt" -r "$tree" | sort | uniq -c | sort -rn | awk 'NR == 1 {print $2}')
tree_files=$(find "$tree" -type f | wc -l)
tree_bytes=$(du -sb "$tree" | cut -f1)
tree_entries=$(find "$tree" | wc -l)

# --- Results dir ---------------------------------------------------------------------------------
if [ -z "$machine" ]; then
    mem_gib=$(awk '/^MemTotal:/ {printf "%d", $2 / 1048576 + 0.5}' /proc/meminfo)
    machine="$(uname -m)-$(nproc)cpu-${mem_gib}g"
fi
if [ -z "$out" ]; then
    if $smoke; then
        out="$corpus_root/smoke-results"
    else
        out="$benches/runs/$(date +%Y-%m-%d)-$machine"
    fi
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -f "$out"/*.json "$out"/*.csv

q() { printf '%q' "$1"; }
# A fresh real copy (not hard links: sed -i and scrub must not see shared inodes), flushed so that
# write-back of the copy does not land inside the timed run. The previous copy is moved aside, not
# deleted: right after tens of thousands of deletions, ext4 spends most of each new file's creation
# skipping the recently freed inodes, which swamped both tools' timings (seconds of noise per run).
# The copies moved aside are deleted at the end, untimed: deleting them between groups would put the
# next group right back into that state (a full run needs free space for about 15 copies).
graveyard="$corpus_root/graveyard"
prepare="if [ -e $(q "$work") ]; then mkdir -p $(q "$graveyard") && mv $(q "$work") $(q "$graveyard")/\$(date +%s%N); fi; cp -a $(q "$tree") $(q "$work") && sync"
clear_graveyard() {
    chmod -R u+w "$graveyard" 2>/dev/null || true
    rm -rf "$graveyard"
    sync
}
clear_graveyard
pattern=$(reference_pattern "$store")

hf() {
    local name=$1
    shift
    hyperfine --style basic --output pipe --export-json "$out/$name.json" \
        --export-csv "$out/$name.csv" "$@"
}

# --- Scan ----------------------------------------------------------------------------------------
log "scan: storepatch vs ripgrep vs the old grep pipeline (read-only, warm cache)"
scan_commands=(
    -n "storepatch scan --quiet" "$(q "$storepatch") scan --quiet --store-dir $(q "$store") $(q "$tree")"
    -n "storepatch scan --json" "$(q "$storepatch") scan --json --store-dir $(q "$store") $(q "$tree")"
    -n "rg -a -o" "$(q "$rg") --no-config -uu -a -o -e $(q "$pattern") $(q "$tree")"
    -n "old: find | xargs grep -aohE | sort -u" "$(q "$benches/shell/old-scan.sh") $(q "$tree") $(q "$store")"
    # The cost of reading the tree at all: ripgrep counting a literal that occurs nowhere (exit 1).
    -n "read floor: rg -c (a literal that occurs nowhere)" "$(q "$rg") --no-config -uu -a -c -F zqzqzqzqzqzqzqzqzqzq $(q "$tree") || true"
)
if ! $smoke; then
    # Thread scaling, for reading the profile: same work on one core.
    scan_commands+=(
        -n "storepatch scan --quiet --threads 1" "$(q "$storepatch") scan --quiet --threads 1 --store-dir $(q "$store") $(q "$tree")"
        -n "rg -a -o -j1" "$(q "$rg") --no-config -uu -a -o -j1 -e $(q "$pattern") $(q "$tree")"
    )
fi
hf scan --warmup "$warmup" --runs "$runs" "${scan_commands[@]}"

# --- Scrub ---------------------------------------------------------------------------------------
log "scrub: storepatch vs the best shell pipeline (fresh copy of the tree before each run)"
hf scrub --runs "$runs" --prepare "$prepare" \
    -n "storepatch scrub" "$(q "$storepatch") scrub --quiet --store-dir $(q "$store") $(q "$work")" \
    -n "best shell: rg -l | sed -i -e ... (one -e per hash)" \
    "$(q "$benches/shell/best-scrub.sh") $(q "$work") $(q "$store") $(q "$rg")"

# Check both did the job. The last timed run left the shell pipeline's output in the work copy:
# no hash may remain in any file's contents. Then storepatch once more, untimed: nothing live may
# remain anywhere (contents, symlink targets, names).
shell_leftover_files=$("$rg" --no-config -uu -a -l -F -f "$corpus/hashes.txt" "$work" | wc -l || true)
eval "$prepare"
"$storepatch" scrub --quiet --store-dir "$store" "$work"
storepatch_check=$("$storepatch" scan --json --store-dir "$store" "$work" | tail -n 1 || true)

# --- Restore -------------------------------------------------------------------------------------
# scrub's inverse on the same corpus, side by side with scrub in one group: every command gets a
# fresh copy (scrub of the original tree, restore of a scrubbed one), with the corpus's store
# paths as the supplied inputs. Exit 1 (some name left scrubbed, e.g. a bare hash in a file name)
# is expected on this corpus; only an error fails the run.
log "restore: storepatch restore of the scrubbed tree next to scrub (fresh copy before each run)"
scrubbed="$corpus_root/scrubbed"
chmod -R u+w "$scrubbed" 2>/dev/null || true
rm -rf "$scrubbed"
cp -a "$tree" "$scrubbed"
"$storepatch" scrub --quiet --store-dir "$store" "$scrubbed"
find "$store" -mindepth 1 -maxdepth 1 | LC_ALL=C sort > "$corpus_root/candidates.txt"
prepare_scrubbed="if [ -e $(q "$work") ]; then mkdir -p $(q "$graveyard") && mv $(q "$work") $(q "$graveyard")/\$(date +%s%N); fi; cp -a $(q "$scrubbed") $(q "$work") && sync"
hf restore --runs "$runs" --prepare "$prepare" --prepare "$prepare_scrubbed" \
    -n "storepatch scrub (beside restore)" "$(q "$storepatch") scrub --quiet --store-dir $(q "$store") $(q "$work")" \
    -n "storepatch restore" "$(q "$storepatch") restore --quiet --store-dir $(q "$store") --candidates $(q "$corpus_root/candidates.txt") $(q "$work") || [ \$? = 1 ]"
chmod -R u+w "$scrubbed" 2>/dev/null || true
rm -rf "$scrubbed"

log "old loop: one pass over every file for one reference, sed batched and one sed per file ($old_runs runs)"
hf old-pass --runs "$old_runs" --prepare "$prepare" \
    -n "old: one sed -i pass over every file" \
    "$(q "$benches/shell/old-scrub-pass.sh") $(q "$work") $pass_hash" \
    -n "old: one sed -i per file, one pass" \
    "$(q "$benches/shell/old-scrub-pass.sh") $(q "$work") $pass_hash --per-file"

if $validate_old; then
    log "old loop, complete: $reference_count passes, sed batched and one sed per file (one run each)"
    hf old-full --runs 1 --prepare "$prepare" \
        -n "old: complete loop" "$(q "$benches/shell/old-scrub.sh") $(q "$work") $(q "$store")" \
        -n "old: complete loop, one sed -i per file" \
        "$(q "$benches/shell/old-scrub.sh") $(q "$work") $(q "$store") --per-file"
fi

chmod -R u+w "$work" 2>/dev/null || true
rm -rf "$work"
clear_graveyard

# --- Report --------------------------------------------------------------------------------------
cat > "$out/context.env" <<EOF
smoke=$smoke
corpus=$corpus
store_dir=$store
size_mb=$size_mb
files_param=$files
referencing_fraction=$fraction
seed=$seed
runs=$runs
old_runs=$old_runs
warmup=$warmup
tree_files=$tree_files
tree_entries=$tree_entries
tree_bytes=$tree_bytes
reference_count=$reference_count
hash_count=$hash_count
pass_hash=$pass_hash
shell_leftover_files=$shell_leftover_files
storepatch_check=$storepatch_check
storepatch=$storepatch
rg=$rg
machine=$machine
EOF
sed 's/^/make_tree_/' "$corpus/summary.txt" >> "$out/context.env"
cp "$corpus/hashes.txt" "$out/hashes.txt"
python3 "$benches/report.py" "$out"
