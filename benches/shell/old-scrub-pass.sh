#!/usr/bin/env bash
# usage: old-scrub-pass.sh TREE HASH [--per-file]
# One iteration of the old loop for one reference: `sed -i -e "s|HASH|eeee...|g"` over every
# regular file. sed -i rewrites every file it is given, whether or not the hash occurs in it.
#
# By default the files are batched, as `find TREE -type f -exec remove-references-to -t REF {} +`
# does (remove-references-to passes all its files to one sed; see nixpkgs
# pkgs/build-support/remove-references-to/remove-references-to.sh). With --per-file, one sed
# process per file, as the common `find ... -exec remove-references-to -t REF {} \;` or a
# `for file in ...` loop around it does: one `sed -i` per reference per file.
set -euo pipefail
source "$(dirname "$0")/common.sh"
tree=$1 hash=$2 mode=${3:-}
case "$mode" in
    "") find "$tree" -type f -print0 | xargs -0 -r sed -i -e "s|$hash|$SCRUBBED|g" ;;
    --per-file) find "$tree" -type f -print0 | xargs -0 -r -n 1 sed -i -e "s|$hash|$SCRUBBED|g" ;;
    *) echo "old-scrub-pass.sh: unknown mode $mode" >&2; exit 2 ;;
esac
