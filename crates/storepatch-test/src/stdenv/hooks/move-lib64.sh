# shellcheck shell=bash
# Models pkgs/build-support/setup-hooks/move-lib64.sh: a fixupOutputHook (after audit-tmpdir,
# before patchShebangs and strip) that, unless dontMoveLib64 is 1, moves the contents of a real
# `lib64` directory of the output into `lib` and leaves `lib64 -> lib` in its place.
fixupOutputHooks+=(stdenvModelMoveLib64)

stdenvModelMoveLib64() {
    [[ "${dontMoveLib64-}" != 1 ]] || return 0
    [[ -e "$prefix/lib64" && ! -L "$prefix/lib64" ]] || return 0
    echo "moving $prefix/lib64/* to $prefix/lib"
    mkdir -p "$prefix/lib"
    local entry
    shopt -s dotglob nullglob
    for entry in "$prefix"/lib64/*; do
        mv --no-clobber "$entry" "$prefix/lib"
    done
    shopt -u dotglob nullglob
    rmdir "$prefix/lib64"
    ln -s lib "$prefix/lib64"
}
