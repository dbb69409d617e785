#!/usr/bin/env bash
# Whole-tool benchmark on the real corpus (benches/real-corpus/: authentik's dependency set installed
# from PyPI wheels and sdists, made to look like a fixed-output derivation's output): scan, scrub,
# restore and relink against ripgrep 15, the read and rewrite floors, the best shell pipeline,
# remove-references-to and auto-patchelf.py + patchelf, side by side in one run, on tmpfs and on
# disk, plus peak memory and the throughput-cliff inputs. See benches/README.md ("Real corpus").
#
#   benches/run.sh --real [options]     (the same as benches/real.sh [options])
set -euo pipefail

usage() {
    cat <<'EOF'
usage: benches/real.sh [options]   (or benches/run.sh --real [options])
  --smoke              one run each, no x5 relink, small cliff inputs: checks the harness only
  --runs N             timed runs of read-only commands [10]
  --mutating-runs N    timed runs of commands that change the tree (scrub, restore, relink) [5]
  --relink-runs N      timed runs of storepatch relink (short next to its noise) [10]
  --memory-runs N      runs of each command whose peak memory is measured; the median counts [3]
  --where LIST         comma-separated locations: tmpfs, disk [tmpfs,disk]
  --tmpfs DIR          a tmpfs directory for the tmpfs copies [/dev/shm]
  --cache DIR          corpus, downloads and tools [$STOREPATCH_BENCH_CACHE or ~/.cache/storepatch-bench]
  --corpus DIR         use this built corpus (a directory real-corpus/build.py made) as it is
  --storepatch PATH    use this binary instead of building one
  --rg PATH            ripgrep 15 binary [installed into the cache with cargo install]
  --out DIR            results dir [benches/runs/<YYYY-MM-DD>-<machine>-real]
  --machine NAME       machine part of the results dir name [<arch>-<nproc>cpu-<mem>g]
Environment: AUTO_PATCHELF = path of nixpkgs' auto-patchelf.py (pkgs/build-support/setup-hooks/
auto-patchelf.py); without it the relink comparison is skipped with a message.
EOF
}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
benches="$repo/benches"
smoke=false runs=10 mutating_runs=5 relink_runs=10 memory_runs=3 where="tmpfs,disk" tmpfs=/dev/shm storepatch="" rg="" out="" machine=""
corpus=""
runs_set=false mutating_set=false relink_set=false memory_set=false
cache=${STOREPATCH_BENCH_CACHE:-$HOME/.cache/storepatch-bench}
RG_VERSION=15.2.0
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) smoke=true ;;
        --runs) runs=$2; runs_set=true; shift ;;
        --mutating-runs) mutating_runs=$2; mutating_set=true; shift ;;
        --relink-runs) relink_runs=$2; relink_set=true; shift ;;
        --memory-runs) memory_runs=$2; memory_set=true; shift ;;
        --where) where=$2; shift ;;
        --tmpfs) tmpfs=$2; shift ;;
        --cache) cache=$2; shift ;;
        --corpus) corpus=$2; shift ;;
        --storepatch) storepatch=$2; shift ;;
        --rg) rg=$2; shift ;;
        --out) out=$2; shift ;;
        --machine) machine=$2; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "real.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
warmup=1
if $smoke; then
    $runs_set || runs=1
    $mutating_set || mutating_runs=1
    $relink_set || relink_runs=1
    $memory_set || memory_runs=1
    warmup=0
fi
start_seconds=$SECONDS
log() { printf '\n== [%ds] %s\n' "$((SECONDS - start_seconds))" "$*" >&2; }

for tool in hyperfine python3 uv patchelf readelf gcc cp sort sed find xargs; do
    command -v "$tool" >/dev/null || { echo "real.sh: $tool is required" >&2; exit 2; }
done
[ -x /usr/bin/time ] || { echo "real.sh: GNU time (/usr/bin/time, Debian package time) is required" >&2; exit 2; }
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

