# shellcheck shell=bash
# A model of nixpkgs' stdenv for tests under the real nix-build, without nixpkgs.
#
# Sourced by default-builder.sh. It keeps the parts of pkgs/stdenv/generic/setup.sh that decide
# when a setup hook runs and what it sees, and nothing else:
#
#   - inputs (findInputs/activatePackage): nativeBuildInputs first, then the stdenv's
#     defaultNativeBuildInputs (so a package's own setup hooks are sourced before the default
#     ones), each input's `nix-support/propagated-build-inputs` followed, each input once; an
#     input that is a file is sourced itself, a directory's `nix-support/setup-hook` is sourced
#     and its `bin/` put on PATH; buildInputs' `bin/` go on HOST_PATH; env hooks registered with
#     `addEnvHooks "$targetOffset" FN` are called with every buildInputs package, in order.
#   - runHook: the implicit hook (function or variable named like the hook) first, then every
#     entry of the `<name>Hooks` array (a function is called, a string is evaluated).
#   - genericBuild: the phase list with prePhases ... postPhases, the dont*/do* switches, and the
#     default unpack, build, install check phases reduced to what the tests use.
#   - fixupPhase: make outputs writable, preFixup, fixupOutput once per output with $prefix set,
#     postFixup.
#   - outputs: `outputs` as a space-separated string, or with __structuredAttrs the associative
#     array from .attrs.sh (whose variables are the derivation's attributes); getAllOutputNames.
#   - isELF, as setup.sh defines it.
#
# Not modelled (they do not decide where store references end up or whether an ELF file loads):
# cross-compilation offsets beyond the two used here, the bash-level logging, substitute*,
# unpacking archives, configure and make, the nix-support/propagated-* files fixupPhase writes,
# and the default hooks compress-man-pages, move-docs, move-sbin, move-systemd-user-units,
# multiple-outputs (moving headers, pkg-config files and docs between outputs before fixupOutput),
# prune-libtool-files, reproducible-builds and set-source-date-epoch-to-latest.
#
# The default hooks (stdenv/hooks/*.sh) and the patchelf package (patchelf/) model
# pkgs/build-support/setup-hooks/{no-broken-symlinks,audit-tmpdir,make-symlinks-relative,
# move-lib64,patch-shebangs,strip}.sh and pkgs/development/tools/misc/patchelf/setup-hook.sh, in
# the order of pkgs/stdenv/generic/default.nix (extraNativeBuildInputs, i.e. patchelf, first), so
# the hook arrays come out as in a real build: fixupOutputHooks patchELF, auditTmpdir, moveLib64,
# patchShebangs, strip; postFixupHooks noBrokenSymlinks, makeSymlinksRelative.
# `stdenvModelCC=1` adds a bintools package (bintools/, as cc-wrapper propagates it) to the
# defaults: the stdenv, otherwise stdenvNoCC.

set -eu
set -o pipefail
shopt -s inherit_errexit

stdenvModelDir="${BASH_SOURCE[0]%/*}"
stdenvModelRoot="${stdenvModelDir%/*}"

# With __structuredAttrs the attributes are not in the environment: Nix writes them as bash
# declarations into the build directory. (Nix 2.8's NIX_ATTRS_SH_FILE names the file outside the
# sandbox, so the build directory is tried as well.) __structuredAttrs itself is not among them.
if [[ -f "${NIX_ATTRS_SH_FILE-}" ]]; then
    # shellcheck disable=SC1090
    source "$NIX_ATTRS_SH_FILE"
    __structuredAttrs=1
elif [[ -f "${NIX_BUILD_TOP-.}/.attrs.sh" ]]; then
    # shellcheck disable=SC1091
    source "${NIX_BUILD_TOP-.}/.attrs.sh"
    __structuredAttrs=1
fi
if [[ -n "${__structuredAttrs-}" ]]; then
    for stdenvModelOutput in "${!outputs[@]}"; do
        export "$stdenvModelOutput=${outputs[$stdenvModelOutput]}"
    done
fi

getAllOutputNames() {
    if [[ -n "${__structuredAttrs-}" ]]; then
        echo "${!outputs[*]}"
    else
        echo "${outputs:-out}"
    fi
}

isELF() {
    local fn="$1" fd magic
    exec {fd}<"$fn"
    read -r -n 4 -u "$fd" magic || true
    exec {fd}<&-
    [[ "$magic" == $'\177ELF' ]]
}

_eval() {
    if declare -F "$1" >/dev/null 2>&1; then
        "$@"
    else
        eval "$1"
    fi
}

runHook() {
    local hookName="$1" hook
    shift
    local hooksSlice="${hookName%Hook}Hooks[@]"
    if declare -F "$hookName" >/dev/null; then
        "$hookName" "$@"
    elif [[ -n "${!hookName-}" ]]; then
        eval "${!hookName}"
    fi
    for hook in ${!hooksSlice+"${!hooksSlice}"}; do
        _eval "$hook" "$@"
    done
    return 0
}

declare -a envHostTargetHooks=()
hostOffset=-1
targetOffset=0
addEnvHooks() {
    # Only the offset the tests use: hooks in nativeBuildInputs (host offset -1) that ask for
    # their target offset (0), i.e. to see every buildInputs package.
    local depHostOffset="$1"
    shift
    if [[ "$depHostOffset" == 0 ]]; then
        envHostTargetHooks+=("$@")
    fi
}

declare -a stdenvModelNative=()
stdenvModelFindInputs() {
    local pkg="$1" seen dep
    for seen in "${stdenvModelNative[@]}"; do
        [[ "$seen" != "$pkg" ]] || return 0
    done
    stdenvModelNative+=("$pkg")
    if [[ -f "$pkg/nix-support/propagated-build-inputs" ]]; then
        for dep in $(<"$pkg/nix-support/propagated-build-inputs"); do
            stdenvModelFindInputs "$dep"
        done
    fi
}

defaultNativeBuildInputs="$stdenvModelRoot/patchelf"
for stdenvModelHook in no-broken-symlinks audit-tmpdir make-symlinks-relative move-lib64 patch-shebangs strip; do
    defaultNativeBuildInputs+=" $stdenvModelDir/hooks/$stdenvModelHook.sh"
done
if [[ -n "${stdenvModelCC-}" ]]; then
    defaultNativeBuildInputs+=" $stdenvModelRoot/bintools"
fi

# With structured attributes these are bash arrays; as environment variables, strings.
# shellcheck disable=SC2068
for stdenvModelInput in ${nativeBuildInputs[@]-} ${propagatedNativeBuildInputs[@]-} $defaultNativeBuildInputs; do
    stdenvModelFindInputs "$stdenvModelInput"
done
HOST_PATH=
for stdenvModelInput in "${stdenvModelNative[@]}"; do
    if [[ -f "$stdenvModelInput" ]]; then
        # shellcheck disable=SC1090
        source "$stdenvModelInput"
        continue
    fi
    if [[ -d "$stdenvModelInput/bin" ]]; then
        PATH="$stdenvModelInput/bin:$PATH"
    fi
    if [[ -f "$stdenvModelInput/nix-support/setup-hook" ]]; then
        # shellcheck disable=SC1091
        source "$stdenvModelInput/nix-support/setup-hook"
    fi
done
# shellcheck disable=SC2068
for stdenvModelInput in ${buildInputs[@]-} ${propagatedBuildInputs[@]-}; do
    if [[ -d "$stdenvModelInput/bin" ]]; then
        HOST_PATH="${HOST_PATH:+$HOST_PATH:}$stdenvModelInput/bin"
    fi
    for stdenvModelEnvHook in "${envHostTargetHooks[@]}"; do
        "$stdenvModelEnvHook" "$stdenvModelInput"
    done
done
export HOST_PATH="${HOST_PATH:+$HOST_PATH:}/usr/bin:/bin"
export NIX_STORE="${NIX_STORE:-/nix/store}"

unpackPhase() {
    runHook preUnpack
    cp -R --no-preserve=mode "$src" source
    sourceRoot=source
    runHook postUnpack
}

patchPhase() { runHook prePatch; runHook postPatch; }
configurePhase() { runHook preConfigure; runHook postConfigure; }
buildPhase() { runHook preBuild; runHook postBuild; }
checkPhase() { runHook preCheck; runHook postCheck; }
installPhase() {
    echo "the model has no default installPhase" >&2
    return 1
}
distPhase() { runHook preDist; runHook postDist; }
installCheckPhase() { runHook preInstallCheck; runHook postInstallCheck; }

fixupPhase() {
    local output
    for output in $(getAllOutputNames); do
        if [[ -e "${!output}" ]]; then chmod -R u+w,u-s,g-s "${!output}"; fi
    done
    runHook preFixup
    for output in $(getAllOutputNames); do
        prefix="${!output}" runHook fixupOutput
    done
    runHook postFixup
}

genericBuild() {
    local phases curPhase
    # shellcheck disable=SC2206
    phases=(${phases[*]-${prePhases[*]-} unpackPhase patchPhase ${preConfigurePhases[*]-} configurePhase ${preBuildPhases[*]-} buildPhase checkPhase ${preInstallPhases[*]-} installPhase ${preFixupPhases[*]-} fixupPhase installCheckPhase ${preDistPhases[*]-} distPhase ${postPhases[*]-}})
    for curPhase in "${phases[@]}"; do
        case "$curPhase" in
        unpackPhase) [[ -z "${dontUnpack-}" && -n "${src-}" ]] || continue ;;
        patchPhase) [[ -z "${dontPatch-}" ]] || continue ;;
        configurePhase) [[ -z "${dontConfigure-}" ]] || continue ;;
        buildPhase) [[ -z "${dontBuild-}" ]] || continue ;;
        checkPhase) [[ -n "${doCheck-}" ]] || continue ;;
        installPhase) [[ -z "${dontInstall-}" ]] || continue ;;
        fixupPhase) [[ -z "${dontFixup-}" ]] || continue ;;
        installCheckPhase) [[ -n "${doInstallCheck-}" ]] || continue ;;
        distPhase) [[ -n "${doDist-}" ]] || continue ;;
        esac
        echo "Running phase: $curPhase"
        # A phase given as an attribute replaces the function of the same name.
        eval "${!curPhase:-$curPhase}"
        if [[ "$curPhase" == unpackPhase ]]; then
            cd "${sourceRoot:-.}"
        fi
    done
}
