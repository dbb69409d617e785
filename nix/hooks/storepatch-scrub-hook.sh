# shellcheck shell=bash
# storepatch scrub hook: make the outputs of a fixed-output derivation free of store references.
#
# A fixed-output derivation (for example a `uv sync` that downloads wheels) must not refer to any
# store path, yet tools write the interpreter's path into shebangs, pyvenv.cfg and RECORD files.
# This hook runs `storepatch scrub` on every output after everything else has run, which rewrites
# the 32-character hash part of each store reference to `eeee...` in place (same length, so
# binary offsets stay valid; `storepatch relink` can restore library paths later).
#
# Variables (all optional):
#   dontScrubStoreRefs   non-empty: do nothing.
#   scrubKeepRefs        store paths to leave alone (space separated, or a bash array with
#                        __structuredAttrs); each becomes `--keep PATH`.
#   scrubFlags           extra flags for `storepatch scrub`, e.g. "--threads 2" or
#                        "--candidates FILE" (space separated, or a bash array).
#
# Besides full `/nix/store/<hash>-<name>` paths, `storepatch scrub` is given
# `--candidates-from-env`: the bare hash part of every store path in the build's environment (the
# inputs, $out) is searched for too, as Nix's own reference scanner does. With __structuredAttrs
# the attributes live in .attrs.sh instead of the environment; the store paths named there are
# passed with `--candidates FILE` (a temporary file in $TMPDIR).
#
# When it runs: last. The hook appends `storepatchScrubPhase` to `postPhases`, which genericBuild
# runs after every other phase: after fixupPhase (patchShebangs, strip, patchELF and every other
# fixupOutputHook, `postFixup` and every postFixupHook, including no-broken-symlinks, which so
# still checks the unscrubbed tree, whose symlinks resolve), after installCheckPhase and distPhase.
# Only a phase appended to postPhases after this hook was sourced, or a derivation that sets
# `phases` itself (then list storepatchScrubPhase last in it), escapes it. It runs with
# `dontFixup` as well.
#
# stdenv's own fixups are off by default in a derivation using this hook: `dontPatchELF`,
# `dontStrip` and `dontPatchShebangs` are set to 1 unless the derivation sets them (to false, i.e.
# the empty string, to keep them). Their results would make the fixed output's hash depend on the
# patchelf, binutils and interpreter versions of the nixpkgs used, not on the downloaded content;
# patchELF's shrink-rpath would also be the only thing deciding which run path entries survive for
# `storepatch relink` to restore, and patchShebangs only writes store paths that get scrubbed.

# @storepatch@ is replaced by makeSetupHook's substitutions with the storepatch executable.

# Append the words of variable $2 to array $1 as nixpkgs' concatTo does: a bash array (structured
# attrs) element by element, a string split on all whitespace (spaces, tabs, newlines), no globbing.
_storepatchScrubWords() {
    local -
    set -o noglob
    local -n _storepatchScrubWordsInto=$1
    local _storepatchScrubWordsFrom=$2
    if [[ "$(declare -p "$_storepatchScrubWordsFrom" 2>/dev/null)" == "declare -a"* ]]; then
        local -n _storepatchScrubWordsArray=$_storepatchScrubWordsFrom
        _storepatchScrubWordsInto+=("${_storepatchScrubWordsArray[@]}")
    else
        local IFS=$' \t\n'
        # shellcheck disable=SC2206 # splitting is the point
        _storepatchScrubWordsInto+=(${!_storepatchScrubWordsFrom-})
    fi
}

# storepatchScrub DIR...: scrub the given directories now, honouring the variables above.
storepatchScrub() {
    if [[ -n "${dontScrubStoreRefs-}" ]]; then
        echo "storepatch-scrub-hook: dontScrubStoreRefs is set, leaving $* alone"
        return 0
    fi
    # Like Nix, look for the bare hash part of every store path the build was given (they are all
    # in its environment), not only for full paths.
    local -a flags=(--candidates-from-env) keep=()
    # With __structuredAttrs the attributes are not in the environment but in .attrs.sh: give
    # the store paths named there as candidates too.
    local attrs candidates="${TMPDIR:-/tmp}/storepatch-scrub-candidates"
    for attrs in "${NIX_ATTRS_SH_FILE-}" "${NIX_BUILD_TOP-}/.attrs.sh"; do
        if [[ -f "$attrs" ]]; then
            grep -oE "${NIX_STORE:-/nix/store}/[0-9a-df-np-sv-z]{32}-[-+._?=0-9a-zA-Z]*" "$attrs" |
                sort -u >"$candidates" || true
            flags+=(--candidates "$candidates")
            break
        fi
    done
    _storepatchScrubWords flags scrubFlags
    _storepatchScrubWords keep scrubKeepRefs
    local ref
    for ref in "${keep[@]}"; do
        flags+=(--keep "$ref")
    done

    local dir report status=0
    for dir in "$@"; do
        [[ -e "$dir" ]] || continue
        # stdout carries JSON Lines, the last of them a "summary" object with the counts;
        # stderr (warnings, errors) goes to the build log as it is.
        report="${TMPDIR:-/tmp}/storepatch-scrub-report.jsonl"
        @storepatch@ scrub --json "${flags[@]}" -- "$dir" >"$report" || status=$?
        if ((status != 0)); then
            echo "storepatch-scrub-hook: storepatch scrub $dir failed (exit $status)" >&2
            return "$status"
        fi
        echo "storepatch-scrub-hook: $dir: $(_storepatchScrubSummary "$report")${flags[*]:+ (flags: ${flags[*]})}"
        rm -f "$report"
    done
    rm -f "$candidates"
}

# The value of number field $1 in the JSON object $2, or "?".
_storepatchScrubCount() {
    local count
    count=$(sed -n -E "s/.*\"$1\" *: *([0-9]+).*/\1/p" <<<"$2")
    echo "${count:-?}"
}

# The counts of the "summary" line of a `storepatch scrub --json` report, as one phrase.
_storepatchScrubSummary() {
    local summary
    summary=$(grep -E '"type" *: *"summary"' "$1" | tail -n 1 || true)
    if [[ -z "$summary" ]]; then
        echo "scrubbed (no summary in the report)"
        return 0
    fi
    echo "scrubbed $(_storepatchScrubCount references "$summary") reference(s) to" \
        "$(_storepatchScrubCount store_paths "$summary") store path(s):" \
        "$(_storepatchScrubCount files "$summary") file(s)," \
        "$(_storepatchScrubCount symlinks "$summary") symlink(s)," \
        "$(_storepatchScrubCount names "$summary") name(s) changed"
}

storepatchScrubPhase() {
    local output
    local -a dirs=()
    for output in $(getAllOutputNames); do dirs+=("${!output}"); done
    storepatchScrub "${dirs[@]}"
}

for _storepatchScrubSwitch in dontPatchELF dontStrip dontPatchShebangs; do
    if [[ -z "${!_storepatchScrubSwitch+set}" ]]; then
        declare "$_storepatchScrubSwitch=1"
    fi
done
unset _storepatchScrubSwitch

postPhases+=(storepatchScrubPhase)
