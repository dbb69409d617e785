#!/usr/bin/env bash
# usage: best-scrub.sh TREE STORE_DIR [RG]
# The fastest fair shell equivalent of `storepatch scrub` (storepatch-test's
# run_best_shell_pipeline): ripgrep finds the references, ripgrep lists the files holding any of
# their hashes, and one `sed -i` with one `-e` per hash rewrites just those files.
set -euo pipefail
source "$(dirname "$0")/common.sh"
tree=$1 store=$2 rg=${3:-rg}
# Same pattern; (?-u:...) lets [^/] match any byte, as grep does in the C locale.
pattern=$(reference_pattern "$store")
pattern=${pattern%'[^/]*'}'(?-u:[^/\n])*'
mapfile -t hashes < <({ "$rg" --no-config -uu -a -o -I -N -e "$pattern" -- "$tree" || true; } | sort -u | hash_parts "$store")
[ "${#hashes[@]}" -gt 0 ] || exit 0
search=() edits=()
for hash in "${hashes[@]}"; do
    search+=(-e "$hash")
    edits+=(-e "s|$hash|$SCRUBBED|g")
done
"$rg" --no-config -uu -a -l -0 -F "${search[@]}" -- "$tree" | xargs -0 -r sed -i "${edits[@]}"