# --- Tools ---------------------------------------------------------------------------------------
target_dir=${CARGO_TARGET_DIR:-$repo/target}
log "building storepatch and rewrite-floor (release)"
if [ -z "$storepatch" ]; then
    (cd "$repo" && cargo build --release --quiet -p storepatch)
    storepatch="$target_dir/release/storepatch"
fi
(cd "$repo" && cargo build --release --quiet -p storepatch-benches --bin rewrite-floor)
rewrite_floor="$target_dir/release/rewrite-floor"
storepatch=$(cd "$(dirname "$storepatch")" && pwd)/$(basename "$storepatch")
if [ -z "$rg" ]; then
    rg="$cache/tools/ripgrep-$RG_VERSION/bin/rg"
    if [ ! -x "$rg" ]; then
        log "installing ripgrep $RG_VERSION from crates.io into $cache/tools (once)"
        cargo install --quiet ripgrep --version "$RG_VERSION" --locked --root "$cache/tools/ripgrep-$RG_VERSION"
    fi
fi
rg=$(command -v "$rg")
"$rg" --version | sed -n 1p | grep -q '^ripgrep 15\.' || echo "real.sh: warning: $rg is not ripgrep 15" >&2
apf=${AUTO_PATCHELF:-}
if [ -n "$apf" ] && [ ! -f "$apf" ]; then
    echo "real.sh: AUTO_PATCHELF=$apf does not exist: skipping the auto-patchelf.py comparison" >&2
    apf=""
elif [ -z "$apf" ]; then
    echo "real.sh: AUTO_PATCHELF is not set: skipping the auto-patchelf.py comparison" >&2
fi
if [ -n "$apf" ] && ! python3 -c 'import elftools' 2>/dev/null; then
    echo "real.sh: auto-patchelf.py needs pyelftools (pip install pyelftools): skipping it" >&2
    apf=""
fi

# --- Corpus --------------------------------------------------------------------------------------
log "real corpus (built once, then reused)"
if [ -z "$corpus" ]; then
    corpus=$(python3 "$benches/real-corpus/build.py" --cache "$cache")
fi
[ -f "$corpus/summary.json" ] || { echo "real.sh: $corpus is not a built corpus" >&2; exit 2; }
corpus=$(cd "$corpus" && pwd)
pristine="$corpus/tree"
library_args=() apf_libs=()
while IFS= read -r dir; do
    library_args+=(--library-path "$dir")
    apf_libs+=("$dir")
done < "$corpus/library-dirs.txt"
export NIX_BINTOOLS="$corpus/bintools"
unset NIX_STORE
store=/nix/store
cliff_dir=$("$benches/cliff.sh" --generate $($smoke && echo --smoke))

# --- Results dir ---------------------------------------------------------------------------------
if [ -z "$machine" ]; then
    mem_gib=$(awk '/^MemTotal:/ {printf "%d", $2 / 1048576 + 0.5}' /proc/meminfo)
    machine="$(uname -m)-$(nproc)cpu-${mem_gib}g"
