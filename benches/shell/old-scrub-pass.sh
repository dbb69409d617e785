#!/usr/bin/env bash
# usage: old-scrub-pass.sh TREE HASH
# One iteration of the old loop: `find TREE -type f -exec remove-references-to -t REF {} +`, which
# runs one `sed -i -e "s|HASH|eeee...|g"` over every regular, non-symlink file (see nixpkgs
# pkgs/build-support/remove-references-to/remove-references-to.sh). sed -i rewrites every file
# it is given, whether or not the hash occurs in it.
set -euo pipefail
source "$(dirname "$0")/common.sh"
tree=$1 hash=$2
find "$tree" -type f -print0 | xargs -0 -r sed -i -e "s|$hash|$SCRUBBED|g"
