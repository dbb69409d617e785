//! Corruption loop over real files: a gcc-built library and program, and the cross sysroots'
//! libraries (32-bit and 64-bit, little- and big-endian) where they are installed. Bytes of
//! each are overwritten, and the damaged copy goes through the parser, everything the printing
//! commands read, the warnings, and a plan for an edit. Nothing may panic; an accepted edit
//! must parse again; and where `readelf` finds nothing wrong with the damaged input, it must
//! find nothing wrong with the edited output either.
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{ElfEdits, ElfInfo, Options, Patch, RunPathEdit, plan, relayout_warnings};

/// xorshift64: reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: usize) -> usize {
        usize::try_from(self.next() % bound as u64).unwrap()
    }
}

const LIBRARY_SOURCE: &str = "#include <stdio.h>\nint answer(void) { puts(\"x\"); return 42; }\n";

/// The real files the loop damages: built with gcc here, plus small cross-architecture ones.
fn corpus(dir: &Path) -> Vec<(String, Vec<u8>)> {
    fs_err::write(dir.join("answer.c"), LIBRARY_SOURCE).unwrap();
    fs_err::write(dir.join("main.c"), "int main(void) { return 0; }\n").unwrap();
    let mut files = Vec::new();
    for (name, args) in [
        (
            "libanswer.so",
            &[
                "-shared",
                "-fPIC",
                "answer.c",
                "-Wl,-soname,libanswer.so",
                "-Wl,-rpath,/old",
            ][..],
        ),
        ("main", &["main.c", "-Wl,-rpath,/old/run/path"]),
    ] {
        let output = Command::new("gcc")
            .current_dir(dir)
            .args(args)
            .arg("-o")
            .arg(name)
            .output()
            .expect("gcc runs");
        assert!(output.status.success(), "gcc {args:?} failed");
        files.push((name.to_owned(), fs_err::read(dir.join(name)).unwrap()));
    }
    for sysroot in ["i686", "powerpc", "s390x", "aarch64"] {
        let path = format!("/usr/{sysroot}-linux-gnu/lib/libdl.so.2");
        if let Ok(bytes) = fs_err::read(&path) {
            files.push((path, bytes));
        }
    }
    files
}

/// The edits planned for damaged files, one per iteration in turn.
fn edit_sets() -> Vec<ElfEdits> {
    vec![
        ElfEdits {
            run_path: Some(RunPathEdit::Set(vec![b'r'; 300])),
            ..ElfEdits::default()
        },
        ElfEdits {
            run_path: Some(RunPathEdit::Set(b"/x".to_vec())),
            ..ElfEdits::default()
        },
        ElfEdits {
            replace_needed: vec![(b"libc.so.6".to_vec(), b"libc-longer-name.so.6".to_vec())],
            soname: Some(b"libsoname.so".to_vec()),
            add_needed: vec![b"libm.so.6".to_vec()],
            ..ElfEdits::default()
        },
        ElfEdits {
            interpreter: Some(vec![b'i'; 120]),
            run_path: Some(RunPathEdit::Remove),
            ..ElfEdits::default()
        },
        ElfEdits {
            add_debug_tag: true,
            execstack: Some(true),
            no_default_lib: true,
            os_abi: Some(3),
            ..ElfEdits::default()
        },
    ]
}

/// Everything the printing commands use of a parsed file.
fn read_everything(info: &ElfInfo) -> usize {
    let mut seen = info.needed.iter().map(Vec::len).sum::<usize>();
    seen += info.run_path().map_or(0, <[u8]>::len);
    seen += info.soname.as_ref().map_or(0, Vec::len);
    seen += info.interpreter.as_ref().map_or(0, Vec::len);
    seen += info.dlopen.len() + usize::from(info.is_static()) + usize::from(info.has_dynamic);
    seen += usize::from(info.execstack.unwrap_or(false));
    seen += crate::os_abi_name(info.os_abi).map_or(0, str::len);
    seen
}

fn applied(bytes: &[u8], patch: Patch) -> Option<Vec<u8>> {
    match patch {
        Patch::Unchanged => None,
        Patch::InPlace(writes) => {
            let mut copy = bytes.to_vec();
            for write in writes {
                let at = usize::try_from(write.offset).unwrap();
                copy[at..at + write.bytes.len()].copy_from_slice(&write.bytes);
            }
            Some(copy)
        }
        Patch::Relayout(new) => Some(new),
    }
}

/// `readelf -a -W` on `bytes`: whether it ran and printed no warning.
fn readelf_clean(dir: &Path, name: &str, bytes: &[u8]) -> bool {
    let path = dir.join(name);
    fs_err::write(&path, bytes).unwrap();
    let output = Command::new("readelf")
        .args(["-a", "-W"])
        .arg(&path)
        .output()
        .expect("readelf runs");
    output.status.success() && output.stderr.is_empty()
}

#[test]
#[expect(
    clippy::print_stderr,
    reason = "the counts show how much the loop covered"
)]
fn corrupted_real_files_never_panic_and_edits_stay_readelf_clean() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus(dir.path());
    let edit_sets = edit_sets();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let budget = Duration::from_secs(4);
    let started = Instant::now();
    let (mut cases, mut accepted, mut edited, mut readelf_checked) = (0usize, 0usize, 0usize, 0);
    while cases < 20_000 && (cases < 2_000 || started.elapsed() < budget) {
        let (name, original) = &corpus[cases % corpus.len()];
        let mut bytes = original.clone();
        // Mostly the first pages, where the headers and dynamic structures are.
        for _ in 0..=rng.below(4) {
            let limit = if rng.below(4) == 0 {
                bytes.len()
            } else {
                bytes.len().min(4096)
            };
            let at = rng.below(limit);
            bytes[at] = u8::try_from(rng.next() & 0xff).unwrap();
        }
        if rng.below(50) == 0 {
            bytes.truncate(rng.below(bytes.len()));
        }
        cases += 1;
        let Ok(info) = ElfInfo::parse(&bytes) else {
            continue;
        };
        accepted += 1;
        assert!(read_everything(&info) < usize::MAX);
        let _ = relayout_warnings(&bytes);
        let edits = &edit_sets[cases % edit_sets.len()];
        let Ok(patch) = plan(&bytes, edits, &Options::default()) else {
            continue;
        };
        let Some(new) = applied(&bytes, patch) else {
            continue;
        };
        edited += 1;
        let reparsed = ElfInfo::parse(&new)
            .unwrap_or_else(|err| panic!("{name}, case {cases}: an edit does not parse: {err}"));
        assert_eq!(reparsed.machine, info.machine, "{name}, case {cases}");
        // readelf costs a process each: every 40th edit whose damaged input it finds clean.
        if edited % 40 == 0 && readelf_checked < 60 && readelf_clean(dir.path(), "in", &bytes) {
            readelf_checked += 1;
            assert!(
                readelf_clean(dir.path(), "out", &new),
                "{name}, case {cases}: readelf warns about the edit of a readelf-clean input"
            );
        }
    }
    assert!(accepted > 0 && edited > 0, "{cases} cases, none accepted");
    eprintln!(
        "{cases} damaged copies of {} files in {:?}: {accepted} parsed, {edited} edited, \
         {readelf_checked} checked with readelf",
        corpus.len(),
        started.elapsed()
    );
}
