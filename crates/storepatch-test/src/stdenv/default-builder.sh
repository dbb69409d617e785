# shellcheck shell=bash
# Models pkgs/stdenv/generic/default-builder.sh: source the setup script, run every phase.
# shellcheck disable=SC1091
source "${BASH_SOURCE[0]%/*}/setup.sh"
genericBuild
