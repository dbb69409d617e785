//! `storepatch relink`: autoPatchelfHook in one process.
//!
//! Order of work: read the interpreter (to learn the target machine), walk the trees once
//! ([`storepatch_relink::walk_trees`]), index the libraries found there and then those of the
//! search paths, relink the trees ([`storepatch_relink::relink_walked`]: every ELF file planned in
//! parallel, the ones whose headers change written in one ELF engine pass each), and report in
//! walk order, so the output never depends on the thread count. Missing dependencies are all
//! listed before the run fails; per-file errors are reported and the run goes on.
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::{Value, json};
use storepatch_elf::{ElfInfo, Outcome};
use storepatch_relink::{
    Dependency, DependencyKind, FileResult, LibcNames, LibraryIndex, PatchelfFlags, Pattern,
    Relink, Relinker, Resolution, RestoreMap, Settings, Skip, Target, TreeFile,
};
use storepatch_walk::ReadPolicy;

use crate::cli::{GlobalArgs, LibrarySource, RelinkArgs};
use crate::output::{self, Output, bytes_value, path_value};

pub(crate) fn run(global: &GlobalArgs, args: &RelinkArgs) -> anyhow::Result<ExitCode> {
    if args.paths.is_empty() {
        anyhow::bail!("no paths to relink: give them as arguments or after --paths");
    }
    let patchelf = PatchelfFlags::parse(&args.patchelf_flag)?;
    for root in &args.paths {
        super::check_root(root)?;
    }
    // Directories end up in run paths, which the loader reads relative to its working directory:
    // a tree or library directory given as a relative path must become absolute first.
    let mut args = args.clone();
    for path in args
        .paths
        .iter_mut()
        .chain(args.library_sources.iter_mut().map(LibrarySource::path_mut))
    {
        *path = std::path::absolute(&*path)
            .with_context(|| format!("cannot make `{}` absolute", path.display()))?;
    }
    let args = &args;
    let store_dir = super::store_dir(global)?;
    let bintools = std::env::var_os("NIX_BINTOOLS").map(PathBuf::from);
    let interpreter = match (&args.interpreter, &bintools) {
        (Some(path), _) => Some(path.clone()),
        (None, Some(bintools)) => {
            let file = bintools.join("nix-support/dynamic-linker");
            let text = crate::exit::read_regular(&file)
                .context("$NIX_BINTOOLS names no dynamic linker")?;
            Some(PathBuf::from(std::ffi::OsStr::from_bytes(
                text.trim_ascii(),
            )))
        }
        (None, None) => None,
    };
    let target = match &interpreter {
        Some(path) => {
            let bytes = crate::exit::read_regular(path)?;
            let info = ElfInfo::parse(&bytes)
                .with_context(|| format!("cannot use `{}` as the interpreter", path.display()))?;
            Target::of(&info)
        }
        None => Target::host(),
    };
    // In a Nix build, what libc's `lib` directory holds decides, as for autoPatchelfHook.
    let mut libc = LibcNames::glibc();
    if let Some(bintools) = &bintools
        && let Ok(text) = fs_err::read(bintools.join("nix-support/orig-libc"))
    {
        let libc_dir = Path::new(std::ffi::OsStr::from_bytes(text.trim_ascii())).join("lib");
        match LibcNames::from_directory(&libc_dir) {
            Ok(names) => libc = names,
            Err(err) => output::message(
                global.quiet,
                &format!(
                    "warning: libc directory from $NIX_BINTOOLS: {}; using glibc's sonames",
                    storepatch_tree::error_chain(&err)
                ),
            ),
        }
    }
    let patterns: Vec<Pattern> = args.ignore_missing.iter().map(Pattern::new).collect();

    let recursive = !args.no_recurse;
    let read_policy = if global.no_mmap {
        ReadPolicy::Read
    } else {
        ReadPolicy::default()
    };
    let tree_options = storepatch_relink::TreeOptions {
        recursive,
        dry_run: args.dry_run,
        read_policy,
    };
    // One walk finds both the trees' own libraries and the files to relink.
    let started = std::time::Instant::now();
    let tree = storepatch_relink::walk_trees(&args.paths, tree_options)?;
    log::debug!("walked the trees in {:?}", started.elapsed());
    let mut builder = LibraryIndex::builder().follow_run_paths(args.follow_run_paths);
    if !args.ignore_existing {
        builder = builder.files(tree.libraries().iter().cloned());
    }
    builder = builder.end_group();
    for source in &args.library_sources {
        builder = match source {
            LibrarySource::Directory(dir) => builder.directory(dir),
            LibrarySource::Tree(dir) => builder.tree(dir, true),
        };
    }
    let started = std::time::Instant::now();
    let (index, index_errors) = builder.build();
    log::debug!("indexed the libraries in {:?}", started.elapsed());
    for err in &index_errors {
        output::message(
            global.quiet,
            &format!(
                "warning: library search: {}",
                storepatch_tree::error_chain(err)
            ),
        );
    }

    let supplied: Vec<&Path> = args
        .library_sources
        .iter()
        .map(LibrarySource::path)
        .chain(&args.runtime_dependency)
        .chain(&args.append_rpath)
        .map(PathBuf::as_path)
        .collect();
    let settings = Settings {
        target,
        interpreter: interpreter.map(|path| path.as_os_str().as_bytes().to_vec()),
        runtime_dependencies: args
            .runtime_dependency
            .iter()
            .map(|dir| dir.as_os_str().as_bytes().to_vec())
            .collect(),
        append_run_paths: args
            .append_rpath
            .iter()
            .map(|dir| dir.as_os_str().as_bytes().to_vec())
            .collect(),
        keep_libc: args.keep_libc,
        libc,
        restore: RestoreMap::new(store_dir, supplied),
        patchelf,
        restore_only: args.restore_only,
    };
    let relinker = Relinker::new(index, settings);

    let progress = crate::progress::Progress::counting(
        "relinking",
        "files",
        !(global.json || global.quiet || global.no_progress),
    );
    let started = std::time::Instant::now();
    let run = storepatch_relink::relink_walked(&relinker, tree, tree_options, &progress);
    log::debug!("relinked the files in {:?}", started.elapsed());
    progress.finish();
    for removed in &run.removed {
        output::message(global.quiet, &removed.to_string());
    }

    let started = std::time::Instant::now();
    let report = Report::new(&run.files, &run.results, &patterns, &run.errors);
    report.print(global, args)?;
    log::debug!("reported in {:?}", started.elapsed());
    Ok(ExitCode::from(if report.errors > 0 {
        crate::exit::ERROR
    } else {
        u8::from(report.missing > report.ignored)
    }))
}

