# Shared by the shell pipelines in this directory; sourced, not run.
# The C locale, as inside a Nix build: grep and sed see bytes, not characters.
export LC_ALL=C

# reference_pattern STORE_DIR: the old discovery pattern `<storedir>/[a-z0-9]{32}-[^/]*` as a POSIX
# ERE, with the store dir's special characters escaped (as storepatch-test's pipeline.rs does).
reference_pattern() {
    local escaped
    escaped=$(printf '%s' "${1%/}" | sed -e 's/[].()*+?{}|^$\\[]/\\&/g')
    printf '%s/[a-z0-9]{32}-[^/]*' "$escaped"
}

# hash_parts STORE_DIR: reads discovered references on stdin, prints their distinct hash parts,
# exactly as remove-references-to extracts them from `-t REF`.
hash_parts() {
    local store=${1%/}
    sed -n "s|^$store/\([a-z0-9]\{32\}\)-.*|\1|p" | sort -u
}

SCRUBBED=eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee
