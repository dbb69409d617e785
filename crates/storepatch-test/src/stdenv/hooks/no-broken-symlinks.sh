# shellcheck shell=bash
# Models pkgs/build-support/setup-hooks/no-broken-symlinks.sh: a postFixupHook (symlinks are often
# made in postFixup), the first of the default ones, that fails the build, unless
# dontCheckForBrokenSymlinks is set, on a symlink in any output that cannot be read, that points
# into $TMPDIR, or that points into the store and dangles or points to itself. A symlink whose
# target (made absolute) lies outside the store is not checked.
postFixupHooks+=(stdenvModelNoBrokenSymlinks)

stdenvModelNoBrokenSymlinks() {
    [[ -z "${dontCheckForBrokenSymlinks-}" ]] || return 0
    local output link target broken=0
    for output in $(getAllOutputNames); do
        [[ -e "${!output}" ]] || continue
        while IFS= read -r -d '' link; do
            if ! target=$(readlink "$link"); then
                echo "the symlink $link is unreadable" >&2
                broken=$((broken + 1))
                continue
            fi
            if [[ "$target" != /* ]]; then
                target=$(realpath --no-symlinks --canonicalize-missing "$(dirname "$link")/$target")
            fi
            if [[ "$target" == "$TMPDIR"/* ]]; then
                echo "the symlink $link points to $TMPDIR directory: $target" >&2
                broken=$((broken + 1))
            elif [[ "$target" != "$NIX_STORE"/* ]]; then
                continue
            elif [[ "$target" == "$link" ]]; then
                echo "the symlink $link is reflexive" >&2
                broken=$((broken + 1))
            elif [[ ! -e "$target" ]]; then
                echo "the symlink $link points to a missing target: $target" >&2
                broken=$((broken + 1))
            fi
        done < <(find "${!output}" -type l -print0)
    done
    if ((broken > 0)); then
        echo "found $broken broken symlinks" >&2
        exit 1
    fi
}
