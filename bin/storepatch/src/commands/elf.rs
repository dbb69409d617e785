//! `storepatch elf`: a patchelf-compatible command line over `storepatch-elf`.
//!
//! The parser is hand-written because patchelf's command line is not clap-shaped: options and
//! file names mix freely, option values may start with `-`, and a value `@FILE` means "the
//! contents of FILE". Installed (or symlinked) as `patchelf`, the binary runs this directly.
//!
//! Exit codes follow patchelf, not the rest of storepatch: 0 on success, 1 on any error (usage or
//! file), because scripts written for patchelf test exactly that.
use std::ffi::{OsStr, OsString};
use std::io::Write as _;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use storepatch_elf::{ElfEdits, ElfInfo, Options, Outcome, RunPathEdit};

/// The version line; says which patchelf command line this accepts.
const VERSION: &str = concat!(
    "storepatch-elf ",
    env!("CARGO_PKG_VERSION"),
    " (patchelf 0.19 compatible)"
);

const USAGE: &str = "\
usage: storepatch elf [OPTIONS] FILENAME...   (or: patchelf [OPTIONS] FILENAME...)
  [--set-interpreter FILENAME]
  [--page-size SIZE]
  [--print-interpreter]
  [--print-os-abi]                 Prints the EI_OSABI field of the ELF header
  [--set-os-abi ABI]               Sets the EI_OSABI field of the ELF header to ABI
  [--print-soname]                 Prints the DT_SONAME entry of .dynamic, if any
  [--set-soname SONAME]            Sets the DT_SONAME entry to SONAME
  [--set-rpath RPATH]
  [--add-rpath RPATH]
  [--remove-rpath]
  [--shrink-rpath]
  [--allowed-rpath-prefixes PREFIXES]  With --shrink-rpath, drop entries outside these prefixes
  [--print-rpath]
  [--print-execstack]              Prints whether the object requests an executable stack
  [--clear-execstack]
  [--set-execstack]
  [--force-rpath]
  [--add-needed LIBRARY]
  [--remove-needed LIBRARY]
  [--replace-needed LIBRARY NEW_LIBRARY]
  [--print-needed]
  [--no-default-lib]
  [--clear-symbol-version SYMBOL]
  [--rename-dynamic-symbols NAME_MAP_FILE]  Renames dynamic symbols: OLD NEW pairs, one a line
  [--add-debug-tag]                Adds a DT_DEBUG entry to .dynamic, unless there is one
  [--build-resolution-cache]       Records where the run path resolves each needed library, in a
                                   .note.nixos.ldcache note (after the other edits)
  [--no-sort]                      Accepted; segments and sections are never sorted here
  [--no-clobber-old-sections]      Leave the old copy of a moved .dynstr as it was (default: cleared)
  [--output FILE]
  [--debug]
  [--version]
  FILENAME...

A value @FILE of --set-interpreter, --set-os-abi, --set-soname, --set-rpath, --add-rpath,
--add-needed, --remove-needed, --clear-symbol-version or --output is replaced by the contents
of FILE (as patchelf does; other options take their values as they are).
Exit status: 0 on success, 1 on any error (as patchelf).
";

/// Every option of patchelf 0.19's command line. None is an option of `storepatch` itself, so a
/// `storepatch` command line starting with one is a patchelf command line.
const PATCHELF_OPTIONS: &[&str] = &[
    "--set-interpreter",
    "--interpreter",
    "--page-size",
    "--print-interpreter",
    "--print-os-abi",
    "--set-os-abi",
    "--print-soname",
    "--set-soname",
    "--set-rpath",
    "--add-rpath",
    "--remove-rpath",
    "--shrink-rpath",
    "--allowed-rpath-prefixes",
    "--print-rpath",
    "--force-rpath",
    "--add-needed",
    "--remove-needed",
    "--replace-needed",
    "--print-needed",
    "--no-default-lib",
    "--clear-symbol-version",
    "--print-execstack",
    "--set-execstack",
    "--clear-execstack",
    "--add-debug-tag",
    "--rename-dynamic-symbols",
    "--build-resolution-cache",
    "--no-sort",
    "--no-clobber-old-sections",
    "--output",
    "--debug",
];

/// Whether `storepatch ARG …` is unambiguously a patchelf command line, to be run as
/// `storepatch elf ARG …`.
pub(crate) fn is_patchelf_command_line(first: &OsStr) -> bool {
    first
        .to_str()
        .is_some_and(|first| PATCHELF_OPTIONS.contains(&first))
}

