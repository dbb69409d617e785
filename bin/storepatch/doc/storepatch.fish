# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_storepatch_global_optspecs
    string join \n threads= store-dir= json q/quiet no-progress no-mmap v/verbose h/help V/version
end

function __fish_storepatch_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_storepatch_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_storepatch_using_subcommand
    set -l cmd (__fish_storepatch_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c storepatch -n "__fish_storepatch_needs_command" -l threads -d 'Number of worker threads (default: one per core). Output is identical for any value' -r
complete -c storepatch -n "__fish_storepatch_needs_command" -l store-dir -d 'Nix store directory [default: `$NIX_STORE`, else `/nix/store`]' -r -F
complete -c storepatch -n "__fish_storepatch_needs_command" -l json -d 'Emit JSON Lines on stdout instead of the human report'
complete -c storepatch -n "__fish_storepatch_needs_command" -s q -l quiet -d 'Print nothing but errors (and the `--json` output when asked for)'
complete -c storepatch -n "__fish_storepatch_needs_command" -l no-progress -d 'Never show progress (a bar when stderr is a terminal; otherwise, as in a build log, a line every 5 s once a run takes that long)'
complete -c storepatch -n "__fish_storepatch_needs_command" -l no-mmap -d 'Read every file with read(2) instead of mapping large ones into memory (`scan` reads large files in pieces of 256 KiB either way, and maps only one with nowhere to cut for 4 MiB)'
complete -c storepatch -n "__fish_storepatch_needs_command" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace)'
complete -c storepatch -n "__fish_storepatch_needs_command" -s h -l help -d 'Print help'
complete -c storepatch -n "__fish_storepatch_needs_command" -s V -l version -d 'Print version'
complete -c storepatch -n "__fish_storepatch_needs_command" -f -a "scan" -d 'Find every store reference in a tree: paths, bare hash parts, symlink targets, names'
complete -c storepatch -n "__fish_storepatch_needs_command" -f -a "scrub" -d 'Rewrite every live store reference\'s hash part to 32 `e`s (same length), in place'
complete -c storepatch -n "__fish_storepatch_needs_command" -f -a "restore" -d 'Undo a scrub: give scrubbed references whose name matches exactly one supplied store path their hash back (same length), and relocate the tree\'s old location in text files and bytecode'
complete -c storepatch -n "__fish_storepatch_needs_command" -f -a "relink" -d 'Point the run path of every ELF file at the libraries it needs, like autoPatchelfHook'
complete -c storepatch -n "__fish_storepatch_needs_command" -f -a "audit" -d 'Check a tree: store references, libraries the loader would not find, missing interpreters and shebangs, dangling symlinks'
complete -c storepatch -n "__fish_storepatch_needs_command" -f -a "elf" -d 'Edit ELF files; accepts patchelf\'s command line (`storepatch elf --help`)'
complete -c storepatch -n "__fish_storepatch_needs_command" -f -a "generate" -d 'Print the man page or shell completions (for packagers)'
complete -c storepatch -n "__fish_storepatch_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c storepatch -n "__fish_storepatch_using_subcommand scan" -l candidates -d 'File with one store path per line whose bare hash parts are searched for, as Nix does' -r -F
complete -c storepatch -n "__fish_storepatch_using_subcommand scan" -l threads -d 'Number of worker threads (default: one per core). Output is identical for any value' -r
complete -c storepatch -n "__fish_storepatch_using_subcommand scan" -l store-dir -d 'Nix store directory [default: `$NIX_STORE`, else `/nix/store`]' -r -F
complete -c storepatch -n "__fish_storepatch_using_subcommand scan" -l candidates-from-env -d 'Take candidate store paths from the environment (as inside a Nix build)'
complete -c storepatch -n "__fish_storepatch_using_subcommand scan" -l files -d 'List every file with its references instead of the per-store-path summary'
complete -c storepatch -n "__fish_storepatch_using_subcommand scan" -l json -d 'Emit JSON Lines on stdout instead of the human report'
complete -c storepatch -n "__fish_storepatch_using_subcommand scan" -s q -l quiet -d 'Print nothing but errors (and the `--json` output when asked for)'
complete -c storepatch -n "__fish_storepatch_using_subcommand scan" -l no-progress -d 'Never show progress (a bar when stderr is a terminal; otherwise, as in a build log, a line every 5 s once a run takes that long)'
complete -c storepatch -n "__fish_storepatch_using_subcommand scan" -l no-mmap -d 'Read every file with read(2) instead of mapping large ones into memory (`scan` reads large files in pieces of 256 KiB either way, and maps only one with nowhere to cut for 4 MiB)'
complete -c storepatch -n "__fish_storepatch_using_subcommand scan" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace)'
complete -c storepatch -n "__fish_storepatch_using_subcommand scan" -s h -l help -d 'Print help'
complete -c storepatch -n "__fish_storepatch_using_subcommand scrub" -l candidates -d 'File with one store path per line whose bare hash parts are searched for, as Nix does' -r -F
complete -c storepatch -n "__fish_storepatch_using_subcommand scrub" -l keep -d 'Leave references to this store path alone (repeatable), e.g. `$out` in a normal derivation' -r -F
complete -c storepatch -n "__fish_storepatch_using_subcommand scrub" -l only -d 'Scrub only references to these store paths (repeatable), like `remove-references-to -t`' -r -F
complete -c storepatch -n "__fish_storepatch_using_subcommand scrub" -l threads -d 'Number of worker threads (default: one per core). Output is identical for any value' -r
complete -c storepatch -n "__fish_storepatch_using_subcommand scrub" -l store-dir -d 'Nix store directory [default: `$NIX_STORE`, else `/nix/store`]' -r -F
complete -c storepatch -n "__fish_storepatch_using_subcommand scrub" -l candidates-from-env -d 'Take candidate store paths from the environment (as inside a Nix build)'
complete -c storepatch -n "__fish_storepatch_using_subcommand scrub" -l dry-run -d 'Report what would change without writing anything'
complete -c storepatch -n "__fish_storepatch_using_subcommand scrub" -l json -d 'Emit JSON Lines on stdout instead of the human report'
complete -c storepatch -n "__fish_storepatch_using_subcommand scrub" -s q -l quiet -d 'Print nothing but errors (and the `--json` output when asked for)'
complete -c storepatch -n "__fish_storepatch_using_subcommand scrub" -l no-progress -d 'Never show progress (a bar when stderr is a terminal; otherwise, as in a build log, a line every 5 s once a run takes that long)'
complete -c storepatch -n "__fish_storepatch_using_subcommand scrub" -l no-mmap -d 'Read every file with read(2) instead of mapping large ones into memory (`scan` reads large files in pieces of 256 KiB either way, and maps only one with nowhere to cut for 4 MiB)'
complete -c storepatch -n "__fish_storepatch_using_subcommand scrub" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace)'
complete -c storepatch -n "__fish_storepatch_using_subcommand scrub" -s h -l help -d 'Print help'
complete -c storepatch -n "__fish_storepatch_using_subcommand restore" -l candidates -d 'File with one store path per line to restore references to (by name)' -r -F
complete -c storepatch -n "__fish_storepatch_using_subcommand restore" -l store-path -d 'Restore references to this store path (repeatable)' -r -F
complete -c storepatch -n "__fish_storepatch_using_subcommand restore" -l relocate -d 'Replace OLD with NEW in text files and symlink targets (repeatable; the length may change), e.g. the directory the venv was built in with its new location, and at the start of the file names that code objects in `.pyc` files record. Scrubbed references inside OLD are relocated, not restored. `RECORD` lines of the files that change get their new hash and size. Other binary files holding OLD are reported and left alone' -r
complete -c storepatch -n "__fish_storepatch_using_subcommand restore" -l threads -d 'Number of worker threads (default: one per core). Output is identical for any value' -r
complete -c storepatch -n "__fish_storepatch_using_subcommand restore" -l store-dir -d 'Nix store directory [default: `$NIX_STORE`, else `/nix/store`]' -r -F
complete -c storepatch -n "__fish_storepatch_using_subcommand restore" -l candidates-from-env -d 'Restore references to the store paths named in the environment (inside a Nix build: the build\'s inputs)'
complete -c storepatch -n "__fish_storepatch_using_subcommand restore" -l dry-run -d 'Report what would change without writing anything'
complete -c storepatch -n "__fish_storepatch_using_subcommand restore" -l json -d 'Emit JSON Lines on stdout instead of the human report'
complete -c storepatch -n "__fish_storepatch_using_subcommand restore" -s q -l quiet -d 'Print nothing but errors (and the `--json` output when asked for)'
complete -c storepatch -n "__fish_storepatch_using_subcommand restore" -l no-progress -d 'Never show progress (a bar when stderr is a terminal; otherwise, as in a build log, a line every 5 s once a run takes that long)'
complete -c storepatch -n "__fish_storepatch_using_subcommand restore" -l no-mmap -d 'Read every file with read(2) instead of mapping large ones into memory (`scan` reads large files in pieces of 256 KiB either way, and maps only one with nowhere to cut for 4 MiB)'
complete -c storepatch -n "__fish_storepatch_using_subcommand restore" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace)'
complete -c storepatch -n "__fish_storepatch_using_subcommand restore" -s h -l help -d 'Print help'
complete -c storepatch -n "__fish_storepatch_using_subcommand relink" -l paths -d 'Trees or files to relink, as auto-patchelf.py spells it (joined to PATH)' -r -F
complete -c storepatch -n "__fish_storepatch_using_subcommand relink" -l library-path -d 'Search this directory (or library file) for libraries, not recursively (repeatable; library sources are searched in command-line order)' -r -F
complete -c storepatch -n "__fish_storepatch_using_subcommand relink" -l library-tree -d 'Search this tree for libraries, recursively (repeatable; in command-line order with --library-path and --libs), as `addAutoPatchelfSearchPath` does' -r -F
complete -c storepatch -n "__fish_storepatch_using_subcommand relink" -l libs -d 'auto-patchelf.py\'s `--libs`: the same as --library-path' -r -F
complete -c storepatch -n "__fish_storepatch_using_subcommand relink" -l interpreter -d 'Dynamic linker for executables [default: `$NIX_BINTOOLS/nix-support/dynamic-linker`]' -r -F
complete -c storepatch -n "__fish_storepatch_using_subcommand relink" -l runtime-dependency -d 'Put DIR first in the run path of dynamic executables (repeatable), like `runtimeDependencies` (whose entries are `<dep>/lib` here). Libraries do not get it' -r -F
complete -c storepatch -n "__fish_storepatch_using_subcommand relink" -l runtime-dependencies -d 'auto-patchelf.py\'s `--runtime-dependencies`: the same as --runtime-dependency' -r -F
complete -c storepatch -n "__fish_storepatch_using_subcommand relink" -l append-rpath -d 'Add DIR at the end of the run path of every ELF file (repeatable), like `appendRunpaths`' -r -F
complete -c storepatch -n "__fish_storepatch_using_subcommand relink" -l append-rpaths -d 'auto-patchelf.py\'s `--append-rpaths`: the same as --append-rpath' -r -F
complete -c storepatch -n "__fish_storepatch_using_subcommand relink" -l ignore-missing -d 'Do not fail when a missing soname matches this pattern (repeatable; `*`, `?`, `[...]`)' -r
complete -c storepatch -n "__fish_storepatch_using_subcommand relink" -l patchelf-flag -d 'patchelf flag for every file patchelf would be called on, like `patchelfFlags` (repeatable): --force-rpath, --no-default-lib, --page-size N, --debug' -r
complete -c storepatch -n "__fish_storepatch_using_subcommand relink" -l threads -d 'Number of worker threads (default: one per core). Output is identical for any value' -r
complete -c storepatch -n "__fish_storepatch_using_subcommand relink" -l store-dir -d 'Nix store directory [default: `$NIX_STORE`, else `/nix/store`]' -r -F
complete -c storepatch -n "__fish_storepatch_using_subcommand relink" -l follow-run-paths -d 'Also search the run paths of indexed libraries (without `$ORIGIN` entries), as autoPatchelfHook does'
complete -c storepatch -n "__fish_storepatch_using_subcommand relink" -l ignore-existing -d 'Do not search the trees being relinked for libraries (auto-patchelf.py\'s flag)'
complete -c storepatch -n "__fish_storepatch_using_subcommand relink" -l preserve-origin -d 'Keep `$ORIGIN` run path entries that resolve a library: always done; accepted for auto-patchelf.py\'s flag'
complete -c storepatch -n "__fish_storepatch_using_subcommand relink" -l keep-libc -d 'Look libc\'s own libraries up like any other instead of leaving them to the dynamic linker'
complete -c storepatch -n "__fish_storepatch_using_subcommand relink" -l restore-only -d 'Only restore scrubbed run path entries in place (same length) and change nothing else, for a pass before strip and patchELF\'s shrink-rpath'
complete -c storepatch -n "__fish_storepatch_using_subcommand relink" -l no-recurse -d 'Only relink files directly in the given directories'
complete -c storepatch -n "__fish_storepatch_using_subcommand relink" -l dry-run -d 'Report what would change without writing anything'
complete -c storepatch -n "__fish_storepatch_using_subcommand relink" -l json -d 'Emit JSON Lines on stdout instead of the human report'
complete -c storepatch -n "__fish_storepatch_using_subcommand relink" -s q -l quiet -d 'Print nothing but errors (and the `--json` output when asked for)'
complete -c storepatch -n "__fish_storepatch_using_subcommand relink" -l no-progress -d 'Never show progress (a bar when stderr is a terminal; otherwise, as in a build log, a line every 5 s once a run takes that long)'
complete -c storepatch -n "__fish_storepatch_using_subcommand relink" -l no-mmap -d 'Read every file with read(2) instead of mapping large ones into memory (`scan` reads large files in pieces of 256 KiB either way, and maps only one with nowhere to cut for 4 MiB)'
complete -c storepatch -n "__fish_storepatch_using_subcommand relink" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace)'
complete -c storepatch -n "__fish_storepatch_using_subcommand relink" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c storepatch -n "__fish_storepatch_using_subcommand audit" -l library-path -d 'Also look for libraries in this directory, before the default ones (repeatable)' -r -F
complete -c storepatch -n "__fish_storepatch_using_subcommand audit" -l threads -d 'Number of worker threads (default: one per core). Output is identical for any value' -r
complete -c storepatch -n "__fish_storepatch_using_subcommand audit" -l store-dir -d 'Nix store directory [default: `$NIX_STORE`, else `/nix/store`]' -r -F
complete -c storepatch -n "__fish_storepatch_using_subcommand audit" -l json -d 'Emit JSON Lines on stdout instead of the human report'
complete -c storepatch -n "__fish_storepatch_using_subcommand audit" -s q -l quiet -d 'Print nothing but errors (and the `--json` output when asked for)'
complete -c storepatch -n "__fish_storepatch_using_subcommand audit" -l no-progress -d 'Never show progress (a bar when stderr is a terminal; otherwise, as in a build log, a line every 5 s once a run takes that long)'
complete -c storepatch -n "__fish_storepatch_using_subcommand audit" -l no-mmap -d 'Read every file with read(2) instead of mapping large ones into memory (`scan` reads large files in pieces of 256 KiB either way, and maps only one with nowhere to cut for 4 MiB)'
complete -c storepatch -n "__fish_storepatch_using_subcommand audit" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace)'
complete -c storepatch -n "__fish_storepatch_using_subcommand audit" -s h -l help -d 'Print help'
complete -c storepatch -n "__fish_storepatch_using_subcommand elf" -l threads -d 'Number of worker threads (default: one per core). Output is identical for any value' -r
complete -c storepatch -n "__fish_storepatch_using_subcommand elf" -l store-dir -d 'Nix store directory [default: `$NIX_STORE`, else `/nix/store`]' -r -F
complete -c storepatch -n "__fish_storepatch_using_subcommand elf" -l json -d 'Emit JSON Lines on stdout instead of the human report'
complete -c storepatch -n "__fish_storepatch_using_subcommand elf" -s q -l quiet -d 'Print nothing but errors (and the `--json` output when asked for)'
complete -c storepatch -n "__fish_storepatch_using_subcommand elf" -l no-progress -d 'Never show progress (a bar when stderr is a terminal; otherwise, as in a build log, a line every 5 s once a run takes that long)'
complete -c storepatch -n "__fish_storepatch_using_subcommand elf" -l no-mmap -d 'Read every file with read(2) instead of mapping large ones into memory (`scan` reads large files in pieces of 256 KiB either way, and maps only one with nowhere to cut for 4 MiB)'
complete -c storepatch -n "__fish_storepatch_using_subcommand elf" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace)'
complete -c storepatch -n "__fish_storepatch_using_subcommand generate" -l out-dir -d 'With `man`: write `storepatch.1` and one page per subcommand into this directory' -r -F
complete -c storepatch -n "__fish_storepatch_using_subcommand generate" -l threads -d 'Number of worker threads (default: one per core). Output is identical for any value' -r
complete -c storepatch -n "__fish_storepatch_using_subcommand generate" -l store-dir -d 'Nix store directory [default: `$NIX_STORE`, else `/nix/store`]' -r -F
complete -c storepatch -n "__fish_storepatch_using_subcommand generate" -l json -d 'Emit JSON Lines on stdout instead of the human report'
complete -c storepatch -n "__fish_storepatch_using_subcommand generate" -s q -l quiet -d 'Print nothing but errors (and the `--json` output when asked for)'
complete -c storepatch -n "__fish_storepatch_using_subcommand generate" -l no-progress -d 'Never show progress (a bar when stderr is a terminal; otherwise, as in a build log, a line every 5 s once a run takes that long)'
complete -c storepatch -n "__fish_storepatch_using_subcommand generate" -l no-mmap -d 'Read every file with read(2) instead of mapping large ones into memory (`scan` reads large files in pieces of 256 KiB either way, and maps only one with nowhere to cut for 4 MiB)'
complete -c storepatch -n "__fish_storepatch_using_subcommand generate" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace)'
complete -c storepatch -n "__fish_storepatch_using_subcommand generate" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c storepatch -n "__fish_storepatch_using_subcommand help; and not __fish_seen_subcommand_from scan scrub restore relink audit elf generate help" -f -a "scan" -d 'Find every store reference in a tree: paths, bare hash parts, symlink targets, names'
complete -c storepatch -n "__fish_storepatch_using_subcommand help; and not __fish_seen_subcommand_from scan scrub restore relink audit elf generate help" -f -a "scrub" -d 'Rewrite every live store reference\'s hash part to 32 `e`s (same length), in place'
complete -c storepatch -n "__fish_storepatch_using_subcommand help; and not __fish_seen_subcommand_from scan scrub restore relink audit elf generate help" -f -a "restore" -d 'Undo a scrub: give scrubbed references whose name matches exactly one supplied store path their hash back (same length), and relocate the tree\'s old location in text files and bytecode'
complete -c storepatch -n "__fish_storepatch_using_subcommand help; and not __fish_seen_subcommand_from scan scrub restore relink audit elf generate help" -f -a "relink" -d 'Point the run path of every ELF file at the libraries it needs, like autoPatchelfHook'
complete -c storepatch -n "__fish_storepatch_using_subcommand help; and not __fish_seen_subcommand_from scan scrub restore relink audit elf generate help" -f -a "audit" -d 'Check a tree: store references, libraries the loader would not find, missing interpreters and shebangs, dangling symlinks'
complete -c storepatch -n "__fish_storepatch_using_subcommand help; and not __fish_seen_subcommand_from scan scrub restore relink audit elf generate help" -f -a "elf" -d 'Edit ELF files; accepts patchelf\'s command line (`storepatch elf --help`)'
complete -c storepatch -n "__fish_storepatch_using_subcommand help; and not __fish_seen_subcommand_from scan scrub restore relink audit elf generate help" -f -a "generate" -d 'Print the man page or shell completions (for packagers)'
complete -c storepatch -n "__fish_storepatch_using_subcommand help; and not __fish_seen_subcommand_from scan scrub restore relink audit elf generate help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
