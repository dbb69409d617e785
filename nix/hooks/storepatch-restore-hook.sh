# shellcheck shell=bash
# storepatch restore hook: turns a scrubbed tree (the output of a fixed-output derivation,
# copied into this derivation's output) back into a working one.
#
# For every output it runs one `storepatch restore --candidates-from-env`: each scrubbed
# `<store>/eeee…-NAME` whose NAME belongs to exactly one store path in the build's environment
# (its inputs) gets that path's hash back, in file contents, symlink targets and names. Names
# that match several inputs, or none, are reported and left alone (the build goes on; only an
# error such as an unwritable file fails it).
#
# When: as a fixupOutputHook. Hooks of a derivation's own inputs are sourced before stdenv's
# default ones, so this runs before patchShebangs, strip, patchELF's `--shrink-rpath` (which would
# drop the scrubbed RUNPATH entries as directories that do not exist) and no-broken-symlinks
# (scrubbed symlinks dangle), and long before the relink hook's postFixup.
#
# Relocation: a venv records where it was built (`#!/build/source/.venv/bin/python` in console
# scripts, `VIRTUAL_ENV=` in bin/activate*, the file names of code objects in byte-compiled
# `.pyc` files). The hook reads that location from `<output>/bin/activate` and relocates it to
# the output; more OLD=NEW pairs come from `storepatchRelocate`. The RECORD lines of the files
# that change get their new hash and size.
#
# Variables (all optional; space-separated strings, or bash arrays with __structuredAttrs):
#   dontStorepatchRestore     non-empty: skip the automatic run.
#   storepatchRelocate        OLD=NEW pairs, e.g. "/build/source/.venv=$out" ($out is expanded
#                             when the hook runs if the pair is single-quoted in the expression).
#   storepatchRestoreFlags    extra flags for `storepatch restore`.
#
# Functions:
#   storepatchRestore PATH...  restore now (with the same variables).
#
# @storepatch@ is replaced by makeSetupHook's substitutions with the storepatch executable.

# Append the words of variable $2 (a string or, with structured attrs, an array) to array $1.
_storepatchRestoreWords() {
    local -n _storepatchRestoreWordsInto=$1
    local _storepatchRestoreWordsFrom=$2
    if [[ "$(declare -p "$_storepatchRestoreWordsFrom" 2>/dev/null)" == "declare -a"* ]]; then
        local -n _storepatchRestoreWordsArray=$_storepatchRestoreWordsFrom
        _storepatchRestoreWordsInto+=("${_storepatchRestoreWordsArray[@]}")
    else
        local -a _storepatchRestoreWordsSplit=()
        read -r -a _storepatchRestoreWordsSplit <<<"${!_storepatchRestoreWordsFrom-}"
        _storepatchRestoreWordsInto+=("${_storepatchRestoreWordsSplit[@]}")
    fi
}

storepatchRestore() {
    local -a relocations=() extraFlags=() args=()
    _storepatchRestoreWords relocations storepatchRelocate
    _storepatchRestoreWords extraFlags storepatchRestoreFlags
    local root item old
    for root in "$@"; do
        # The venv's build location, as uv and `python -m venv` write it into bin/activate.
        if [[ -f "$root/bin/activate" && ! -L "$root/bin/activate" ]]; then
            old=$(sed -n "s/^VIRTUAL_ENV='\(.*\)'\$/\1/p" "$root/bin/activate" | head -n 1)
            if [[ -n "$old" && "$old" != "$root" ]]; then
                relocations+=("$old=$root")
            fi
        fi
    done
    for item in "${relocations[@]}"; do
        args+=(--relocate "$item")
    done
    echo "storepatchRestore: storepatch restore of $*"
    local status=0
    @storepatch@ restore --candidates-from-env "${args[@]}" "${extraFlags[@]}" -- "$@" || status=$?
    # 1: something was left (reported above); the relink and audit decide whether that matters.
    if ((status > 1)); then
        return "$status"
    fi
}

_storepatchRestoreFixupOutput() {
    [[ -z "${dontStorepatchRestore-}" ]] || return 0
    # shellcheck disable=SC2154 # prefix is set by stdenv's fixupPhase for each output
    [[ -d "$prefix" ]] || return 0
    storepatchRestore "$prefix"
}

fixupOutputHooks+=(_storepatchRestoreFixupOutput)