/// Parsed command line.
#[derive(Debug, Default)]
struct Invocation {
    edits: ElfEdits,
    options: Options,
    print_interpreter: bool,
    print_os_abi: bool,
    print_soname: bool,
    print_rpath: bool,
    print_needed: bool,
    print_execstack: bool,
    set_execstack: bool,
    clear_execstack: bool,
    shrink_rpath: bool,
    remove_rpath: bool,
    set_rpath: Option<Vec<u8>>,
    add_rpath: Option<Vec<u8>>,
    allowed_prefixes: Vec<Vec<u8>>,
    output: Option<PathBuf>,
    files: Vec<PathBuf>,
    debug: bool,
    build_resolution_cache: bool,
}

enum Parsed {
    Run(Box<Invocation>),
    Help,
    Version,
}

/// Reads an option value; `@FILE` means the bytes of FILE (for the options patchelf reads
/// `@FILE` for; the others use [`literal_value`]).
fn value(args: &mut impl Iterator<Item = OsString>, option: &str) -> anyhow::Result<Vec<u8>> {
    let Some(raw) = args.next() else {
        bail!("missing argument to {option}");
    };
    let raw = raw.into_vec();
    if let Some(file) = raw.strip_prefix(b"@") {
        let path = Path::new(OsStr::from_bytes(file));
        // Named as patchelf names it, so scripts matching its message keep working.
        return read_value_file(path).with_context(|| {
            format!(
                "getting info about '{}' (the value of {option})",
                path.display()
            )
        });
    }
    Ok(raw)
}

/// Largest `@FILE` value read.
const MAX_VALUE_FILE: u64 = 64 << 20;

/// The bytes of an `@FILE` value: a regular file of at most [`MAX_VALUE_FILE`] bytes, so that
/// `@/dev/zero` is not read without end and a FIFO is not waited on.
fn read_value_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Read as _;
    let cannot = |err: &std::io::Error| crate::exit::cannot("read", path, err);
    let metadata = fs_err::metadata(path).map_err(|err| cannot(&err))?;
    if let Some(kind) = storepatch_rewrite::special_kind(metadata.file_type()) {
        bail!(
            "cannot read `{}`: {kind}, not a regular file",
            path.display()
        );
    }
    let mut bytes = Vec::new();
    fs_err::File::open(path)
        .map_err(|err| cannot(&err))?
        .take(MAX_VALUE_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| cannot(&err))?;
    if bytes.len() as u64 > MAX_VALUE_FILE {
        bail!(
            "cannot read `{}`: larger than {MAX_VALUE_FILE} bytes",
            path.display()
        );
    }
    Ok(bytes)
}

/// Largest `--rename-dynamic-symbols` map file read.
const MAX_MAP_FILE: u64 = 64 << 20;

/// Reads a `--rename-dynamic-symbols` map file as patchelf does: one `OLD NEW` pair a line,
/// separated by white space; reading stops at the first blank line; a line with one name, a name
/// given twice as OLD, or a name with a version (`@`) is an error naming the file and line.
fn read_symbol_map(path: &Path) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    use std::io::Read;
    let metadata = fs_err::metadata(path).map_err(|err| crate::exit::cannot("read", path, &err))?;
    if let Some(kind) = storepatch_rewrite::special_kind(metadata.file_type()) {
        bail!(
            "cannot read `{}`: {kind}, not a regular file",
            path.display()
        );
    }
    let file = fs_err::File::open(path).map_err(|err| crate::exit::cannot("read", path, &err))?;
    let mut bytes = Vec::new();
    file.take(MAX_MAP_FILE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_MAP_FILE {
        bail!(
            "cannot read `{}`: larger than {MAX_MAP_FILE} bytes",
            path.display()
        );
    }
    let mut renames: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for (number, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let mut words = line
            .split(u8::is_ascii_whitespace)
            .filter(|word| !word.is_empty());
        let Some(old) = words.next() else {
            break;
        };
        let at = format!("{}:{}", path.display(), number + 1);
        let Some(new) = words.next() else {
            bail!("{at}: Map file line is missing the second element");
        };
        if renames.iter().any(|(seen, _)| seen == old) {
            bail!(
                "{at}: Name '{}' appears twice in the map file",
                String::from_utf8_lossy(old)
            );
        }
        if old.contains(&b'@') || new.contains(&b'@') {
            bail!(
                "{at}: Name pair contains version tag: {} {}",
                String::from_utf8_lossy(old),
                String::from_utf8_lossy(new)
            );
        }
        renames.push((old.to_vec(), new.to_vec()));
    }
    Ok(renames)
}

