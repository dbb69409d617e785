# shellcheck shell=bash
# Models the part of pkgs/build-support/bintools-wrapper/setup-hook.sh the hooks rely on: the
# wrapper exports itself as NIX_BINTOOLS (whose nix-support/dynamic-linker names the loader) and
# its tools, here STRIP.
NIX_BINTOOLS=$(dirname "$(dirname "${BASH_SOURCE[0]}")")
export NIX_BINTOOLS
export STRIP=strip
