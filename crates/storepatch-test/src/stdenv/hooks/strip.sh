# shellcheck shell=bash
# Models pkgs/build-support/setup-hooks/strip.sh: a fixupOutputHook (the last of the default
# ones), unless dontStrip, that runs `$STRIP -S -p` once per inode (of hard-linked names only the
# first that find lists is given, as the real hook keeps one name per device and inode) on every
# file below stripDebugList (default: lib lib32 lib64 libexec bin sbin) of the output, except
# lib/debug and stripExclude patterns. The real hook runs strip on every such file and ignores
# its failures on files that are not ELF; the model only gives it ELF files. STRIP comes from the
# bintools' setup hook, so under stdenvNoCC (no bintools) nothing is stripped.
fixupOutputHooks+=(stdenvModelStrip)

stdenvModelStrip() {
    [[ -z "${dontStrip-}" && -n "${STRIP-}" ]] || return 0
    local dir file pattern
    local -a paths=() exclude=()
    for dir in ${stripDebugList[*]:-lib lib32 lib64 libexec bin sbin}; do
        if [[ -e "$prefix/$dir" ]]; then paths+=("$prefix/$dir"); fi
    done
    ((${#paths[@]} > 0)) || return 0
    for pattern in ${stripExclude[*]-}; do
        exclude+=(-a '!' '(' -name "$pattern" -o -wholename "$prefix/$pattern" ')')
    done
    while IFS= read -r -d '' file; do
        if isELF "$file"; then
            echo "stripping $file"
            "$STRIP" -S -p "$file"
        fi
    done < <(find "${paths[@]}" -type f "${exclude[@]}" -a '!' -path "$prefix/lib/debug/*" \
        -printf '%D-%i,%p\0' | sort -t, -k1,1 -u -z | cut -d, -f2- -z)
}