/// Reads an option value as it is: patchelf reads `@FILE` only for the options that take a name
/// or a path (`--set-interpreter`, `--set-os-abi`, `--set-soname`, `--set-rpath`, `--add-rpath`,
/// `--add-needed`, `--remove-needed`, `--clear-symbol-version`, `--output`), not for
/// `--replace-needed`, `--page-size` or `--allowed-rpath-prefixes`.
fn literal_value(
    args: &mut impl Iterator<Item = OsString>,
    option: &str,
) -> anyhow::Result<Vec<u8>> {
    match args.next() {
        Some(raw) => Ok(raw.into_vec()),
        None => bail!("missing argument to {option}"),
    }
}

fn text_value(args: &mut impl Iterator<Item = OsString>, option: &str) -> anyhow::Result<String> {
    let raw = value(args, option)?;
    String::from_utf8(raw).with_context(|| format!("the value of {option} is not UTF-8"))
}

fn parse(args: Vec<OsString>) -> anyhow::Result<Parsed> {
    let mut invocation = Invocation::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--set-interpreter" | "--interpreter") => {
                invocation.edits.interpreter = Some(value(&mut args, "--set-interpreter")?);
            }
            Some("--page-size") => {
                let size = String::from_utf8(literal_value(&mut args, "--page-size")?)
                    .context("the value of --page-size is not UTF-8")?;
                let size: u64 = size
                    .trim()
                    .parse()
                    .ok()
                    .filter(|size: &u64| *size > 0)
                    .with_context(|| format!("invalid argument to --page-size: {size}"))?;
                invocation.options.page_size = Some(size);
            }
            Some("--print-interpreter") => invocation.print_interpreter = true,
            Some("--print-os-abi") => invocation.print_os_abi = true,
            Some("--set-os-abi") => {
                let name = text_value(&mut args, "--set-os-abi")?;
                let abi = storepatch_elf::os_abi_from_name(&name)
                    .with_context(|| format!("unrecognized OS ABI `{name}`"))?;
                invocation.edits.os_abi = Some(abi);
            }
            Some("--print-soname") => invocation.print_soname = true,
            Some("--set-soname") => {
                invocation.edits.soname = Some(value(&mut args, "--set-soname")?);
            }
            Some("--set-rpath") => invocation.set_rpath = Some(value(&mut args, "--set-rpath")?),
            Some("--add-rpath") => invocation.add_rpath = Some(value(&mut args, "--add-rpath")?),
            Some("--remove-rpath") => invocation.remove_rpath = true,
            Some("--shrink-rpath") => invocation.shrink_rpath = true,
            Some("--allowed-rpath-prefixes") => {
                let prefixes = literal_value(&mut args, "--allowed-rpath-prefixes")?;
                invocation.allowed_prefixes.extend(
                    prefixes
                        .split(|&b| b == b':')
                        .filter(|prefix| !prefix.is_empty())
                        .map(<[u8]>::to_vec),
                );
            }
            Some("--print-rpath") => invocation.print_rpath = true,
            Some("--force-rpath") => invocation.edits.force_rpath = true,
            Some("--add-needed") => {
                let name = value(&mut args, "--add-needed")?;
                invocation.edits.add_needed.push(name);
            }
            Some("--remove-needed") => {
                let name = value(&mut args, "--remove-needed")?;
                invocation.edits.remove_needed.push(name);
            }
            Some("--replace-needed") => {
                let old = literal_value(&mut args, "--replace-needed")?;
                let new = literal_value(&mut args, "--replace-needed")?;
                invocation.edits.replace_needed.push((old, new));
            }
            Some("--print-needed") => invocation.print_needed = true,
            Some("--print-execstack") => invocation.print_execstack = true,
            Some("--set-execstack") => invocation.set_execstack = true,
            Some("--clear-execstack") => invocation.clear_execstack = true,
            Some("--add-debug-tag") => invocation.edits.add_debug_tag = true,
            // Only changes how patchelf orders its rewrite; this layout never sorts segments.
            Some("--no-sort") => {}
            Some("--no-clobber-old-sections") => invocation.options.keep_old_sections = true,
            Some("--rename-dynamic-symbols") => {
                let Some(map) = args.next() else {
                    bail!("missing argument to --rename-dynamic-symbols");
                };
                let renames = read_symbol_map(Path::new(&map))?;
                invocation.edits.rename_dynamic_symbols.extend(renames);
            }
            Some("--build-resolution-cache") => invocation.build_resolution_cache = true,
            Some("--no-default-lib") => invocation.edits.no_default_lib = true,
            Some("--clear-symbol-version") => {
                let name = value(&mut args, "--clear-symbol-version")?;
                invocation.edits.clear_symbol_version.push(name);
            }
            Some("--output") => {
                let output = value(&mut args, "--output")?;
                invocation.output = Some(PathBuf::from(OsString::from_vec(output)));
            }
            Some("--debug") => invocation.debug = true,
            Some("--help" | "-h") => return Ok(Parsed::Help),
            Some("--version") => return Ok(Parsed::Version),
            Some("--") => invocation.files.extend(args.by_ref().map(PathBuf::from)),
            Some(option) if option.starts_with("--") => bail!("unknown option `{option}`"),
            _ => invocation.files.push(PathBuf::from(arg)),
        }
    }
    // patchelf's precedence: printing wins over clearing, clearing over setting.
    if !invocation.print_execstack {
        if invocation.clear_execstack {
            invocation.edits.execstack = Some(false);
        } else if invocation.set_execstack {
            invocation.edits.execstack = Some(true);
        }
    }
    // patchelf's precedence among run path operations.
    invocation.edits.run_path = if invocation.shrink_rpath {
        Some(RunPathEdit::Shrink {
            allowed_prefixes: invocation.allowed_prefixes.clone(),
        })
    } else if invocation.remove_rpath {
        Some(RunPathEdit::Remove)
    } else {
        invocation.set_rpath.clone().map(RunPathEdit::Set)
    };
    if invocation.edits.run_path.is_none()
        && let Some(add) = &invocation.add_rpath
    {
        invocation.edits.add_run_path.push(add.clone());
    }
    if invocation.edits.force_rpath && invocation.build_resolution_cache {
        bail!("--build-resolution-cache cannot be combined with --force-rpath");
    }
    if invocation.files.is_empty() {
        bail!("missing filename\n\n{USAGE}");
    }
    if invocation.output.is_some() && invocation.files.len() > 1 {
        bail!("--output takes exactly one input file");
    }
    Ok(Parsed::Run(Box::new(invocation)))
}

