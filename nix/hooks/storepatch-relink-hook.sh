# shellcheck shell=bash
# storepatch relink hook: a drop-in replacement for nixpkgs' autoPatchelfHook.
#
# It keeps the hook's interface (variables, functions, the postFixup timing) and hands all the
# work to `storepatch relink`: library index, NEEDED resolution, RUNPATH and interpreter. See
# nix/README.md for the mapping and DESIGN.md §4 for the semantics.
#
# Variables (all optional; strings split on all whitespace like nixpkgs' concatTo, or bash
# arrays with __structuredAttrs), each mapped to `storepatch relink` flags:
#   dontAutoPatchelf                non-empty: skip the automatic runs.
#   autoPatchelfIgnoreMissingDeps   each word -> `--ignore-missing WORD` (a glob pattern);
#                                   `true` (which Nix passes as "1") -> `--ignore-missing '*'`.
#   runtimeDependencies             each package P -> `--runtime-dependency P/lib`.
#   appendRunpaths                  each directory D -> `--append-rpath D`.
#   autoPatchelfFlags               words appended to the `storepatch relink` command line as
#                                   they are (after every flag above, before `--`).
#   patchelfFlags                   each word W -> `--patchelf-flag=W` (the patchelf flags that
#                                   make sense for relinking; others are an error, exit 2).
#   extraAutoPatchelfLibs           each directory D -> `--library-path D`.
#
# Functions:
#   addAutoPatchelfSearchPath [--no-recurse] [DIR...]  like nixpkgs': every directory holding a
#       `*.so` or `*.so.*` file below each DIR (only DIR itself with --no-recurse; the current
#       directory without DIR) is appended to extraAutoPatchelfLibs. Per call the directories
#       are sorted (nixpkgs takes find's order).
#   autoPatchelf [--no-recurse] [--] PATH...           relink now (`--no-recurse` passed on).
#   autoPatchelfPostFixup                              the automatic run over every output but
#       `debug`, in postFixupHooks (named as in nixpkgs; other hooks look for it by name).
#
# Library directories, in this order (each `--library-path`): `lib/` of every build input
# (collected by an env hook into autoPatchelfLibs, as the original does), then
# extraAutoPatchelfLibs in the order added; storepatch indexes the outputs themselves first and,
# with `--follow-run-paths` as auto-patchelf.py always does, the directories named in the run
# paths of the libraries it indexes (`$ORIGIN` entries aside).
# The dynamic linker is read from $NIX_BINTOOLS/nix-support/dynamic-linker (the package
# propagates bintools, as nixpkgs' hook does, so stdenvNoCC has one too), else $NIX_CC's.
#
# Against stdenv's patchELF: patchelf's setup hook runs `patchelf --shrink-rpath` on every ELF in
# fixupOutputHooks, before postFixup, and would delete the scrubbed `<store>/eeee...` run path
# entries `storepatch relink` restores in place. So this hook, sourced before stdenv's default
# hooks, also registers a fixupOutputHook that runs first: on its first call it relinks every
# output once (missing libraries are not an error there; runtimeDependencies and appendRunpaths
# are left to the real run), which restores those entries to existing directories that
# shrink-rpath keeps. It does nothing with dontAutoPatchelf or dontPatchELF set.
#
# @storepatch@ is replaced by makeSetupHook's substitutions with the storepatch executable.

declare -ga autoPatchelfLibs
declare -ga extraAutoPatchelfLibs

# Env hook: called by stdenv once per dependency, with its store path.
_storepatchRelinkGatherLibraries() {
    autoPatchelfLibs+=("$1/lib")
}

# shellcheck disable=SC2154 # targetOffset is set by stdenv's setup.sh
addEnvHooks "$targetOffset" _storepatchRelinkGatherLibraries

# Append the words of variable $2 to array $1 as nixpkgs' concatTo does: a bash array (structured
# attrs) element by element, a string split on all whitespace (spaces, tabs, newlines), no globbing.
_storepatchRelinkWords() {
    local -
    set -o noglob
    local -n _storepatchRelinkWordsInto=$1
    local _storepatchRelinkWordsFrom=$2
    if [[ "$(declare -p "$_storepatchRelinkWordsFrom" 2>/dev/null)" == "declare -a"* ]]; then
        local -n _storepatchRelinkWordsArray=$_storepatchRelinkWordsFrom
        _storepatchRelinkWordsInto+=("${_storepatchRelinkWordsArray[@]}")
    else
        local IFS=$' \t\n'
        # shellcheck disable=SC2206 # splitting is the point
        _storepatchRelinkWordsInto+=(${!_storepatchRelinkWordsFrom-})
    fi
}

addAutoPatchelfSearchPath() {
    local -a findOptions=()
    while (($# > 0)); do
        case "$1" in
        --)
            shift
            break
            ;;
        --no-recurse)
            findOptions+=(-maxdepth 1)
            shift
            ;;
        --*)
            echo "addAutoPatchelfSearchPath: unknown option $1" >&2
            return 1
            ;;
        *) break ;;
        esac
    done
    local dir
    while IFS= read -r -d '' dir; do
        extraAutoPatchelfLibs+=("$dir")
    done < <(find "$@" "${findOptions[@]}" ! -type d \( -name '*.so' -o -name '*.so.*' \) -print0 |
        sed -z 's#/[^/]*$##' | sort -z -u)
}

