# shellcheck shell=bash
# Models pkgs/build-support/setup-hooks/audit-tmpdir.sh: a fixupOutputHook (right after patchELF,
# before strip), unless noAuditTmpdir is set, that fails the build when the run path of an ELF
# file of the output (`.build-id` excluded), as the real patchelf prints it, names a directory
# in $TMPDIR, or a wrapper script (one with a `.NAME-wrapped` beside it) mentions $TMPDIR.
fixupOutputHooks+=('if [[ -z "${noAuditTmpdir-}" && -e "$prefix" ]]; then stdenvModelAuditTmpdir "$prefix"; fi')

stdenvModelAuditTmpdir() {
    local file
    echo "checking for references to $TMPDIR/ in $1..."
    while IFS= read -r -d '' file; do
        if isELF "$file"; then
            if { printf :; patchelf --print-rpath "$file"; } | grep -q -F ":$TMPDIR/"; then
                echo "RPATH of binary $file contains a forbidden reference to $TMPDIR/" >&2
                exit 1
            fi
        elif [[ -e "$(dirname "$file")/.$(basename "$file")-wrapped" ]] && grep -q -F "$TMPDIR/" "$file"; then
            echo "wrapper script $file contains a forbidden reference to $TMPDIR/" >&2
            exit 1
        fi
    done < <(find "$1" -type f -not -path '*/.build-id/*' -print0)
}