pub(crate) fn run(args: Vec<OsString>) -> anyhow::Result<ExitCode> {
    let invocation = match parse(args) {
        Ok(Parsed::Help) => {
            std::io::stdout().lock().write_all(USAGE.as_bytes())?;
            return Ok(ExitCode::SUCCESS);
        }
        Ok(Parsed::Version) => {
            writeln!(std::io::stdout().lock(), "{VERSION}")?;
            return Ok(ExitCode::SUCCESS);
        }
        Ok(Parsed::Run(invocation)) => invocation,
        Err(err) => return Ok(fail(&err)),
    };
    if invocation.debug {
        crate::logger::init(1);
        log::set_max_level(log::LevelFilter::Debug);
    }
    let mut failed = false;
    for file in &invocation.files {
        if let Err(err) = run_one(&invocation, file) {
            if is_broken_pipe(&err) {
                return Ok(ExitCode::SUCCESS);
            }
            fail(&err);
            failed = true;
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[expect(
    clippy::print_stderr,
    reason = "patchelf-style errors: exit 1, not storepatch's 2"
)]
fn fail(err: &anyhow::Error) -> ExitCode {
    eprintln!("error: {}", crate::exit::render(err));
    ExitCode::FAILURE
}

fn run_one(invocation: &Invocation, file: &Path) -> anyhow::Result<()> {
    let wants_print = invocation.print_interpreter
        || invocation.print_os_abi
        || invocation.print_soname
        || invocation.print_rpath
        || invocation.print_execstack
        || invocation.print_needed;
    if wants_print {
        // Regular files only, read to their size: never `/dev/zero` without end, nor a FIFO.
        let bytes = read_input(file)?;
        let info = parse_input(file, &bytes)?;
        print_info(invocation, file, &info)?;
    }
    let output = invocation.output.as_deref().unwrap_or(file);
    if invocation.edits == ElfEdits::default() && output == file {
        // Still parsed and validated, as patchelf does: malformed input is an error.
        let bytes = read_input(file)?;
        parse_input(file, &bytes)?;
    } else {
        // Validated before the edit, so that a malformed file gets the same message from every
        // command; and patchelf warns about damage it finds while rewriting the headers.
        let warnings = {
            let bytes = read_input(file)?;
            parse_input(file, &bytes)?;
            storepatch_elf::relayout_warnings(&bytes)
        };
        // The error names the file already.
        let outcome =
            storepatch_elf::apply_to_file_as(file, output, &invocation.edits, &invocation.options)?;
        log_outcome(file, &outcome, &warnings);
    }
    if invocation.build_resolution_cache {
        build_resolution_cache(invocation, output)?;
    }
    Ok(())
}

/// patchelf's `--build-resolution-cache`, after the other edits (as patchelf orders them): the
/// needed libraries are resolved against the run path the file has now, and the note is added
/// unless an identical one is there. A different note already there is an error (it is never
/// rebuilt in place); with nothing to record, patchelf's warning, and the file is left alone.
#[expect(
    clippy::print_stderr,
    reason = "patchelf's warning, on stderr as patchelf prints it"
)]
fn build_resolution_cache(invocation: &Invocation, file: &Path) -> anyhow::Result<()> {
    let bytes = read_input(file)?;
    let info = parse_input(file, &bytes)?;
    drop(bytes);
    match storepatch_elf::resolution_cache_descriptor(&info) {
        Ok(descriptor) => {
            let edits = ElfEdits {
                resolution_cache: Some(descriptor),
                ..ElfEdits::default()
            };
            let outcome = storepatch_elf::apply_to_file(file, &edits, &invocation.options)?;
            log_outcome(file, &outcome, &[]);
        }
        Err(_) if info.resolution_cache.is_some() => bail!(
            "{}: --build-resolution-cache: a resolution cache note is already present; \
             rebuild from an unpatched binary",
            file.display()
        ),
        Err(reason) => {
            eprintln!("warning: --build-resolution-cache: {reason}; no cache written");
        }
    }
    Ok(())
}

fn log_outcome(file: &Path, outcome: &Outcome, warnings: &[storepatch_elf::Warning]) {
    match outcome {
        Outcome::Unchanged => log::debug!("{}: nothing to change", file.display()),
        Outcome::InPlace { bytes_written } => {
            log::debug!("{}: {bytes_written} bytes changed in place", file.display());
        }
        Outcome::Relayout { old_size, new_size } => {
            log::debug!(
                "{}: rewritten with a new segment ({old_size} -> {new_size} bytes)",
                file.display()
            );
            for &warning in warnings {
                warn(file, warning);
            }
        }
    }
}

#[expect(
    clippy::print_stderr,
    reason = "patchelf prints these warnings on stderr and carries on"
)]
fn warn(file: &Path, warning: storepatch_elf::Warning) {
    eprintln!("warning: {}: {warning}", file.display());
}

