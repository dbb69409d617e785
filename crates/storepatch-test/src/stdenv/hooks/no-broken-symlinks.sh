# shellcheck shell=bash
# Models pkgs/build-support/setup-hooks/no-broken-symlinks.sh: a postFixupHook (symlinks are often
# made in postFixup) that fails the build on a dangling or reflexive symlink in any output, unless
# dontCheckForBrokenSymlinks is set.
postFixupHooks+=(stdenvModelNoBrokenSymlinks)

stdenvModelNoBrokenSymlinks() {
    [[ -z "${dontCheckForBrokenSymlinks-}" ]] || return 0
    local output link target broken=0
    for output in $(getAllOutputNames); do
        [[ -e "${!output}" ]] || continue
        while IFS= read -r -d '' link; do
            target=$(readlink "$link")
            if [[ "$target" != /* ]]; then
                target=$(realpath --no-symlinks --canonicalize-missing "$(dirname "$link")/$target")
            fi
            if [[ "$target" == "$link" ]]; then
                echo "the symlink $link is reflexive $target" >&2
                broken=$((broken + 1))
            elif [[ ! -e "$target" ]]; then
                echo "the symlink $link points to a missing target $target" >&2
                broken=$((broken + 1))
            fi
        done < <(find "${!output}" -type l -print0)
    done
    if ((broken > 0)); then
        echo "found $broken broken symlinks" >&2
        exit 1
    fi
}