/// Totals and the lines to print, in walk order.
struct Report<'run> {
    files: &'run [TreeFile],
    results: &'run [FileResult],
    patterns: &'run [Pattern],
    walk_errors: &'run [(PathBuf, String)],
    patched: usize,
    restored_in_place: usize,
    unchanged: usize,
    skipped: usize,
    missing: usize,
    ignored: usize,
    errors: usize,
    interrupted: usize,
}

impl<'run> Report<'run> {
    fn new(
        files: &'run [TreeFile],
        results: &'run [FileResult],
        patterns: &'run [Pattern],
        walk_errors: &'run [(PathBuf, String)],
    ) -> Self {
        let mut report = Self {
            files,
            results,
            patterns,
            walk_errors,
            patched: 0,
            restored_in_place: 0,
            unchanged: 0,
            skipped: 0,
            missing: 0,
            ignored: 0,
            errors: walk_errors.len(),
            interrupted: 0,
        };
        for (file, result) in files.iter().zip(results) {
            match result {
                // Another name of a file is counted once, under its first name.
                FileResult::HardLink { .. } => {}
                // Files that are not ELF are counted only where a note names them.
                FileResult::Skipped(skip) => {
                    report.skipped += usize::from(is_noted(&file.path, skip));
                }
                FileResult::Interrupted => report.interrupted += 1,
                FileResult::Relinked { relink, .. } => {
                    if relink.changes_file() {
                        report.patched += 1;
                        if relink.is_restore_only() {
                            report.restored_in_place += 1;
                        }
                    } else {
                        report.unchanged += 1;
                    }
                    for dependency in relink.missing() {
                        report.missing += 1;
                        if report.ignored_by(dependency).is_some() {
                            report.ignored += 1;
                        }
                    }
                }
                FileResult::Failed(_) => report.errors += 1,
            }
        }
        report
    }

