# shellcheck shell=bash
# Models pkgs/development/tools/misc/patchelf/setup-hook.sh (patchelf is one of the stdenv's
# extraNativeBuildInputs, the first of its defaults): a fixupOutputHook, unless dontPatchELF,
# running the real `patchelf --shrink-rpath` on every ELF file of the output (`.build-id`
# excluded), which drops run path entries holding no needed library.
fixupOutputHooks+=('if [ -z "${dontPatchELF-}" ]; then patchELF "$prefix"; fi')

patchELF() {
    local dir="$1" file
    [[ -e "$dir" ]] || return 0
    echo "shrinking RPATHs of ELF executables and libraries in $dir"
    while IFS= read -r -d '' file; do
        if [[ "$file" =~ .build-id ]]; then continue; fi
        if ! isELF "$file"; then continue; fi
        echo "shrinking $file"
        patchelf --shrink-rpath "$file" || true
    done < <(find "$dir" -type f -print0)
}
