# shellcheck shell=bash
# Models pkgs/build-support/setup-hooks/strip.sh: a fixupOutputHook (unless dontStrip) that runs
# `$STRIP -S -p` on every ELF file in stripDebugList (default: lib lib32 lib64 libexec bin sbin)
# of the output. STRIP comes from the bintools' setup hook, so under stdenvNoCC (no bintools)
# nothing is stripped.
fixupOutputHooks+=(stdenvModelStrip)

stdenvModelStrip() {
    [[ -z "${dontStrip-}" && -n "${STRIP-}" ]] || return 0
    local dir file
    for dir in ${stripDebugList-lib lib32 lib64 libexec bin sbin}; do
        [[ -d "$prefix/$dir" ]] || continue
        while IFS= read -r -d '' file; do
            if isELF "$file"; then
                "$STRIP" -S -p "$file"
            fi
        done < <(find "$prefix/$dir" -type f -print0)
    done
}
