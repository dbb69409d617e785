//! ELF header parsing and edit planning with `storepatch_elf`, on a shared library gcc builds at
//! start-up (like a Python extension module: a store-path RUNPATH, a few `DT_NEEDED`, a soname).
//!
//! - `parse`: `ElfInfo::parse` of that library, and of this bench binary (a large Rust executable,
//!   to show the cost does not grow with the file size).
//! - `plan`: `plan` for a scrub-style run-path edit of the same length (in place), one that shrinks
//!   it (in place, NUL padded), and one that grows it (a relayout that copies the file).
//!
//! Without a working `gcc` the library benches are skipped with a message on stderr.
use std::hint::black_box;
use std::path::Path;
use std::process::Command;

use criterion::{Criterion, criterion_group, criterion_main};
use storepatch_elf::{ElfEdits, ElfInfo, Options, Patch, RunPathEdit, plan};

const RUN_PATH: &str = "/nix/store/0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1-zlib-1.3.1/lib:\
                        /nix/store/9v5d40jyvmwgnq1nj8f19ji2rcc5dksd-openssl-3.0.14/lib:\
                        /nix/store/xq2ml9f3q3c5j4p2ibp0dxzdmpdkgbcl-libffi-3.4.6/lib";

const SOURCE: &str = r"
#include <math.h>
#include <string.h>
static int counter;
int ext_add(int a, int b) { counter++; return a + b; }
double ext_root(double x) { return sqrt(x); }
size_t ext_len(const char *text) { return strlen(text); }
int ext_count(void) { return counter; }
";

/// Builds the library in `dir`; `None` (with a message) when gcc is missing or fails.
fn build_library(dir: &Path) -> Option<Vec<u8>> {
    let source = dir.join("ext.c");
    let library = dir.join("libext.so");
    fs_err::write(&source, SOURCE).expect("writing the C source");
    let status = Command::new("gcc")
        .args(["-O2", "-shared", "-fPIC", "-o"])
        .arg(&library)
        .arg(&source)
        .arg(format!("-Wl,-rpath,{RUN_PATH}"))
        .args(["-Wl,--enable-new-dtags", "-Wl,-soname,libext.so.1", "-lm"])
        .status();
    match status {
        Ok(status) if status.success() => Some(fs_err::read(&library).expect("reading libext.so")),
        outcome => {
            #[expect(clippy::print_stderr, reason = "criterion has no skip message")]
            {
                eprintln!("skipping the shared-library benches: gcc failed ({outcome:?})");
            }
            None
        }
    }
}

fn run_path_edits(length: usize) -> ElfEdits {
    ElfEdits {
        run_path: Some(RunPathEdit::Set(vec![b'e'; length])),
        ..ElfEdits::default()
    }
}

fn parse(criterion: &mut Criterion, library: Option<&[u8]>) {
    let mut group = criterion.benchmark_group("parse");
    if let Some(library) = library {
        let info = ElfInfo::parse(library).expect("parsing libext.so");
        assert_eq!(info.runpath.as_deref(), Some(RUN_PATH.as_bytes()));
        group.bench_function("gcc_shared_library", |bencher| {
            bencher.iter(|| ElfInfo::parse(black_box(library)));
        });
    }
    let executable =
        fs_err::read(std::env::current_exe().expect("the bench binary")).expect("reading it");
    ElfInfo::parse(&executable).expect("parsing the bench binary");
    group.bench_function("rust_executable", |bencher| {
        bencher.iter(|| ElfInfo::parse(black_box(&executable)));
    });
    group.finish();
}

fn planning(criterion: &mut Criterion, library: &[u8]) {
    let options = Options::default();
    let cases = [
        ("same_length_in_place", run_path_edits(RUN_PATH.len()), true),
        ("shorter_in_place", run_path_edits(20), true),
        (
            "longer_relayout",
            run_path_edits(RUN_PATH.len() + 200),
            false,
        ),
    ];
    let mut group = criterion.benchmark_group("plan");
    for (name, edits, in_place) in cases {
        let patch = plan(library, &edits, &options).expect("planning");
        assert_eq!(matches!(patch, Patch::InPlace(_)), in_place, "{name}");
        group.bench_function(name, |bencher| {
            bencher.iter(|| plan(black_box(library), black_box(&edits), &options));
        });
    }
    group.finish();
}

fn benches(criterion: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let library = build_library(dir.path());
    parse(criterion, library.as_deref());
    if let Some(library) = &library {
        planning(criterion, library);
    }
}

criterion_group!(elf, benches);
criterion_main!(elf);
