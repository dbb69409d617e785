# shellcheck shell=bash
# Models pkgs/build-support/setup-hooks/make-symlinks-relative.sh: a postFixupHook (after
# no-broken-symlinks) that, unless dontRewriteSymlinks is set, turns every symlink of an output
# whose target lies in that same output into a relative one, which removes the output's
# reference to itself.
postFixupHooks+=(stdenvModelMakeSymlinksRelative)

stdenvModelMakeSymlinksRelative() {
    [[ -z "${dontRewriteSymlinks-}" ]] || return 0
    local output prefix link target
    for output in $(getAllOutputNames); do
        prefix="${!output}"
        [[ -e "$prefix" ]] || continue
        while IFS= read -r -d '' link; do
            target=$(readlink "$link")
            [[ "$target"/ == "$prefix"/* ]] || continue
            echo "rewriting symlink $link to be relative to $prefix"
            ln -snrf "$target" "$link"
        done < <(find "$prefix" -type l -print0)
    done
}