fi
if [ -z "$out" ]; then
    if $smoke; then out="$cache/smoke-results"; else out="$benches/runs/$(date +%Y-%m-%d)-$machine-real"; fi
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -f "$out"/*.json "$out"/*.csv "$out"/*.tsv "$out"/context.env

q() { printf '%q' "$1"; }
source "$benches/shell/common.sh"
pattern=$(reference_pattern "$store")
rg_pattern=${pattern%'[^/]*'}'(?-u:[^/\n])*'

hf() {
    local name=$1
    shift
    hyperfine --style basic --output pipe --export-json "$out/$name.json" "$@"
}

# The distinct references and hash parts, and the files holding them (what scrub rewrites).
"$rg" --no-config -uu -a -o -I -N -e "$rg_pattern" -- "$pristine" | LC_ALL=C sort -u > "$out/references.txt" || true
hash_parts "$store" < "$out/references.txt" > "$out/hashes.txt"
reference_count=$(wc -l < "$out/references.txt")

{
    echo "smoke=$smoke"
    echo "corpus=$corpus"
    echo "runs=$runs"
    echo "mutating_runs=$mutating_runs"
    echo "relink_runs=$relink_runs"
    echo "memory_runs=$memory_runs"
    echo "warmup=$warmup"
    echo "where=$where"
    echo "storepatch=$storepatch"
    echo "rg=$rg"
    echo "auto_patchelf=${apf:-skipped}"
    echo "machine=$machine"
    echo "reference_count=$reference_count"
    echo "load_before=$(cut -d' ' -f1-3 /proc/loadavg)"
} > "$out/context.env"

# scan NAME TREE: the read-only commands.
scan_group() {
    local loc=$1 tree=$2
    log "$loc: scan vs ripgrep $RG_VERSION and the read floor (read-only, warm cache)"
    hf "$loc-scan" --warmup "$warmup" --runs "$runs" \
        -n "storepatch scan --quiet" "$(q "$storepatch") scan --quiet --store-dir $store $(q "$tree")" \
        -n "storepatch scan --json" "$(q "$storepatch") scan --json --store-dir $store $(q "$tree")" \
        -n "storepatch scan --quiet --no-mmap" "$(q "$storepatch") scan --quiet --no-mmap --store-dir $store $(q "$tree")" \
        -n "rg -a -o PATTERN | sort -u" "$(q "$rg") --no-config -uu -a -o -I -N -e $(q "$rg_pattern") -- $(q "$tree") | LC_ALL=C sort -u" \
        -n "read floor: rg -c (a literal that occurs nowhere)" "$(q "$rg") --no-config -uu -a -c -F zqzqzqzqzqzqzqzqzqzq -- $(q "$tree") || true"
}

# mutating LOC TREE: scrub, its floors and peers, restore, relink.
mutating_groups() {
    local loc=$1 tree=$2 root=$3
    local work="$root/work" graveyard="$root/graveyard"
    # On tmpfs the used copy is deleted; on ext4 it is moved aside and deleted after the group
    # (creating files right after deleting tens of thousands is slow there; see README.md).
    local discard
    if [ "$loc" = tmpfs ]; then
        discard="rm -rf $(q "$work")"
    else
        discard="if [ -e $(q "$work") ]; then mkdir -p $(q "$graveyard") && mv $(q "$work") $(q "$graveyard")/\$(date +%s%N); fi"
    fi
    local fresh="$discard; cp -a $(q "$tree") $(q "$work") && sync"
    clear() { chmod -R u+w "$graveyard" 2>/dev/null || true; rm -rf "$graveyard"; sync; }

    # The files scrub rewrites: every regular file holding a hash part (NUL-separated list with
    # the work copy's paths, for the rewrite floor).
    "$rg" --no-config -uu -a -l -0 -F -f "$out/hashes.txt" -- "$tree" \
        | python3 -c 'import sys; t, w = sys.argv[1].encode(), sys.argv[2].encode(); sys.stdout.buffer.write(b"\0".join(w + p[len(t):] for p in sys.stdin.buffer.read().split(b"\0") if p))' "$tree" "$work" \
        > "$root/changed.lst"
    echo "${loc}_changed_files=$(tr -cd '\0' < "$root/changed.lst" | wc -c)" >> "$out/context.env"

    log "$loc: scrub vs read floor + rewrite floor, the best shell pipeline (fresh copy before each run)"
    hf "$loc-scrub" --runs "$mutating_runs" --prepare "$fresh" \
        -n "storepatch scrub" "$(q "$storepatch") scrub --quiet --store-dir $store $(q "$work")" \
        -n "rewrite floor: temp file + rename of each changed file" "$(q "$rewrite_floor") $(q "$root/changed.lst")" \
        -n "best shell: rg -l | sed -i -e ... (one -e per hash)" "$(q "$benches/shell/best-scrub.sh") $(q "$work") $store $(q "$rg")"
    # The shell pipeline's result is in the work copy: no hash may remain in any file.
    echo "${loc}_shell_leftover_files=$({ "$rg" --no-config -uu -a -l -F -f "$out/hashes.txt" -- "$work" || true; } | wc -l)" >> "$out/context.env"
    eval "$fresh"
    "$storepatch" scrub --quiet --store-dir "$store" "$work"
    echo "${loc}_storepatch_check=$("$storepatch" scan --json --store-dir "$store" "$work" | tail -n 1 || true)" >> "$out/context.env"
    # remove-references-to as nixpkgs has it: one sed -i pass over every file per distinct
    # reference. Too slow to repeat: one pass is timed, the report extrapolates.
    # (On tmpfs only: on disk one pass takes over a minute.)
    if [ "$loc" = tmpfs ]; then
        local pass_hash
        pass_hash=$(sed -n 1p "$out/hashes.txt")
        hf "$loc-old-pass" --runs 1 --prepare "$fresh" \
            -n "remove-references-to: one sed -i pass over every file" \
            "$(q "$benches/shell/old-scrub-pass.sh") $(q "$work") $pass_hash"
    fi
    clear

    log "$loc: restore vs scrub (fresh copy before each run: pristine for scrub, scrubbed for restore)"
    local scrubbed="$root/scrubbed"
    rm -rf "$scrubbed"
    cp -a "$tree" "$scrubbed"
    "$storepatch" scrub --quiet --store-dir "$store" "$scrubbed"
    local fresh_scrubbed="$discard; cp -a $(q "$scrubbed") $(q "$work") && sync"
    hf "$loc-restore" --runs "$mutating_runs" --prepare "$fresh" --prepare "$fresh_scrubbed" \
        -n "storepatch scrub (beside restore)" "$(q "$storepatch") scrub --quiet --store-dir $store $(q "$work")" \
        -n "storepatch restore" "$(q "$storepatch") restore --quiet --store-dir $store --candidates $(q "$corpus/candidates.txt") $(q "$work") || [ \$? = 1 ]"
    # What restore gave back: the pristine tree's references, compared as sorted lists.
    "$rg" --no-config -uu -a -o -I -N -e "$rg_pattern" -- "$work" | LC_ALL=C sort -u > "$root/restored-references.txt" || true
    if cmp -s "$out/references.txt" "$root/restored-references.txt"; then
        echo "${loc}_restore_check=same references as the pristine tree" >> "$out/context.env"
    else
        echo "${loc}_restore_check=DIFFERENT: $(comm -3 "$out/references.txt" "$root/restored-references.txt" | wc -l) references differ" >> "$out/context.env"
    fi
    rm -rf "$scrubbed"
    clear

    # relink and the x5 tree only on tmpfs: on ext4 (with discard) creating and deleting the copies
    # of a 78 000-entry tree takes minutes each, and relink writes only a few dozen files.
    if [ "$loc" = tmpfs ]; then
        relink_group "$loc" "$tree" "$root" base
        if ! $smoke; then
            # Five copies of the tree, as hard links (no memory); each working copy made from them
            # has real files (relink_group's cp preserves no links). Does relink grow linearly?
            local x5="$root/x5"
            rm -rf "$x5"
            mkdir -p "$x5"
            for i in 1 2 3 4 5; do cp -al "$tree" "$x5/copy$i"; done
            relink_group "$loc" "$x5" "$root" x5
            rm -rf "$x5"
        fi
    fi
    clear
    rm -rf "$work"
}

# relink_group LOC TREE ROOT SIZE: storepatch relink and auto-patchelf.py on fresh copies, then
# the run paths both left, per file. The working copy has real files: -P copies symlinks as
# symlinks, and no hard link survives (x5's copies share inodes; a file with five names would let
# patchelf, which rewrites in place, patch five files at once).
relink_group() {
    local loc=$1 tree=$2 root=$3 size=$4
    local work="$root/work"
    local fresh="rm -rf $(q "$work"); cp -PR --preserve=mode,ownership,timestamps $(q "$tree") $(q "$work") && sync"
    log "$loc: relink ($size) vs auto-patchelf.py + patchelf (fresh copy before each run)"
    hf "$loc-relink-$size-storepatch" --runs "$relink_runs" --prepare "$fresh" \
        -n "storepatch relink ($size)" "$(q "$storepatch") relink --quiet ${library_args[*]@Q} $(q "$work")"
    # What any relinker with auto-patchelf.py's results must do at the least: visit every file of
    # the tree (auto-patchelf.py opens each to read its first bytes). ripgrep listing the work
    # copy, opening no file, is a floor under that.
    hf "$loc-relink-$size-floor" --warmup 1 --runs "$relink_runs" \
        -n "list floor ($size): rg --files (lists every file, opens none)" "$(q "$rg") --no-config -uu --files -- $(q "$work")"
    python3 "$benches/real-corpus/runpaths.py" "$work" > "$out/$loc-relink-$size-storepatch.tsv"
    if [ -n "$apf" ]; then
        hf "$loc-relink-$size-auto-patchelf" --runs "$mutating_runs" --prepare "$fresh" \
            -n "auto-patchelf.py + patchelf ($size)" "python3 $(q "$apf") --paths $(q "$work") --libs ${apf_libs[*]@Q} >/dev/null"
        python3 "$benches/real-corpus/runpaths.py" "$work" > "$out/$loc-relink-$size-auto-patchelf.tsv"
        if cmp -s "$out/$loc-relink-$size-storepatch.tsv" "$out/$loc-relink-$size-auto-patchelf.tsv"; then
            echo "${loc}_relink_${size}_check=same RUNPATH directories for all $(wc -l < "$out/$loc-relink-$size-storepatch.tsv") ELF files" >> "$out/context.env"
        else
            echo "${loc}_relink_${size}_check=DIFFERENT RUNPATH directories for $(diff "$out/$loc-relink-$size-storepatch.tsv" "$out/$loc-relink-$size-auto-patchelf.tsv" | grep -c '^<') ELF files (see the .tsv files)" >> "$out/context.env"
        fi
    fi
    rm -rf "$work"
}

# memory LOC TREE ROOT: peak resident set (GNU time's %M, the largest of the process tree) of each
# command, the median of $memory_runs runs (it varies by a few hundred KiB with the threads'
# timing), each mutating run on a fresh copy.
memory_group() {
    local loc=$1 tree=$2 root=$3
    local work="$root/work"
    log "$loc: peak memory (one run each)"
    local file="$out/$loc-memory.tsv"
    : > "$file"
    measure() {
        local name=$1 prepare=$2 command=$3
        local peaks=() i
        for ((i = 0; i < memory_runs; i++)); do
            if [ -n "$prepare" ]; then rm -rf "$work"; cp -a "$prepare" "$work"; fi
            /usr/bin/time -f %M -o "$root/maxrss" sh -c "$command" >/dev/null 2>&1 || true
            peaks+=("$(tail -n 1 "$root/maxrss")")
        done
        # The median (the upper one of an even count), then every run's figure.
        local sorted
        sorted=$(printf '%s\n' "${peaks[@]}" | sort -n | sed -n "$((memory_runs / 2 + 1))p")
        printf '%s\t%s\t%s\n' "$name" "$sorted" "${peaks[*]}" >> "$file"
    }
    local scrubbed="$root/scrubbed"
    rm -rf "$scrubbed"
    cp -a "$tree" "$scrubbed"
    "$storepatch" scrub --quiet --store-dir "$store" "$scrubbed"
    measure "rg -a -o PATTERN | sort -u" "" "$(q "$rg") --no-config -uu -a -o -I -N -e $(q "$rg_pattern") -- $(q "$tree") | LC_ALL=C sort -u"
    measure "storepatch scan --quiet" "" "$(q "$storepatch") scan --quiet --store-dir $store $(q "$tree")"
    measure "storepatch scan --json" "" "$(q "$storepatch") scan --json --store-dir $store $(q "$tree")"
    measure "storepatch scan --quiet --no-mmap" "" "$(q "$storepatch") scan --quiet --no-mmap --store-dir $store $(q "$tree")"
    measure "storepatch scrub" "$tree" "$(q "$storepatch") scrub --quiet --store-dir $store $(q "$work")"
    measure "storepatch restore" "$scrubbed" "$(q "$storepatch") restore --quiet --store-dir $store --candidates $(q "$corpus/candidates.txt") $(q "$work")"
    measure "storepatch relink" "$tree" "$(q "$storepatch") relink --quiet ${library_args[*]@Q} $(q "$work")"
    [ -n "$apf" ] && measure "auto-patchelf.py + patchelf" "$tree" "python3 $(q "$apf") --paths $(q "$work") --libs ${apf_libs[*]@Q}"
    rm -rf "$scrubbed" "$work"
}

# cliff ROOT: the cliff inputs against same-size slices of the real venv.
cliff_group() {
    local root=$1
    log "cliff inputs vs same-size slices of the real venv"
    local zeros_bytes xruns_bytes
    zeros_bytes=$(du -sb --apparent-size "$cliff_dir/zeros" | cut -f1)
    xruns_bytes=$(du -sb --apparent-size "$cliff_dir/xruns" | cut -f1)
    python3 "$benches/real-corpus/slice.py" "$pristine" "$root/slice-zeros" "$zeros_bytes"
    python3 "$benches/real-corpus/slice.py" "$pristine" "$root/slice-xruns" "$xruns_bytes"
    for input in "zeros:$cliff_dir/zeros" "slice-zeros:$root/slice-zeros" "xruns:$cliff_dir/xruns" "slice-xruns:$root/slice-xruns"; do
        echo "cliff_${input%%:*}_bytes=$(du -sb --apparent-size "${input#*:}" | cut -f1)" >> "$out/context.env"
    done
    local commands=()
    for input in "zeros:$cliff_dir/zeros" "slice-zeros:$root/slice-zeros" "xruns:$cliff_dir/xruns" "slice-xruns:$root/slice-xruns"; do
        commands+=(-n "storepatch scan ${input%%:*}" "$(q "$storepatch") scan --quiet --store-dir $store $(q "${input#*:}") || [ \$? = 1 ]")
    done
    hf cliff --warmup "$warmup" --runs "$runs" "${commands[@]}"
    rm -rf "$root/slice-zeros" "$root/slice-xruns"
}

IFS=, read -r -a locations <<< "$where"
for loc in "${locations[@]}"; do
    case "$loc" in
        tmpfs)
            root="$tmpfs/storepatch-bench-real"
            rm -rf "$root"
            mkdir -p "$root"
            log "tmpfs: copying the corpus to $root"
            cp -a "$pristine" "$root/tree"
            tree="$root/tree"
            ;;
        disk)
            root="$cache/work-disk"
            chmod -R u+w "$root" 2>/dev/null || true
            rm -rf "$root"
            mkdir -p "$root"
            tree="$pristine"
            ;;
        *) echo "real.sh: unknown location $loc (tmpfs or disk)" >&2; exit 2 ;;
    esac
    echo "${loc}_filesystem=$(findmnt -no FSTYPE --target "$root" | sed -n 1p)" >> "$out/context.env"
    scan_group "$loc" "$tree"
    mutating_groups "$loc" "$tree" "$root"
    if [ "$loc" = "${locations[0]}" ]; then
        memory_group "$loc" "$tree" "$root"
        cliff_group "$root"
    fi
    rm -rf "$root"
done

echo "load_after=$(cut -d' ' -f1-3 /proc/loadavg)" >> "$out/context.env"
echo "wall_seconds=$((SECONDS - start_seconds))" >> "$out/context.env"
cp "$corpus/summary.json" "$out/corpus.json"
python3 "$benches/real_report.py" "$out"