# The `storepatch relink` flags for the library directories and the dynamic linker, into array $1.
_storepatchRelinkSearchFlags() {
    local -n _storepatchRelinkSearchInto=$1
    local item linkerFile
    local -a dirs=()
    # auto-patchelf.py also searches the directories in the run paths of every library it indexes.
    _storepatchRelinkSearchInto+=(--follow-run-paths)
    _storepatchRelinkWords dirs autoPatchelfLibs
    _storepatchRelinkWords dirs extraAutoPatchelfLibs
    # A dependency without lib/ is simply not a library directory.
    for item in "${dirs[@]}"; do
        if [[ -d "$item" ]]; then
            _storepatchRelinkSearchInto+=(--library-path "$item")
        fi
    done
    for linkerFile in "${NIX_BINTOOLS-}/nix-support/dynamic-linker" "${NIX_CC-}/nix-support/dynamic-linker"; do
        if [[ -f "$linkerFile" ]]; then
            _storepatchRelinkSearchInto+=(--interpreter "$(<"$linkerFile")")
            break
        fi
    done
}

autoPatchelf() {
    local noRecurse=
    while (($# > 0)); do
        case "$1" in
        --)
            shift
            break
            ;;
        --no-recurse)
            noRecurse=1
            shift
            ;;
        --*)
            echo "autoPatchelf: unknown option $1" >&2
            return 1
            ;;
        *) break ;;
        esac
    done

    local -a ignoreMissing=() runtimeDeps=() runpaths=() extraFlags=() patchelfWords=()
    _storepatchRelinkWords ignoreMissing autoPatchelfIgnoreMissingDeps
    _storepatchRelinkWords runtimeDeps runtimeDependencies
    _storepatchRelinkWords runpaths appendRunpaths
    _storepatchRelinkWords extraFlags autoPatchelfFlags
    _storepatchRelinkWords patchelfWords patchelfFlags

    local -a args=()
    local item
    _storepatchRelinkSearchFlags args

    for item in "${runtimeDeps[@]}"; do
        args+=(--runtime-dependency "$item/lib")
    done
    for item in "${runpaths[@]}"; do
        args+=(--append-rpath "$item")
    done
    for item in "${ignoreMissing[@]}"; do
        # `autoPatchelfIgnoreMissingDeps = true;` arrives as "1".
        if [[ "$item" == 1 || "$item" == true ]]; then
            item='*'
        fi
        args+=(--ignore-missing "$item")
    done
    for item in "${patchelfWords[@]}"; do
        args+=("--patchelf-flag=$item")
    done
    if [[ -n "$noRecurse" ]]; then
        args+=(--no-recurse)
    fi

    echo "autoPatchelf: storepatch relink of $*"
    @storepatch@ relink "${args[@]}" "${extraFlags[@]}" -- "$@"
}

# The paths of every output but `debug` (separate debug info is not patched, as with the
# original hook) that exist, into array $1.
_storepatchRelinkOutputs() {
    local -n _storepatchRelinkOutputsInto=$1
    local output
    for output in $(getAllOutputNames); do
        if [[ "$output" != debug && -e "${!output}" ]]; then
            _storepatchRelinkOutputsInto+=("${!output}")
        fi
    done
}

autoPatchelfPostFixup() {
    [[ -z "${dontAutoPatchelf-}" ]] || return 0
    local -a paths=()
    _storepatchRelinkOutputs paths
    ((${#paths[@]} > 0)) || return 0
    autoPatchelf -- "${paths[@]}"
}

# The first fixupOutputHook (see the top of this file): restore scrubbed run path entries of
# every output before patchELF's shrink-rpath of the first one can delete them.
_storepatchRelinkBeforeShrink() {
    [[ -z "${_storepatchRelinkBeforeShrinkDone-}" ]] || return 0
    _storepatchRelinkBeforeShrinkDone=1
    [[ -z "${dontAutoPatchelf-}" && -z "${dontPatchELF-}" ]] || return 0
    local -a paths=() args=() extraFlags=()
    _storepatchRelinkOutputs paths
    ((${#paths[@]} > 0)) || return 0
    _storepatchRelinkSearchFlags args
    _storepatchRelinkWords extraFlags autoPatchelfFlags
    echo "autoPatchelf: storepatch relink of ${paths[*]} before patchELF shrinks run paths"
    # Only the in-place restoration: a run path that grows moves the dynamic strings, and strip,
    # which runs after this and before postFixup, can then misalign the segment left empty.
    @storepatch@ relink "${args[@]}" --restore-only --ignore-missing '*' "${extraFlags[@]}" -- "${paths[@]}"
}

fixupOutputHooks+=(_storepatchRelinkBeforeShrink)
# postFixup rather than fixupOutputHooks, like the original: it runs after every fixupOutputHook
# of every output and after the derivation's own postFixup.
postFixupHooks+=(autoPatchelfPostFixup)
