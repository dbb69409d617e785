//! `storepatch audit`: a read-only health check of a tree, on any machine.
//!
//! It reports, without executing anything:
//!
//! - every store path referenced, with how many references are live and how many scrubbed
//!   (information, not a problem: a scrubbed reference only matters where it breaks one of the
//!   checks below);
//! - every `DT_NEEDED` library the dynamic loader would not find, following the libraries it
//!   loads (see `storepatch_relink::Loader` for the exact search: the object's run paths with
//!   `$ORIGIN` expanded, then `--library-path`, then `/lib`, `/usr/lib` and the multiarch
//!   directories; `LD_LIBRARY_PATH` and `/etc/ld.so.cache` are never read);
//! - executables whose interpreter (`PT_INTERP`) does not exist;
//! - scripts whose `#!` interpreter does not exist;
//! - symlinks in the tree that lead nowhere (resolved for the check only; nothing is written);
//! - run path entries (RUNPATH, or RPATH) naming a directory that does not exist, such as a
//!   scrubbed `<store>/eeee…-NAME/lib` that neither restore nor relink replaced;
//! - a venv's `pyvenv.cfg` whose `home =` names a directory that does not exist.
//!
//! Exit status: 0 healthy, 1 problems found, 2 errors (such as unreadable files).
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use rayon::prelude::*;
use serde_json::{Value, json};
use storepatch_elf::{ElfInfo, ElfKind};
use storepatch_relink::{Loader, LoaderSearch};
use storepatch_walk::{Entry, EntryKind, ReadPolicy};

use crate::cli::{AuditArgs, GlobalArgs};
use crate::output::{self, Output, bytes_value, path_value};
use crate::tree::{self, TreeOptions};

/// Something wrong with one entry.
enum Problem {
    MissingLibrary { name: Vec<u8>, needed_by: PathBuf },
    MissingInterpreter { interpreter: Vec<u8> },
    MissingShebangInterpreter { interpreter: Vec<u8> },
    DanglingSymlink { target: PathBuf },
    DeadRunpath { entry: Vec<u8> },
    MissingVenvHome { home: Vec<u8> },
    MalformedElf { message: String },
}

impl Problem {
    fn kind(&self) -> &'static str {
        match self {
            Self::MissingLibrary { .. } => "missing_library",
            Self::MissingInterpreter { .. } => "missing_interpreter",
            Self::MissingShebangInterpreter { .. } => "missing_shebang_interpreter",
            Self::DanglingSymlink { .. } => "dangling_symlink",
            Self::DeadRunpath { .. } => "dead_runpath_entry",
            Self::MissingVenvHome { .. } => "missing_venv_home",
            Self::MalformedElf { .. } => "malformed_elf",
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Self::MissingLibrary { .. } => "missing library",
            Self::MissingInterpreter { .. } => "missing interpreter",
            Self::MissingShebangInterpreter { .. } => "missing #! interpreter",
            Self::DanglingSymlink { .. } => "dangling symlink",
            Self::DeadRunpath { .. } => "dead run path entry",
            Self::MissingVenvHome { .. } => "missing venv home",
            Self::MalformedElf { .. } => "malformed ELF",
        }
    }

    fn detail(&self, path: &Path) -> Vec<u8> {
        match self {
            Self::MissingLibrary { name, needed_by } => {
                let mut detail = name.clone();
                if needed_by != path {
                    detail.extend_from_slice(b" (needed by ");
                    detail.extend_from_slice(needed_by.as_os_str().as_bytes());
                    detail.push(b')');
                }
                detail
            }
            Self::MissingInterpreter { interpreter }
            | Self::MissingShebangInterpreter { interpreter } => interpreter.clone(),
            Self::DeadRunpath { entry } => entry.clone(),
            Self::MissingVenvHome { home } => home.clone(),
            Self::DanglingSymlink { target } => {
                let mut detail = b"-> ".to_vec();
                detail.extend_from_slice(target.as_os_str().as_bytes());
                detail
            }
            Self::MalformedElf { message } => message.clone().into_bytes(),
        }
    }

    fn json(&self, path: &Path) -> Value {
        let mut value = json!({"type": "problem", "kind": self.kind(), "path": path_value(path)});
        match self {
            Self::MissingLibrary { name, needed_by } => {
                value["name"] = bytes_value(name);
                value["needed_by"] = path_value(needed_by);
            }
            Self::MissingInterpreter { interpreter }
            | Self::MissingShebangInterpreter { interpreter } => {
                value["interpreter"] = bytes_value(interpreter);
            }
            Self::DanglingSymlink { target } => value["target"] = path_value(target),
            Self::DeadRunpath { entry } => value["entry"] = bytes_value(entry),
            Self::MissingVenvHome { home } => value["home"] = bytes_value(home),
            Self::MalformedElf { message } => value["message"] = json!(message),
        }
        value
    }
}

/// What checking one entry found.
#[derive(Default)]
struct Checked {
    problems: Vec<Problem>,
    error: Option<String>,
    elf: bool,
}