fn print_info(invocation: &Invocation, file: &Path, info: &ElfInfo) -> anyhow::Result<()> {
    let statically_linked = || {
        anyhow::anyhow!(
            "cannot read `{}`: it has no dynamic section (it is most likely statically linked)",
            file.display()
        )
    };
    let mut out = std::io::stdout().lock();
    if invocation.print_interpreter {
        let interpreter = info.interpreter.as_ref().ok_or_else(|| {
            anyhow::anyhow!(
                "cannot read `{}`: it has no PT_INTERP (it is most likely statically linked)",
                file.display()
            )
        })?;
        out.write_all(interpreter)?;
        out.write_all(b"\n")?;
    }
    if invocation.print_os_abi {
        match storepatch_elf::os_abi_name(info.os_abi) {
            Some(name) => writeln!(out, "{name}")?,
            None => writeln!(out, "0x{:02x}", info.os_abi)?,
        }
    }
    if invocation.print_soname {
        if !info.has_dynamic {
            return Err(statically_linked());
        }
        if let Some(soname) = &info.soname {
            out.write_all(soname)?;
            out.write_all(b"\n")?;
        }
    }
    if invocation.print_rpath {
        if !info.has_dynamic {
            return Err(statically_linked());
        }
        out.write_all(info.run_path().unwrap_or_default())?;
        out.write_all(b"\n")?;
    }
    if invocation.print_execstack {
        let state = match info.execstack {
            Some(true) => 'X',
            Some(false) => '-',
            None => '?',
        };
        writeln!(out, "execstack: {state}")?;
    }
    if invocation.print_needed {
        if !info.has_dynamic {
            return Err(statically_linked());
        }
        for needed in &info.needed {
            out.write_all(needed)?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Parses and validates an input file; a malformed one is named in the form every command
/// uses (``cannot read `FILE`: malformed ELF: …``).
fn parse_input(file: &Path, bytes: &[u8]) -> anyhow::Result<ElfInfo> {
    ElfInfo::parse(bytes).map_err(|err| anyhow::anyhow!("cannot read `{}`: {err}", file.display()))
}

/// Reads an input file (regular files only, see [`storepatch_elf::read_file`]), with an I/O
/// failure worded as every other command words it.
fn read_input(file: &Path) -> anyhow::Result<storepatch_walk::Contents> {
    storepatch_elf::read_file(file).map_err(|err| match err {
        storepatch_elf::Error::Io { cause, .. } => crate::exit::cannot("read", file, &cause),
        other => anyhow::Error::from(other),
    })
}
