# shellcheck shell=bash
# Models pkgs/build-support/setup-hooks/patch-shebangs.sh: a fixupOutputHook (unless
# dontPatchShebangs) that rewrites the interpreter of every executable script in the output to
# the program of that name found on HOST_PATH (`#!/usr/bin/env python3` and `#!/usr/bin/python3`
# both become `#!<store>/...-python/bin/python3`); interpreters already in the store stay.
fixupOutputHooks+=(stdenvModelPatchShebangsAuto)

stdenvModelPatchShebangsAuto() {
    [[ -z "${dontPatchShebangs-}" && -e "$prefix" ]] || return 0
    patchShebangs "$prefix"
}

patchShebangs() {
    local file line interpreter args program found
    while IFS= read -r -d '' file; do
        IFS= read -r line <"$file" || true
        [[ "$line" == '#!'* ]] || continue
        read -r interpreter args <<<"${line#'#!'}"
        if [[ "$interpreter" == "$NIX_STORE"/* ]]; then
            continue
        fi
        if [[ "$(basename "$interpreter")" == env ]]; then
            read -r program args <<<"$args"
        else
            program=$(basename "$interpreter")
        fi
        found=$(PATH="$HOST_PATH" command -v "$program" || true)
        if [[ -z "$found" ]]; then
            echo "$file: interpreter directive changed from \"$line\" to nothing: $program not found" >&2
            continue
        fi
        echo "$file: interpreter directive changed from \"$line\" to \"#!$found${args:+ $args}\""
        sed -i "1s|.*|#!$found${args:+ $args}|" "$file"
    done < <(find "$@" -type f -perm -0100 -print0)
}
