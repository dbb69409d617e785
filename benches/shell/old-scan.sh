#!/usr/bin/env bash
# usage: old-scan.sh TREE STORE_DIR
# The old discovery step: every distinct `<storedir>/<hash>-...` match in every regular file.
set -euo pipefail
source "$(dirname "$0")/common.sh"
tree=$1 store=$2
# grep exits 1 when nothing matched; that is not an error here.
find "$tree" -type f -print0 | xargs -0 -r grep -aohE -e "$(reference_pattern "$store")" | sort -u || true
