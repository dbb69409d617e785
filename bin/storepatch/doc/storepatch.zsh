#compdef storepatch

autoload -U is-at-least

_storepatch() {
    typeset -A opt_args
    typeset -a _arguments_options
    local ret=1

    if is-at-least 5.2; then
        _arguments_options=(-s -S -C)
    else
        _arguments_options=(-s -C)
    fi

    local context curcontext="$curcontext" state line
    _arguments "${_arguments_options[@]}" : \
'--threads=[Number of worker threads (default\: one per core). Output is identical for any value]:N:_default' \
'--store-dir=[Nix store directory \[default\: \`\$NIX_STORE\`, else \`/nix/store\`\]]:DIR:_files' \
'--json[Emit JSON Lines on stdout instead of the human report]' \
'-q[Print nothing but errors (and the \`--json\` output when asked for)]' \
'--quiet[Print nothing but errors (and the \`--json\` output when asked for)]' \
'--no-progress[Never show progress (a bar when stderr is a terminal; otherwise, as in a build log, a line every 5 s once a run takes that long)]' \
'--no-mmap[Read every file with read(2) instead of mapping large ones into memory (\`scan\` reads large files in pieces of 256 KiB either way, and maps only one with nowhere to cut for 4 MiB)]' \
'*-v[More log output on stderr (-v debug, -vv trace)]' \
'*--verbose[More log output on stderr (-v debug, -vv trace)]' \
'-h[Print help]' \
'--help[Print help]' \
'-V[Print version]' \
'--version[Print version]' \
":: :_storepatch_commands" \
"*::: :->storepatch" \
&& ret=0
    case $state in
    (storepatch)
        words=($line[1] "${words[@]}")
        (( CURRENT += 1 ))
        curcontext="${curcontext%:*:*}:storepatch-command-$line[1]:"
        case $line[1] in
            (scan)
_arguments "${_arguments_options[@]}" : \
'*--candidates=[File with one store path per line whose bare hash parts are searched for, as Nix does]:FILE:_files' \
'--threads=[Number of worker threads (default\: one per core). Output is identical for any value]:N:_default' \
'--store-dir=[Nix store directory \[default\: \`\$NIX_STORE\`, else \`/nix/store\`\]]:DIR:_files' \
'--candidates-from-env[Take candidate store paths from the environment (as inside a Nix build)]' \
'--files[List every file with its references instead of the per-store-path summary]' \
'--json[Emit JSON Lines on stdout instead of the human report]' \
'-q[Print nothing but errors (and the \`--json\` output when asked for)]' \
'--quiet[Print nothing but errors (and the \`--json\` output when asked for)]' \
'--no-progress[Never show progress (a bar when stderr is a terminal; otherwise, as in a build log, a line every 5 s once a run takes that long)]' \
'--no-mmap[Read every file with read(2) instead of mapping large ones into memory (\`scan\` reads large files in pieces of 256 KiB either way, and maps only one with nowhere to cut for 4 MiB)]' \
'*-v[More log output on stderr (-v debug, -vv trace)]' \
'*--verbose[More log output on stderr (-v debug, -vv trace)]' \
'-h[Print help]' \
'--help[Print help]' \
'*::paths -- Trees or files to scan:_files' \
&& ret=0
;;
(scrub)
_arguments "${_arguments_options[@]}" : \
'*--candidates=[File with one store path per line whose bare hash parts are searched for, as Nix does]:FILE:_files' \
'*--keep=[Leave references to this store path alone (repeatable), e.g. \`\$out\` in a normal derivation]:STORE_PATH:_files' \
'*--only=[Scrub only references to these store paths (repeatable), like \`remove-references-to -t\`]:STORE_PATH:_files' \
'--threads=[Number of worker threads (default\: one per core). Output is identical for any value]:N:_default' \
'--store-dir=[Nix store directory \[default\: \`\$NIX_STORE\`, else \`/nix/store\`\]]:DIR:_files' \
'--candidates-from-env[Take candidate store paths from the environment (as inside a Nix build)]' \
'--dry-run[Report what would change without writing anything]' \
'--json[Emit JSON Lines on stdout instead of the human report]' \
'-q[Print nothing but errors (and the \`--json\` output when asked for)]' \
'--quiet[Print nothing but errors (and the \`--json\` output when asked for)]' \
'--no-progress[Never show progress (a bar when stderr is a terminal; otherwise, as in a build log, a line every 5 s once a run takes that long)]' \
'--no-mmap[Read every file with read(2) instead of mapping large ones into memory (\`scan\` reads large files in pieces of 256 KiB either way, and maps only one with nowhere to cut for 4 MiB)]' \
'*-v[More log output on stderr (-v debug, -vv trace)]' \
'*--verbose[More log output on stderr (-v debug, -vv trace)]' \
'-h[Print help]' \
'--help[Print help]' \
'*::paths -- Directories to scrub in place:_files' \
&& ret=0
;;
(restore)
_arguments "${_arguments_options[@]}" : \
'*--candidates=[File with one store path per line to restore references to (by name)]:FILE:_files' \
'*--store-path=[Restore references to this store path (repeatable)]:STORE_PATH:_files' \
'*--relocate=[Replace OLD with NEW in text files and symlink targets (repeatable; the length may change), e.g. the directory the venv was built in with its new location, and at the start of the file names that code objects in \`.pyc\` files record. Scrubbed references inside OLD are relocated, not restored. \`RECORD\` lines of the files that change get their new hash and size. Other binary files holding OLD are reported and left alone]:OLD=NEW:_default' \
'--threads=[Number of worker threads (default\: one per core). Output is identical for any value]:N:_default' \
'--store-dir=[Nix store directory \[default\: \`\$NIX_STORE\`, else \`/nix/store\`\]]:DIR:_files' \
'--candidates-from-env[Restore references to the store paths named in the environment (inside a Nix build\: the build'\''s inputs)]' \
'--dry-run[Report what would change without writing anything]' \
'--json[Emit JSON Lines on stdout instead of the human report]' \
'-q[Print nothing but errors (and the \`--json\` output when asked for)]' \
'--quiet[Print nothing but errors (and the \`--json\` output when asked for)]' \
'--no-progress[Never show progress (a bar when stderr is a terminal; otherwise, as in a build log, a line every 5 s once a run takes that long)]' \
'--no-mmap[Read every file with read(2) instead of mapping large ones into memory (\`scan\` reads large files in pieces of 256 KiB either way, and maps only one with nowhere to cut for 4 MiB)]' \
'*-v[More log output on stderr (-v debug, -vv trace)]' \
'*--verbose[More log output on stderr (-v debug, -vv trace)]' \
'-h[Print help]' \
'--help[Print help]' \
'*::paths -- Directories to restore in place:_files' \
&& ret=0
;;
(relink)
_arguments "${_arguments_options[@]}" : \
'*--paths=[Trees or files to relink, as auto-patchelf.py spells it (joined to PATH)]:PATH:_files' \
'*--library-path=[Search this directory (or library file) for libraries, not recursively (repeatable; library sources are searched in command-line order)]:DIR:_files' \
'*--library-tree=[Search this tree for libraries, recursively (repeatable; in command-line order with --library-path and --libs), as \`addAutoPatchelfSearchPath\` does]:DIR:_files' \
'*--libs=[auto-patchelf.py'\''s \`--libs\`\: the same as --library-path]:DIR:_files' \
'--interpreter=[Dynamic linker for executables \[default\: \`\$NIX_BINTOOLS/nix-support/dynamic-linker\`\]]:FILE:_files' \
'*--runtime-dependency=[Put DIR first in the run path of dynamic executables (repeatable), like \`runtimeDependencies\` (whose entries are \`<dep>/lib\` here). Libraries do not get it]:DIR:_files' \
'*--runtime-dependencies=[auto-patchelf.py'\''s \`--runtime-dependencies\`\: the same as --runtime-dependency]:DIR:_files' \
'*--append-rpath=[Add DIR at the end of the run path of every ELF file (repeatable), like \`appendRunpaths\`]:DIR:_files' \
'*--append-rpaths=[auto-patchelf.py'\''s \`--append-rpaths\`\: the same as --append-rpath]:DIR:_files' \
'*--ignore-missing=[Do not fail when a missing soname matches this pattern (repeatable; \`*\`, \`?\`, \`\[...\]\`)]:PATTERN:_default' \
'*--patchelf-flag=[patchelf flag for every file patchelf would be called on, like \`patchelfFlags\` (repeatable)\: --force-rpath, --no-default-lib, --page-size N, --debug]:FLAG:_default' \
'--threads=[Number of worker threads (default\: one per core). Output is identical for any value]:N:_default' \
'--store-dir=[Nix store directory \[default\: \`\$NIX_STORE\`, else \`/nix/store\`\]]:DIR:_files' \
'--follow-run-paths[Also search the run paths of indexed libraries (without \`\$ORIGIN\` entries), as autoPatchelfHook does]' \
'--ignore-existing[Do not search the trees being relinked for libraries (auto-patchelf.py'\''s flag)]' \
'--preserve-origin[Keep \`\$ORIGIN\` run path entries that resolve a library\: always done; accepted for auto-patchelf.py'\''s flag]' \
'--keep-libc[Look libc'\''s own libraries up like any other instead of leaving them to the dynamic linker]' \
'--restore-only[Only restore scrubbed run path entries in place (same length) and change nothing else, for a pass before strip and patchELF'\''s shrink-rpath]' \
'--no-recurse[Only relink files directly in the given directories]' \
'--dry-run[Report what would change without writing anything]' \
'--json[Emit JSON Lines on stdout instead of the human report]' \
'-q[Print nothing but errors (and the \`--json\` output when asked for)]' \
'--quiet[Print nothing but errors (and the \`--json\` output when asked for)]' \
'--no-progress[Never show progress (a bar when stderr is a terminal; otherwise, as in a build log, a line every 5 s once a run takes that long)]' \
'--no-mmap[Read every file with read(2) instead of mapping large ones into memory (\`scan\` reads large files in pieces of 256 KiB either way, and maps only one with nowhere to cut for 4 MiB)]' \
'*-v[More log output on stderr (-v debug, -vv trace)]' \
'*--verbose[More log output on stderr (-v debug, -vv trace)]' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
'*::paths -- Trees or files to relink; their own libraries are searched first:_files' \
&& ret=0
;;
(audit)
_arguments "${_arguments_options[@]}" : \
'*--library-path=[Also look for libraries in this directory, before the default ones (repeatable)]:DIR:_files' \
'--threads=[Number of worker threads (default\: one per core). Output is identical for any value]:N:_default' \
'--store-dir=[Nix store directory \[default\: \`\$NIX_STORE\`, else \`/nix/store\`\]]:DIR:_files' \
'--json[Emit JSON Lines on stdout instead of the human report]' \
'-q[Print nothing but errors (and the \`--json\` output when asked for)]' \
'--quiet[Print nothing but errors (and the \`--json\` output when asked for)]' \
'--no-progress[Never show progress (a bar when stderr is a terminal; otherwise, as in a build log, a line every 5 s once a run takes that long)]' \
'--no-mmap[Read every file with read(2) instead of mapping large ones into memory (\`scan\` reads large files in pieces of 256 KiB either way, and maps only one with nowhere to cut for 4 MiB)]' \
'*-v[More log output on stderr (-v debug, -vv trace)]' \
'*--verbose[More log output on stderr (-v debug, -vv trace)]' \
'-h[Print help]' \
'--help[Print help]' \
'*::paths -- Trees or files to check:_files' \
&& ret=0
;;
(elf)
_arguments "${_arguments_options[@]}" : \
'--threads=[Number of worker threads (default\: one per core). Output is identical for any value]:N:_default' \
'--store-dir=[Nix store directory \[default\: \`\$NIX_STORE\`, else \`/nix/store\`\]]:DIR:_files' \
'--json[Emit JSON Lines on stdout instead of the human report]' \
'-q[Print nothing but errors (and the \`--json\` output when asked for)]' \
'--quiet[Print nothing but errors (and the \`--json\` output when asked for)]' \
'--no-progress[Never show progress (a bar when stderr is a terminal; otherwise, as in a build log, a line every 5 s once a run takes that long)]' \
'--no-mmap[Read every file with read(2) instead of mapping large ones into memory (\`scan\` reads large files in pieces of 256 KiB either way, and maps only one with nowhere to cut for 4 MiB)]' \
'*-v[More log output on stderr (-v debug, -vv trace)]' \
'*--verbose[More log output on stderr (-v debug, -vv trace)]' \
'*::args -- patchelf-style options and files:_default' \
&& ret=0
;;
(generate)
_arguments "${_arguments_options[@]}" : \
'--out-dir=[With \`man\`\: write \`storepatch.1\` and one page per subcommand into this directory]:DIR:_files' \
'--threads=[Number of worker threads (default\: one per core). Output is identical for any value]:N:_default' \
'--store-dir=[Nix store directory \[default\: \`\$NIX_STORE\`, else \`/nix/store\`\]]:DIR:_files' \
'--json[Emit JSON Lines on stdout instead of the human report]' \
'-q[Print nothing but errors (and the \`--json\` output when asked for)]' \
'--quiet[Print nothing but errors (and the \`--json\` output when asked for)]' \
'--no-progress[Never show progress (a bar when stderr is a terminal; otherwise, as in a build log, a line every 5 s once a run takes that long)]' \
'--no-mmap[Read every file with read(2) instead of mapping large ones into memory (\`scan\` reads large files in pieces of 256 KiB either way, and maps only one with nowhere to cut for 4 MiB)]' \
'*-v[More log output on stderr (-v debug, -vv trace)]' \
'*--verbose[More log output on stderr (-v debug, -vv trace)]' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
':what -- What to print:((man\:"The man page (roff)"
complete-bash\:"Completions for bash"
complete-zsh\:"Completions for zsh"
complete-fish\:"Completions for fish"))' \
&& ret=0
;;
(help)
_arguments "${_arguments_options[@]}" : \
":: :_storepatch__subcmd__help_commands" \
"*::: :->help" \
&& ret=0

    case $state in
    (help)
        words=($line[1] "${words[@]}")
        (( CURRENT += 1 ))
        curcontext="${curcontext%:*:*}:storepatch-help-command-$line[1]:"
        case $line[1] in
            (scan)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(scrub)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(restore)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(relink)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(audit)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(elf)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(generate)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(help)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
        esac
    ;;
esac
;;
        esac
    ;;
esac
}

(( $+functions[_storepatch_commands] )) ||
_storepatch_commands() {
    local commands; commands=(
'scan:Find every store reference in a tree\: paths, bare hash parts, symlink targets, names' \
'scrub:Rewrite every live store reference'\''s hash part to 32 \`e\`s (same length), in place' \
'restore:Undo a scrub\: give scrubbed references whose name matches exactly one supplied store path their hash back (same length), and relocate the tree'\''s old location in text files and bytecode' \
'relink:Point the run path of every ELF file at the libraries it needs, like autoPatchelfHook' \
'audit:Check a tree\: store references, libraries the loader would not find, missing interpreters and shebangs, dangling symlinks' \
'elf:Edit ELF files; accepts patchelf'\''s command line (\`storepatch elf --help\`)' \
'generate:Print the man page or shell completions (for packagers)' \
'help:Print this message or the help of the given subcommand(s)' \
    )
    _describe -t commands 'storepatch commands' commands "$@"
}
(( $+functions[_storepatch__subcmd__audit_commands] )) ||
_storepatch__subcmd__audit_commands() {
    local commands; commands=()
    _describe -t commands 'storepatch audit commands' commands "$@"
}
(( $+functions[_storepatch__subcmd__elf_commands] )) ||
_storepatch__subcmd__elf_commands() {
    local commands; commands=()
    _describe -t commands 'storepatch elf commands' commands "$@"
}
(( $+functions[_storepatch__subcmd__generate_commands] )) ||
_storepatch__subcmd__generate_commands() {
    local commands; commands=()
    _describe -t commands 'storepatch generate commands' commands "$@"
}
(( $+functions[_storepatch__subcmd__help_commands] )) ||
_storepatch__subcmd__help_commands() {
    local commands; commands=(
'scan:Find every store reference in a tree\: paths, bare hash parts, symlink targets, names' \
'scrub:Rewrite every live store reference'\''s hash part to 32 \`e\`s (same length), in place' \
'restore:Undo a scrub\: give scrubbed references whose name matches exactly one supplied store path their hash back (same length), and relocate the tree'\''s old location in text files and bytecode' \
'relink:Point the run path of every ELF file at the libraries it needs, like autoPatchelfHook' \
'audit:Check a tree\: store references, libraries the loader would not find, missing interpreters and shebangs, dangling symlinks' \
'elf:Edit ELF files; accepts patchelf'\''s command line (\`storepatch elf --help\`)' \
'generate:Print the man page or shell completions (for packagers)' \
'help:Print this message or the help of the given subcommand(s)' \
    )
    _describe -t commands 'storepatch help commands' commands "$@"
}
(( $+functions[_storepatch__subcmd__help__subcmd__audit_commands] )) ||
_storepatch__subcmd__help__subcmd__audit_commands() {
    local commands; commands=()
    _describe -t commands 'storepatch help audit commands' commands "$@"
}
(( $+functions[_storepatch__subcmd__help__subcmd__elf_commands] )) ||
_storepatch__subcmd__help__subcmd__elf_commands() {
    local commands; commands=()
    _describe -t commands 'storepatch help elf commands' commands "$@"
}
(( $+functions[_storepatch__subcmd__help__subcmd__generate_commands] )) ||
_storepatch__subcmd__help__subcmd__generate_commands() {
    local commands; commands=()
    _describe -t commands 'storepatch help generate commands' commands "$@"
}
(( $+functions[_storepatch__subcmd__help__subcmd__help_commands] )) ||
_storepatch__subcmd__help__subcmd__help_commands() {
    local commands; commands=()
    _describe -t commands 'storepatch help help commands' commands "$@"
}
(( $+functions[_storepatch__subcmd__help__subcmd__relink_commands] )) ||
_storepatch__subcmd__help__subcmd__relink_commands() {
    local commands; commands=()
    _describe -t commands 'storepatch help relink commands' commands "$@"
}
(( $+functions[_storepatch__subcmd__help__subcmd__restore_commands] )) ||
_storepatch__subcmd__help__subcmd__restore_commands() {
    local commands; commands=()
    _describe -t commands 'storepatch help restore commands' commands "$@"
}
(( $+functions[_storepatch__subcmd__help__subcmd__scan_commands] )) ||
_storepatch__subcmd__help__subcmd__scan_commands() {
    local commands; commands=()
    _describe -t commands 'storepatch help scan commands' commands "$@"
}
(( $+functions[_storepatch__subcmd__help__subcmd__scrub_commands] )) ||
_storepatch__subcmd__help__subcmd__scrub_commands() {
    local commands; commands=()
    _describe -t commands 'storepatch help scrub commands' commands "$@"
}
(( $+functions[_storepatch__subcmd__relink_commands] )) ||
_storepatch__subcmd__relink_commands() {
    local commands; commands=()
    _describe -t commands 'storepatch relink commands' commands "$@"
}
(( $+functions[_storepatch__subcmd__restore_commands] )) ||
_storepatch__subcmd__restore_commands() {
    local commands; commands=()
    _describe -t commands 'storepatch restore commands' commands "$@"
}
(( $+functions[_storepatch__subcmd__scan_commands] )) ||
_storepatch__subcmd__scan_commands() {
    local commands; commands=()
    _describe -t commands 'storepatch scan commands' commands "$@"
}
(( $+functions[_storepatch__subcmd__scrub_commands] )) ||
_storepatch__subcmd__scrub_commands() {
    local commands; commands=()
    _describe -t commands 'storepatch scrub commands' commands "$@"
}

if [ "$funcstack[1]" = "_storepatch" ]; then
    _storepatch "$@"
else
    compdef _storepatch storepatch
fi
