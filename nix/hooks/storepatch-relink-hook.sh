# shellcheck shell=bash
# storepatch relink hook: a drop-in replacement for nixpkgs' autoPatchelfHook.
#
# It keeps the hook's interface (variables, functions, the postFixup timing) and hands all the
# work to one `storepatch relink` call: library index, NEEDED resolution, RUNPATH and
# interpreter. See nix/README.md for the mapping and DESIGN.md §4 for the semantics.
#
# Variables (all optional; space-separated strings, or bash arrays with __structuredAttrs):
#   dontAutoPatchelf                non-empty: skip the automatic run in postFixup.
#   autoPatchelfIgnoreMissingDeps   sonames (glob patterns) that may stay unresolved;
#                                   `true` (which Nix passes as "1") or "*" ignores all.
#   runtimeDependencies             packages whose lib/ goes into every RUNPATH
#                                   (for libraries loaded with dlopen).
#   appendRunpaths                  directories appended to every RUNPATH.
#   autoPatchelfFlags               extra flags for `storepatch relink`.
#   patchelfFlags                   patchelf flags; not supported (warned about, ignored).
#
# Functions:
#   addAutoPatchelfSearchPath [--no-recurse] DIR...   more library directories (searched
#                                                     recursively unless --no-recurse).
#   autoPatchelf [--no-recurse] [--] PATH...          relink now.
#
# Library directories come, in this order, from: the outputs being patched (storepatch indexes
# them itself, first), `lib/` of every build input (collected by an env hook, as the original
# does, in `autoPatchelfLibs`), then `extraAutoPatchelfLibs` and addAutoPatchelfSearchPath.
# The dynamic linker is read from $NIX_BINTOOLS/nix-support/dynamic-linker.
#
# @storepatch@ is replaced by makeSetupHook's substitutions with the storepatch executable.

declare -a autoPatchelfLibs
declare -a extraAutoPatchelfLibs
declare -a storepatchRelinkLibraryTrees

# Env hook: called by stdenv once per dependency, with its store path.
_storepatchRelinkGatherLibraries() {
    autoPatchelfLibs+=("$1/lib")
}

# shellcheck disable=SC2154 # targetOffset is set by stdenv's setup.sh
addEnvHooks "$targetOffset" _storepatchRelinkGatherLibraries

# Append the words of variable $2 (a string or, with structured attrs, an array) to array $1.
_storepatchRelinkWords() {
    local -n _storepatchRelinkWordsInto=$1
    local _storepatchRelinkWordsFrom=$2
    if [[ "$(declare -p "$_storepatchRelinkWordsFrom" 2>/dev/null)" == "declare -a"* ]]; then
        local -n _storepatchRelinkWordsArray=$_storepatchRelinkWordsFrom
        _storepatchRelinkWordsInto+=("${_storepatchRelinkWordsArray[@]}")
    else
        local -a _storepatchRelinkWordsSplit=()
        read -r -a _storepatchRelinkWordsSplit <<<"${!_storepatchRelinkWordsFrom-}"
        _storepatchRelinkWordsInto+=("${_storepatchRelinkWordsSplit[@]}")
    fi
}

addAutoPatchelfSearchPath() {
    local recurse=1
    while (($# > 0)); do
        case "$1" in
        --)
            shift
            break
            ;;
        --no-recurse)
            recurse=
            shift
            ;;
        --*)
            echo "addAutoPatchelfSearchPath: unknown option $1" >&2
            return 1
            ;;
        *) break ;;
        esac
    done
    if [[ -n "$recurse" ]]; then
        storepatchRelinkLibraryTrees+=("$@")
    else
        extraAutoPatchelfLibs+=("$@")
    fi
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

    local -a ignoreMissing=() runtimeDeps=() runpaths=() extraFlags=() unsupported=()
    _storepatchRelinkWords ignoreMissing autoPatchelfIgnoreMissingDeps
    _storepatchRelinkWords runtimeDeps runtimeDependencies
    _storepatchRelinkWords runpaths appendRunpaths
    _storepatchRelinkWords extraFlags autoPatchelfFlags
    _storepatchRelinkWords unsupported patchelfFlags
    if ((${#unsupported[@]} > 0)); then
        echo "autoPatchelf: patchelfFlags (${unsupported[*]}) are not supported by storepatch relink, ignoring them" >&2
    fi

    local -a args=()
    local item
    # Each directory is searched on its own (not recursively); a dependency without lib/ is
    # simply not a library directory.
    for item in "${autoPatchelfLibs[@]}" "${extraAutoPatchelfLibs[@]}"; do
        if [[ -d "$item" ]]; then
            args+=(--library-path "$item")
        fi
    done
    for item in "${storepatchRelinkLibraryTrees[@]}"; do
        args+=(--library-tree "$item")
    done

    local linkerFile
    for linkerFile in "${NIX_BINTOOLS-}/nix-support/dynamic-linker" "${NIX_CC-}/nix-support/dynamic-linker"; do
        if [[ -f "$linkerFile" ]]; then
            args+=(--interpreter "$(<"$linkerFile")")
            break
        fi
    done

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
    if [[ -n "$noRecurse" ]]; then
        args+=(--no-recurse)
    fi

    echo "autoPatchelf: storepatch relink of $*"
    @storepatch@ relink "${args[@]}" "${extraFlags[@]}" -- "$@"
}

_storepatchRelinkPostFixup() {
    [[ -z "${dontAutoPatchelf-}" ]] || return 0
    local output
    local -a names=() paths=()
    if declare -F getAllOutputNames >/dev/null; then
        read -r -a names <<<"$(getAllOutputNames)"
    else
        read -r -a names <<<"${outputs:-out}"
    fi
    for output in "${names[@]}"; do
        # Separate debug info is not patched, as with the original hook.
        if [[ "$output" == debug ]]; then
            continue
        fi
        if [[ -e "${!output}" ]]; then
            paths+=("${!output}")
        fi
    done
    ((${#paths[@]} > 0)) || return 0
    autoPatchelf -- "${paths[@]}"
}

# postFixup rather than fixupOutputHooks, like the original: it must run after every other
# fixup hook (strip, patchelf's shrink-rpath) has had its say.
postFixupHooks+=(_storepatchRelinkPostFixup)
