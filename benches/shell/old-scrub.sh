#!/usr/bin/env bash
# usage: old-scrub.sh TREE STORE_DIR [--per-file]
# The whole old pipeline: discovery, then one full pass (old-scrub-pass.sh, batched or with
# --per-file one sed per file) per distinct match. Matches that differ only in the junk after the
# name repeat a pass with the same hash, as the original
# `... | sort -u | while read ref; do remove-references-to -t "$ref" ...; done` does.
set -euo pipefail
here=$(dirname "$0")
source "$here/common.sh"
tree=$1 store=$2 mode=${3:-}
references=$(mktemp)
trap 'rm -f "$references"' EXIT
"$here/old-scan.sh" "$tree" "$store" > "$references"
while IFS= read -r reference; do
    hash=$(printf '%s\n' "$reference" | hash_parts "$store")
    if [ -z "$hash" ]; then
        echo "remove-references-to: -t argument must be a Nix store path" >&2
        exit 1
    fi
    "$here/old-scrub-pass.sh" "$tree" "$hash" $mode
done < "$references"