    /// The first pattern matching the dependency's name (of a `.note.dlopen` group, any
    /// alternative's).
    fn ignored_by(&self, dependency: &Dependency) -> Option<&'run Pattern> {
        let names: Vec<&[u8]> = if dependency.alternatives.is_empty() {
            vec![&dependency.name]
        } else {
            dependency.alternatives.iter().map(Vec::as_slice).collect()
        };
        self.patterns.iter().find(|pattern| {
            names.iter().any(|name| {
                let name = name.rsplit(|&byte| byte == b'/').next().unwrap_or(name);
                pattern.matches(name)
            })
        })
    }

    fn print(&self, global: &GlobalArgs, args: &RelinkArgs) -> anyhow::Result<()> {
        let mut out = Output::new();
        for (path, message) in self.walk_errors {
            if global.json {
                out.json(&json!({"type": "error", "path": path_value(path), "message": message}))?;
            } else {
                // The walk's message names the path already.
                output::entry_error(message);
            }
        }
        for (file, result) in self.files.iter().zip(self.results) {
            let path = &file.path;
            match result {
                FileResult::HardLink { first, relinked } => {
                    // Other names of files that are not ELF (or failed) say nothing new.
                    if !matches!(self.results[*first], FileResult::Relinked { .. }) {
                        continue;
                    }
                    let first = &self.files[*first].path;
                    if global.json {
                        out.json(&json!({
                            "type": "hard_link",
                            "path": path_value(path),
                            "first": path_value(first),
                            "relinked": relinked,
                        }))?;
                    } else if *relinked && !global.quiet {
                        out.line(
                            format!(
                                "linked {} to {} again (hard link)",
                                output::escaped(path),
                                output::escaped(first)
                            )
                            .as_bytes(),
                        )?;
                    }
                }
                FileResult::Interrupted => {}
                FileResult::Skipped(skip) => {
                    if !is_noted(path, skip) {
                        continue;
                    }
                    if global.json {
                        out.json(&json!({
                            "type": "skip",
                            "path": path_value(path),
                            "reason": skip.to_string(),
                        }))?;
                    } else {
                        output::message(
                            global.quiet,
                            &format!("note: skipping {}: {skip}", path.display()),
                        );
                    }
                }
                FileResult::Failed(message) => {
                    if global.json {
                        out.json(
                            &json!({"type": "error", "path": path_value(path), "message": message}),
                        )?;
                    } else {
                        output::entry_error(message);
                    }
                }
                FileResult::Relinked { relink, outcome } => {
                    self.print_relink(&mut out, global, args, path, relink, *outcome)?;
                }
            }
        }
        if global.json {
            out.json(&json!({
                "type": "summary",
                "dry_run": args.dry_run,
                "patched": self.patched,
                "restored_in_place": self.restored_in_place,
                "unchanged": self.unchanged,
                "skipped": self.skipped,
                "missing": self.missing,
                "ignored": self.ignored,
                "interrupted": self.interrupted,
                "errors": self.errors,
            }))?;
        }
        out.flush()?;
        if !global.json {
            output::message(
                global.quiet,
                &format!(
                    "{} {} files ({} restored in place), {} unchanged, {} skipped, {} missing dependencies ({} ignored), {}{} errors",
                    if args.dry_run {
                        "would patch"
                    } else {
                        "patched"
                    },
                    self.patched,
                    self.restored_in_place,
                    self.unchanged,
                    self.skipped,
                    self.missing,
                    self.ignored,
                    if self.interrupted > 0 {
                        format!("{} files left unchanged by the signal, ", self.interrupted)
                    } else {
                        String::new()
                    },
                    self.errors,
                ),
            );
        }
        Ok(())
    }

    fn print_relink(
        &self,
        out: &mut Output,
        global: &GlobalArgs,
        args: &RelinkArgs,
        path: &Path,
        relink: &Relink,
        outcome: Option<Outcome>,
    ) -> anyhow::Result<()> {
        let action = match (relink.changes_file(), args.dry_run) {
            (false, _) => "unchanged",
            (true, true) => "would_patch",
            (true, false) => "patched",
        };
        if global.json {
            out.json(&json!({
                "type": "relink",
                "path": path_value(path),
                "action": action,
                "write": match outcome {
                    Some(Outcome::InPlace { .. }) => "in_place",
                    Some(Outcome::Relayout { .. }) => "relayout",
                    Some(Outcome::Unchanged) | None => "none",
                },
                "restored_entries": relink.restored_entries,
                "run_path_old": relink.old_run_path.as_deref().map(bytes_value),
                "run_path_new": relink.new_run_path.as_deref().map(bytes_value),
                "interpreter_old": relink.old_interpreter.as_deref().map(bytes_value),
                "interpreter_new": relink.new_interpreter.as_deref().map(bytes_value),
                "dependencies": relink.dependencies.iter().map(dependency_value).collect::<Vec<_>>(),
            }))?;
        } else if relink.changes_file() && !global.quiet {
            let mut line = format!(
                "{} {}:",
                if args.dry_run {
                    "would patch"
                } else {
                    "patched"
                },
                output::escaped(path)
            )
            .into_bytes();
            if relink.new_run_path != relink.old_run_path {
                line.extend_from_slice(b" run path ");
                line.extend_from_slice(relink.old_run_path.as_deref().unwrap_or(b"(none)"));
                line.extend_from_slice(b" -> ");
                line.extend_from_slice(relink.new_run_path.as_deref().unwrap_or(b"(none)"));
            }
            if let Some(interpreter) = &relink.edits.interpreter {
                line.extend_from_slice(b" interpreter -> ");
                line.extend_from_slice(interpreter);
            }
            if relink.is_restore_only() {
                line.extend_from_slice(b" (restored in place)");
            }
            out.line(&line)?;
        }
        for dependency in relink.missing() {
            let ignored = self.ignored_by(dependency);
            if global.json {
                out.json(&json!({
                    "type": "missing",
                    "path": path_value(path),
                    "name": bytes_value(&dependency.name),
                    "kind": kind_name(&dependency.kind),
                    "ignored": ignored.is_some(),
                }))?;
                continue;
            }
            let name = missing_name(dependency);
            let hint = match &dependency.resolution {
                Resolution::Missing {
                    same_soname: Some(library),
                } => format!(
                    " ({} has this soname, but no file of that name is next to it)",
                    library.display()
                ),
                _ => String::new(),
            };
            match ignored {
                Some(pattern) => output::message(
                    global.quiet,
                    &format!(
                        "warning: {}: {name} not found (ignored by `{}`){hint}",
                        path.display(),
                        String::from_utf8_lossy(pattern.as_bytes())
                    ),
                ),
                None => output::entry_error(&format!("{}: {name} not found{hint}", path.display())),
            }
        }
        Ok(())
    }
}