pub(crate) fn run(global: &GlobalArgs, args: &AuditArgs) -> anyhow::Result<ExitCode> {
    for root in &args.paths {
        super::check_root(root)?;
    }
    let store_dir = super::store_dir(global)?;
    let read_policy = if global.no_mmap {
        ReadPolicy::Read
    } else {
        ReadPolicy::default()
    };
    let options = TreeOptions {
        tree: storepatch_tree::TreeOptions {
            store_dir: store_dir.clone(),
            candidates: Vec::new(),
            read_policy,
            read_in_pieces: false,
            with_context: false,
            // Every entry is checked for its ELF problems after the scan.
            keep: storepatch_tree::Keep::All,
        },
        show_progress: !(global.json || global.quiet || global.no_progress),
    };
    let scan = tree::scan_roots(&args.paths, &options)?;

    let mut store_paths: BTreeMap<Vec<u8>, (usize, usize)> = BTreeMap::new();
    for hit in scan.findings.iter().flat_map(|finding| &finding.hits) {
        let counts = store_paths
            .entry(tree::render_target(&store_dir, hit))
            .or_default();
        if hit.live().is_some() {
            counts.0 += 1;
        } else {
            counts.1 += 1;
        }
    }

    let loader = Loader::new(LoaderSearch {
        library_paths: args.library_path.clone(),
        ..LoaderSearch::default()
    });
    let checked: Vec<Checked> = scan
        .entries
        .par_iter()
        .map(|entry| check_entry(entry, &loader, read_policy))
        .collect();

    let mut out = Output::new();
    let mut problems = 0usize;
    let mut errors = scan.errors.len();
    let elf_files = checked.iter().filter(|checked| checked.elf).count();
    let mut rows: Vec<(&'static str, &Path, Vec<u8>)> = Vec::new();
    for error in &scan.errors {
        emit_error(&mut out, global, &error.path, &error.message)?;
    }
    let scan_error_paths: std::collections::BTreeSet<&Path> = scan
        .errors
        .iter()
        .map(|error| error.path.as_path())
        .collect();
    for (entry, checked) in scan.entries.iter().zip(&checked) {
        // The scan reports a file it cannot read already.
        if let Some(message) = &checked.error
            && !scan_error_paths.contains(entry.path.as_path())
        {
            errors += 1;
            emit_error(&mut out, global, &entry.path, message)?;
        }
        for problem in &checked.problems {
            problems += 1;
            if global.json {
                out.json(&problem.json(&entry.path))?;
            } else {
                rows.push((problem.label(), &entry.path, problem.detail(&entry.path)));
            }
        }
    }
    let live: usize = store_paths.values().map(|counts| counts.0).sum();
    let scrubbed: usize = store_paths.values().map(|counts| counts.1).sum();
    if global.json {
        for (store_path, (live, scrubbed)) in &store_paths {
            out.json(&json!({
                "type": "store_path",
                "store_path": bytes_value(store_path),
                "live": live,
                "scrubbed": scrubbed,
            }))?;
        }
        out.json(&json!({
            "type": "summary",
            "entries": scan.entries.len(),
            "elf_files": elf_files,
            "problems": problems,
            "store_paths": store_paths.len(),
            "live_references": live,
            "scrubbed_references": scrubbed,
            "errors": errors,
        }))?;
    } else if !global.quiet {
        if !rows.is_empty() {
            out.line(format!("{:<24}  {:<}", "PROBLEM", "PATH  DETAIL").as_bytes())?;
            for (label, path, detail) in &rows {
                let mut line = format!("{label:<24}  ").into_bytes();
                line.extend_from_slice(path.as_os_str().as_bytes());
                line.extend_from_slice(b"  ");
                line.extend_from_slice(detail);
                out.line(&line)?;
            }
        }
        if !store_paths.is_empty() {
            if !rows.is_empty() {
                out.line(b"")?;
            }
            out.line(format!("{:>6}  {:>8}  STORE PATH", "LIVE", "SCRUBBED").as_bytes())?;
            for (store_path, (live, scrubbed)) in &store_paths {
                let mut line = format!("{live:>6}  {scrubbed:>8}  ").into_bytes();
                line.extend_from_slice(store_path);
                out.line(&line)?;
            }
        }
    }
    out.flush()?;
    if !global.json {
        output::message(
            global.quiet,
            &format!(
                "{}: {problems} problems in {} entries ({elf_files} ELF files); {live} live and {scrubbed} scrubbed references to {} store paths; {errors} errors",
                if problems == 0 && errors == 0 {
                    "healthy"
                } else {
                    "unhealthy"
                },
                scan.entries.len(),
                store_paths.len(),
            ),
        );
    }
    Ok(ExitCode::from(if errors > 0 {
        crate::exit::ERROR
    } else {
        u8::from(problems > 0)
    }))
}

fn emit_error(
    out: &mut Output,
    global: &GlobalArgs,
    path: &Path,
    message: &str,
) -> anyhow::Result<()> {
    if global.json {
        out.json(&json!({"type": "error", "path": path_value(path), "message": message}))?;
    } else {
        output::entry_error(message);
    }
    Ok(())
}

fn check_entry(entry: &Entry, loader: &Loader, read_policy: ReadPolicy) -> Checked {
    let mut checked = Checked::default();
    match entry.kind {
        EntryKind::Symlink => {
            // Resolving (never writing) is fine even when the target is outside the tree.
            if fs_err::metadata(&entry.path).is_err() {
                let target = fs_err::read_link(&entry.path).unwrap_or_default();
                checked.problems.push(Problem::DanglingSymlink { target });
            }
        }
        EntryKind::File => {
            let contents = match storepatch_walk::read(&entry.path, entry.len, read_policy) {
                Ok(contents) => contents,
                Err(err) => {
                    checked.error = Some(tree::error_chain(&err));
                    return checked;
                }
            };
            if contents.starts_with(b"\x7fELF") {
                checked.elf = true;
                match ElfInfo::parse(&contents) {
                    Ok(info) => check_elf(&entry.path, &info, loader, &mut checked.problems),
                    Err(err) => checked.problems.push(Problem::MalformedElf {
                        message: tree::error_chain(&err),
                    }),
                }
            } else if entry.path.file_name() == Some(OsStr::new("pyvenv.cfg")) {
                if let Some(home) = venv_home(&contents)
                    && !Path::new(OsStr::from_bytes(&home)).is_dir()
                {
                    checked.problems.push(Problem::MissingVenvHome { home });
                }
            } else if let Some(interpreter) = shebang_interpreter(&contents)
                && interpreter.first() == Some(&b'/')
                && !Path::new(OsStr::from_bytes(&interpreter)).exists()
            {
                checked
                    .problems
                    .push(Problem::MissingShebangInterpreter { interpreter });
            }
        }
        EntryKind::Dir | EntryKind::Other => {}
    }
    checked
}

fn check_elf(path: &Path, info: &ElfInfo, loader: &Loader, problems: &mut Vec<Problem>) {
    if matches!(
        info.kind,
        ElfKind::Executable | ElfKind::PositionIndependentExecutable
    ) && let Some(interpreter) = &info.interpreter
        && !Path::new(OsStr::from_bytes(interpreter)).exists()
    {
        problems.push(Problem::MissingInterpreter {
            interpreter: interpreter.clone(),
        });
    }
    // Entries that name no directory at all (relative entries other than `$ORIGIN` ones depend
    // on the working directory and are left to the loader check).
    let origin = path
        .parent()
        .unwrap_or(Path::new("/"))
        .as_os_str()
        .as_bytes();
    for list in [&info.runpath, &info.rpath].into_iter().flatten() {
        for entry in list
            .split(|&byte| byte == b':')
            .filter(|entry| !entry.is_empty())
        {
            let expanded = expand_origin(entry, origin);
            if expanded.first() == Some(&b'/') && !Path::new(OsStr::from_bytes(&expanded)).is_dir()
            {
                problems.push(Problem::DeadRunpath {
                    entry: entry.to_vec(),
                });
            }
        }
    }
    if info.has_dynamic {
        problems.extend(loader.check(path, info).into_iter().map(|unresolved| {
            Problem::MissingLibrary {
                name: unresolved.name,
                needed_by: unresolved.needed_by,
            }
        }));
    }
}

/// The program of a `#!` line: the first word after `#!`, as the kernel reads it.
fn shebang_interpreter(contents: &[u8]) -> Option<Vec<u8>> {
    let line = contents.strip_prefix(b"#!")?;
    // The kernel reads at most a page's worth of the line.
    let line = &line[..line.len().min(4096)];
    let line = &line[..line
        .iter()
        .position(|&byte| byte == b'\n')
        .unwrap_or(line.len())];
    let line = line.trim_ascii_start();
    let end = line
        .iter()
        .position(u8::is_ascii_whitespace)
        .unwrap_or(line.len());
    (end > 0).then(|| line[..end].to_vec())
}

/// `$ORIGIN` and `${ORIGIN}` in a run path entry replaced with the object's directory.
fn expand_origin(entry: &[u8], origin: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entry.len());
    let mut rest = entry;
    while let Some(at) = memchr::memchr(b'$', rest) {
        out.extend_from_slice(&rest[..at]);
        let after = &rest[at..];
        if let Some(tail) = after.strip_prefix(b"${ORIGIN}") {
            out.extend_from_slice(origin);
            rest = tail;
        } else if let Some(tail) = after.strip_prefix(b"$ORIGIN") {
            out.extend_from_slice(origin);
            rest = tail;
        } else {
            out.push(b'$');
            rest = &after[1..];
        }
    }
    out.extend_from_slice(rest);
    out
}

/// The value of `home =` in a `pyvenv.cfg`.
fn venv_home(contents: &[u8]) -> Option<Vec<u8>> {
    contents.split(|&byte| byte == b'\n').find_map(|line| {
        let (key, value) = line.split_at(line.iter().position(|&byte| byte == b'=')?);
        (key.trim_ascii() == b"home").then(|| value[1..].trim_ascii().to_vec())
    })
}