/// Whether a skipped file is reported (and counted): non-ELF files are the bulk of a venv, so
/// only the ones named like libraries are.
fn is_noted(path: &Path, skip: &Skip) -> bool {
    *skip != Skip::NotElf
        || path
            .file_name()
            .is_some_and(|name| name.as_bytes().windows(3).any(|w| w == b".so"))
}

/// How a missing dependency is named: a `.note.dlopen` group with several alternatives as
/// `any(a, b)`, as autoPatchelfHook does.
fn missing_name(dependency: &Dependency) -> String {
    if dependency.alternatives.len() > 1 {
        let names: Vec<String> = dependency
            .alternatives
            .iter()
            .map(|name| String::from_utf8_lossy(name).into_owned())
            .collect();
        format!("any({})", names.join(", "))
    } else {
        String::from_utf8_lossy(&dependency.name).into_owned()
    }
}

fn kind_name(kind: &DependencyKind) -> &'static str {
    match kind {
        DependencyKind::Needed => "needed",
        DependencyKind::Dlopen => "dlopen",
    }
}

fn dependency_value(dependency: &Dependency) -> Value {
    let (resolution, dir): (&str, Option<Value>) = match &dependency.resolution {
        Resolution::Absolute => ("absolute", None),
        Resolution::Libc => ("libc", None),
        Resolution::Origin { entry } => ("origin", Some(bytes_value(entry))),
        Resolution::Library { dir, .. } => ("library", Some(path_value(dir))),
        Resolution::Missing { .. } => ("missing", None),
    };
    let mut value = json!({
        "name": bytes_value(&dependency.name),
        "kind": kind_name(&dependency.kind),
        "resolution": resolution,
        "dir": dir,
    });
    if !dependency.alternatives.is_empty() {
        value["alternatives"] = dependency
            .alternatives
            .iter()
            .map(|name| bytes_value(name))
            .collect();
    }
    value
}
