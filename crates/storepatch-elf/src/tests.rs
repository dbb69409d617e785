//! Unit tests over synthetic files in all four class/byte-order combinations, over real system
//! binaries, and a bit-flip loop that feeds damaged files to the parser and planner.
use crate::{ElfClass, ElfEdits, ElfInfo, Endianness, Options, Patch, RunPathEdit, plan};

/// Writes numbers in one class and byte order.
struct Builder {
    is64: bool,
    little: bool,
    out: Vec<u8>,
}

impl Builder {
    fn u16(&mut self, value: u16) {
        let bytes = if self.little {
            value.to_le_bytes()
        } else {
            value.to_be_bytes()
        };
        self.out.extend_from_slice(&bytes);
    }

    fn u32(&mut self, value: u32) {
        let bytes = if self.little {
            value.to_le_bytes()
        } else {
            value.to_be_bytes()
        };
        self.out.extend_from_slice(&bytes);
    }

    fn word(&mut self, value: u64) {
        if self.is64 {
            let bytes = if self.little {
                value.to_le_bytes()
            } else {
                value.to_be_bytes()
            };
            self.out.extend_from_slice(&bytes);
        } else {
            self.u32(u32::try_from(value).unwrap());
        }
    }
}

const BASE: u64 = 0x10000;

/// A minimal shared object: ELF header, program headers (LOAD covering the file, DYNAMIC,
/// INTERP), the interpreter string, a dynamic section with two spare `DT_NULL` slots and a
/// string table. No section headers, like a file after sstrip.
fn synthetic(is64: bool, little: bool) -> Vec<u8> {
    let word = if is64 { 8u64 } else { 4 };
    let ehdr_size = if is64 { 64u64 } else { 52 };
    let phdr_size = if is64 { 56u64 } else { 32 };
    let phnum = 3u64;
    let interp = b"/lib/ld-test.so.1\0";
    let interp_at = ehdr_size + phnum * phdr_size;
    let dynamic_at = (interp_at + interp.len() as u64).next_multiple_of(word);
    let strings: &[u8] = b"\0libfoo.so.1\0/opt/old/lib:/opt/other/lib\0libbar.so\0";
    let entries: [(u64, u64); 6] = [
        (1, 1),                     // NEEDED libfoo.so.1
        (1, 41),                    // NEEDED libbar.so
        (29, 13),                   // RUNPATH
        (5, 0),                     // STRTAB, patched below
        (10, strings.len() as u64), // STRSZ
        (14, 1 + 3),                // SONAME "foo.so.1" (tail of libfoo.so.1)
    ];
    let slots = entries.len() as u64 + 3;
    let strtab_at = dynamic_at + slots * 2 * word;
    let total = strtab_at + strings.len() as u64;

    let mut b = Builder {
        is64,
        little,
        out: Vec::new(),
    };
    b.out.extend_from_slice(b"\x7fELF");
    b.out.push(if is64 { 2 } else { 1 });
    b.out.push(if little { 1 } else { 2 });
    b.out.push(1);
    b.out.resize(16, 0);
    b.u16(3); // ET_DYN
    b.u16(if is64 { 62 } else { 3 });
    b.u32(1);
    b.word(0); // entry
    b.word(ehdr_size); // phoff
    b.word(0); // shoff
    b.u32(0); // flags
    b.u16(u16::try_from(ehdr_size).unwrap());
    b.u16(u16::try_from(phdr_size).unwrap());
    b.u16(u16::try_from(phnum).unwrap());
    b.u16(if is64 { 64 } else { 40 });
    b.u16(0);
    b.u16(0);
    let phdr = |b: &mut Builder, p_type: u32, flags: u32, offset: u64, size: u64, align: u64| {
        b.u32(p_type);
        if b.is64 {
            b.u32(flags);
        }
        b.word(offset);
        b.word(BASE + offset);
        b.word(BASE + offset);
        b.word(size);
        b.word(size);
        if !b.is64 {
            b.u32(flags);
        }
        b.word(align);
    };
    phdr(&mut b, 3, 4, interp_at, interp.len() as u64, 1);
    phdr(&mut b, 1, 6, 0, total, 0x1000);
    phdr(&mut b, 2, 6, dynamic_at, slots * 2 * word, word);
    b.out.extend_from_slice(interp);
    b.out.resize(usize::try_from(dynamic_at).unwrap(), 0);
    for (tag, value) in entries {
        b.word(tag);
        b.word(if tag == 5 { BASE + strtab_at } else { value });
    }
    for _ in entries.len()..usize::try_from(slots).unwrap() {
        b.word(0);
        b.word(0);
    }
    b.out.extend_from_slice(strings);
    assert_eq!(b.out.len() as u64, total);
    b.out
}

fn apply(bytes: &[u8], patch: Patch) -> Vec<u8> {
    match patch {
        Patch::Unchanged => bytes.to_vec(),
        Patch::InPlace(writes) => {
            let mut copy = bytes.to_vec();
            for write in writes {
                let at = usize::try_from(write.offset).unwrap();
                copy[at..at + write.bytes.len()].copy_from_slice(&write.bytes);
            }
            copy
        }
        Patch::Relayout(new) => new,
    }
}

fn edit(bytes: &[u8], edits: &ElfEdits) -> (Patch, Vec<u8>) {
    let patch = plan(bytes, edits, &Options::default()).unwrap();
    let new = apply(bytes, patch.clone());
    (patch, new)
}

fn set_runpath(value: &[u8]) -> ElfEdits {
    ElfEdits {
        run_path: Some(RunPathEdit::Set(value.to_vec())),
        ..ElfEdits::default()
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

const COMBINATIONS: [(bool, bool); 4] =
    [(true, true), (true, false), (false, true), (false, false)];

#[test]
fn parses_every_class_and_byte_order() {
    for (is64, little) in COMBINATIONS {
        let info = ElfInfo::parse(&synthetic(is64, little)).unwrap();
        assert_eq!(
            info.class,
            if is64 {
                ElfClass::Elf64
            } else {
                ElfClass::Elf32
            }
        );
        assert_eq!(
            info.endianness,
            if little {
                Endianness::Little
            } else {
                Endianness::Big
            }
        );
        assert_eq!(
            info.needed,
            vec![b"libfoo.so.1".to_vec(), b"libbar.so".to_vec()]
        );
        assert_eq!(
            info.runpath.as_deref(),
            Some(&b"/opt/old/lib:/opt/other/lib"[..])
        );
        assert_eq!(info.soname.as_deref(), Some(&b"foo.so.1"[..]));
        assert_eq!(info.interpreter.as_deref(), Some(&b"/lib/ld-test.so.1"[..]));
        assert!(!info.has_section_headers);
        assert!(!info.is_static());
    }
}

#[test]
fn shorter_run_path_is_in_place_and_erases_the_old_one() {
    for (is64, little) in COMBINATIONS {
        let bytes = synthetic(is64, little);
        let (patch, new) = edit(&bytes, &set_runpath(b"/opt/new"));
        let Patch::InPlace(writes) = patch else {
            panic!("expected an in-place patch");
        };
        let written: usize = writes.iter().map(|w| w.bytes.len()).sum();
        assert!(written <= 27, "{written} bytes written");
        assert_eq!(new.len(), bytes.len());
        assert!(!contains(&new, b"/opt/old"));
        let info = ElfInfo::parse(&new).unwrap();
        assert_eq!(info.runpath.as_deref(), Some(&b"/opt/new"[..]));
        assert_eq!(info.needed.len(), 2);
        // Again: nothing to do.
        assert_eq!(
            plan(&new, &set_runpath(b"/opt/new"), &Options::default()).unwrap(),
            Patch::Unchanged
        );
    }
}

#[test]
fn tail_shared_string_is_not_overwritten() {
    for (is64, little) in COMBINATIONS {
        let bytes = synthetic(is64, little);
        // SONAME points into the tail of "libfoo.so.1": replacing that NEEDED in place would
        // change the soname too.
        let edits = ElfEdits {
            replace_needed: vec![(b"libfoo.so.1".to_vec(), b"libx.so".to_vec())],
            ..ElfEdits::default()
        };
        let (_, new) = edit(&bytes, &edits);
        let info = ElfInfo::parse(&new).unwrap();
        assert_eq!(
            info.needed,
            vec![b"libx.so".to_vec(), b"libbar.so".to_vec()]
        );
        assert_eq!(info.soname.as_deref(), Some(&b"foo.so.1"[..]));
    }
}

#[test]
fn growth_keeps_segments_aligned_and_reuses_the_last() {
    for (is64, little) in COMBINATIONS {
        let bytes = synthetic(is64, little);
        let long = vec![b'x'; 300];
        let (patch, new) = edit(&bytes, &set_runpath(&long));
        assert!(matches!(patch, Patch::Relayout(_)));
        let info = ElfInfo::parse(&new).unwrap();
        assert_eq!(info.runpath.as_deref(), Some(&long[..]));
        assert_eq!(info.soname.as_deref(), Some(&b"foo.so.1"[..]));
        assert_eq!(info.interpreter.as_deref(), Some(&b"/lib/ld-test.so.1"[..]));
        let parsed = crate::read::Parsed::parse(&new).unwrap();
        let loads: Vec<_> = parsed
            .segments
            .iter()
            .filter(|s| s.p_type == goblin::elf::program_header::PT_LOAD)
            .collect();
        // The single LOAD of the synthetic file ends the file, so it simply grows.
        assert_eq!(loads.len(), 1);
        for load in &loads {
            assert_eq!((load.vaddr - load.offset) % load.align, 0);
            assert!(load.align >= 0x1000);
        }
        // The program header table stays covered by a LOAD.
        let table_end = parsed.phoff + parsed.segments.len() as u64 * parsed.codec.phdr_size();
        assert!(
            loads
                .iter()
                .any(|l| l.offset <= parsed.phoff && table_end <= l.offset + l.filesz)
        );
        // A second growth extends that segment instead of adding another.
        let longer = vec![b'y'; 600];
        let (_, newer) = edit(&new, &set_runpath(&longer));
        let parsed = crate::read::Parsed::parse(&newer).unwrap();
        let count = parsed
            .segments
            .iter()
            .filter(|s| s.p_type == goblin::elf::program_header::PT_LOAD)
            .count();
        assert_eq!(count, 1);
        assert_eq!(
            ElfInfo::parse(&newer).unwrap().runpath.as_deref(),
            Some(&longer[..])
        );
    }
}

#[test]
fn adding_entries_uses_spare_null_slots() {
    for (is64, little) in COMBINATIONS {
        let bytes = synthetic(is64, little);
        let edits = ElfEdits {
            add_needed: vec![b"libbar.so".to_vec(), b"foo.so.1".to_vec()],
            no_default_lib: true,
            ..ElfEdits::default()
        };
        // Both strings exist already, and two spare slots hold the two new entries.
        let (patch, new) = edit(&bytes, &edits);
        assert!(matches!(patch, Patch::InPlace(_)), "{patch:?}");
        let info = ElfInfo::parse(&new).unwrap();
        assert_eq!(
            info.needed,
            vec![
                b"foo.so.1".to_vec(),
                b"libfoo.so.1".to_vec(),
                b"libbar.so".to_vec()
            ]
        );
        // One more entry than fits: the dynamic section moves.
        let edits = ElfEdits {
            add_needed: vec![b"a.so".to_vec(), b"b.so".to_vec(), b"c.so".to_vec()],
            ..ElfEdits::default()
        };
        let (patch, new) = edit(&bytes, &edits);
        assert!(matches!(patch, Patch::Relayout(_)));
        assert_eq!(ElfInfo::parse(&new).unwrap().needed.len(), 5);
    }
}

#[test]
fn long_interpreter_moves() {
    for (is64, little) in COMBINATIONS {
        let bytes = synthetic(is64, little);
        let interpreter =
            b"/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-glibc/lib/ld-linux.so.2".to_vec();
        let edits = ElfEdits {
            interpreter: Some(interpreter.clone()),
            ..ElfEdits::default()
        };
        let (_, new) = edit(&bytes, &edits);
        let info = ElfInfo::parse(&new).unwrap();
        assert_eq!(info.interpreter, Some(interpreter));
        assert!(!contains(&new, b"ld-test"));
    }
}

#[test]
fn remove_run_path_erases_it() {
    let bytes = synthetic(true, true);
    let edits = ElfEdits {
        run_path: Some(RunPathEdit::Remove),
        ..ElfEdits::default()
    };
    let (patch, new) = edit(&bytes, &edits);
    assert!(matches!(patch, Patch::InPlace(_)));
    assert!(!contains(&new, b"/opt/old"));
    assert_eq!(ElfInfo::parse(&new).unwrap().run_path(), None);
}

#[test]
fn truncations_are_errors_not_panics() {
    for (is64, little) in COMBINATIONS {
        let bytes = synthetic(is64, little);
        for len in 0..bytes.len() {
            let _ = ElfInfo::parse(&bytes[..len]);
            let _ = plan(
                &bytes[..len],
                &set_runpath(&[b'z'; 100]),
                &Options::default(),
            );
        }
    }
}

/// A tiny deterministic generator (xorshift) so failures reproduce.
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

/// Flips bytes in real and synthetic ELF files; parsing and planning must never panic, and
/// every relayout that is produced must parse again.
#[test]
fn bit_flips_never_panic() {
    let mut corpus: Vec<Vec<u8>> = COMBINATIONS
        .iter()
        .map(|&(is64, little)| synthetic(is64, little))
        .collect();
    for path in ["/bin/true", "/usr/bin/true"] {
        if let Ok(bytes) = fs_err::read(path)
            && bytes.len() < 1 << 20
        {
            corpus.push(bytes);
            break;
        }
    }
    // A file with a resolution cache note, which a run path edit removes.
    let cache = ElfEdits {
        resolution_cache: Some(b"libc.so.6\0=/lib/libc.so.6\0\0".to_vec()),
        ..ElfEdits::default()
    };
    if let Some(Ok(Patch::Relayout(cached))) = corpus
        .last()
        .map(|bytes| plan(bytes, &cache, &Options::default()))
    {
        assert!(ElfInfo::parse(&cached).unwrap().resolution_cache.is_some());
        corpus.push(cached);
    }
    let edit_sets = [
        set_runpath(&[b'r'; 200]),
        set_runpath(b"/x"),
        cache,
        ElfEdits {
            interpreter: Some(vec![b'i'; 90]),
            add_needed: vec![b"libz.so.1".to_vec()],
            replace_needed: vec![(b"libc.so.6".to_vec(), b"libd.so.6".to_vec())],
            soname: Some(b"libsoname.so".to_vec()),
            no_default_lib: true,
            ..ElfEdits::default()
        },
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let iterations = 20_000;
    for iteration in 0..iterations {
        let original = &corpus[iteration % corpus.len()];
        let mut bytes = original.clone();
        let flips = 1 + rng.below(8);
        for _ in 0..flips {
            // Mostly headers and the first pages, where the structures are.
            let limit = if rng.below(4) == 0 {
                bytes.len()
            } else {
                bytes.len().min(4096)
            };
            let at = rng.below(limit);
            bytes[at] = u8::try_from(rng.next() & 0xff).unwrap();
        }
        let _ = ElfInfo::parse(&bytes);
        let edits = &edit_sets[iteration % edit_sets.len()];
        if let Ok(Patch::Relayout(new)) = plan(&bytes, edits, &Options::default()) {
            ElfInfo::parse(&new).expect("a relayout always parses");
        }
    }
}

#[test]
fn real_binary_round_trip() {
    let Ok(bytes) = fs_err::read(std::env::current_exe().unwrap()) else {
        return;
    };
    let info = ElfInfo::parse(&bytes).unwrap();
    assert!(!info.needed.is_empty());
    let (_, new) = edit(&bytes, &set_runpath(&[b'/'; 500]));
    let patched = ElfInfo::parse(&new).unwrap();
    assert_eq!(patched.needed, info.needed);
    assert_eq!(patched.interpreter, info.interpreter);
    assert_eq!(patched.run_path(), Some(&[b'/'; 500][..]));
}

#[test]
fn new_segment_uses_the_abi_page_size() {
    // aarch64, and an executable LOAD at the end so that a new segment is needed.
    let mut bytes = synthetic(true, true);
    bytes[18..20].copy_from_slice(&183u16.to_le_bytes());
    let load_flags = 64 + 56 + 4;
    bytes[load_flags..load_flags + 4].copy_from_slice(&5u32.to_le_bytes());
    for (options, align) in [
        (Options::default(), 0x10000),
        (
            Options {
                page_size: Some(0x4000),
                ..Options::default()
            },
            0x4000,
        ),
    ] {
        let patch = plan(&bytes, &set_runpath(&[b'q'; 200]), &options).unwrap();
        let new = apply(&bytes, patch);
        let parsed = crate::read::Parsed::parse(&new).unwrap();
        let loads: Vec<_> = parsed
            .segments
            .iter()
            .filter(|s| s.p_type == goblin::elf::program_header::PT_LOAD)
            .collect();
        assert_eq!(loads.len(), 2);
        assert_eq!(loads[1].align, align);
        assert_eq!((loads[1].vaddr - loads[1].offset) % align, 0);
        assert!(loads[1].vaddr >= (loads[0].vaddr + loads[0].memsz).next_multiple_of(align));
        assert_eq!(
            ElfInfo::parse(&new).unwrap().runpath.as_deref(),
            Some(&[b'q'; 200][..])
        );
    }
    let bad = Options {
        page_size: Some(1000),
        ..Options::default()
    };
    assert!(plan(&bytes, &set_runpath(&[b'q'; 200]), &bad).is_err());
}

/// Found by the `patch_elf` fuzz target: a note segment claiming a size near `u64::MAX` made an
/// addition in the relayout overflow. Byte 0 of the input selects the edits, as in the target
/// (5: remove the run path, set no-default-lib, set the OS ABI).
#[test]
fn fuzz_regression_note_segment_size_overflow() {
    let input = include_bytes!("../testdata/fuzz-patch-elf-note-overflow.bin");
    let (&op, file) = input.split_first().expect("input has an op byte");
    assert_eq!(op % 6, 5);
    let edits = ElfEdits {
        run_path: Some(RunPathEdit::Remove),
        no_default_lib: true,
        os_abi: Some(3),
        ..ElfEdits::default()
    };
    // Any outcome but a panic is right; a relayout must parse again.
    if let Ok(Patch::Relayout(new)) = plan(file, &edits, &Options::default()) {
        ElfInfo::parse(&new).expect("a relayout parses");
    }
}

/// `apply_to_file` streams a relayout to disk (kernel copy of the unchanged bytes, then the
/// writes and the new segment); the file it writes is byte for byte what `plan` builds in memory.
#[test]
fn streamed_relayout_equals_the_planned_one() {
    let dir = tempfile::tempdir().unwrap();
    for (is64, little) in COMBINATIONS {
        let bytes = synthetic(is64, little);
        for edits in [
            set_runpath(&[b'x'; 300]),
            ElfEdits {
                interpreter: Some(vec![b'i'; 200]),
                add_needed: vec![vec![b'n'; 90]],
                ..ElfEdits::default()
            },
        ] {
            let Ok(Patch::Relayout(expected)) = plan(&bytes, &edits, &Options::default()) else {
                panic!("expected a relayout");
            };
            let path = dir.path().join("lib.so");
            fs_err::write(&path, &bytes).unwrap();
            let outcome = crate::apply_to_file(&path, &edits, &Options::default()).unwrap();
            assert!(
                matches!(outcome, crate::Outcome::Relayout { .. }),
                "{outcome:?}"
            );
            assert!(
                fs_err::read(&path).unwrap() == expected,
                "is64 {is64}, little {little}"
            );
        }
    }
}

/// Every way of writing a patch to a file gives the bytes `plan` describes: in place, through
/// bytes the caller read ([`crate::apply_to_read_file`]), as a copy for a file with another name
/// (which keeps the old bytes) and into a separate output; in-place patches and relayouts (of a
/// real linked binary too, whose relayout rewrites hundreds of header fields).
#[test]
fn every_write_path_gives_the_planned_bytes() {
    use crate::Outcome;
    let dir = tempfile::tempdir().unwrap();
    let mut inputs: Vec<(String, Vec<u8>)> = COMBINATIONS
        .iter()
        .map(|&(is64, little)| {
            (
                format!("is64 {is64} little {little}"),
                synthetic(is64, little),
            )
        })
        .collect();
    inputs.push((
        "this test binary".to_owned(),
        fs_err::read(std::env::current_exe().unwrap()).unwrap(),
    ));
    let edit_sets = [
        set_runpath(b"/opt/new"),
        set_runpath(&[b'x'; 300]),
        ElfEdits {
            interpreter: Some(vec![b'i'; 200]),
            add_needed: vec![vec![b'n'; 90]],
            ..ElfEdits::default()
        },
    ];
    let options = Options::default();
    for (name, bytes) in &inputs {
        for edits in &edit_sets {
            let (patch, expected) = edit(bytes, edits);
            let relayout = matches!(patch, Patch::Relayout(_));
            let check = |outcome: Outcome, path: &std::path::Path, how: &str| {
                match outcome {
                    Outcome::Relayout { new_size, .. } => {
                        assert!(relayout, "{name}, {how}: {outcome:?}");
                        assert_eq!(new_size, expected.len() as u64, "{name}, {how}");
                    }
                    Outcome::InPlace { .. } => assert!(!relayout, "{name}, {how}: {outcome:?}"),
                    Outcome::Unchanged => panic!("{name}, {how}: unchanged"),
                }
                assert!(
                    fs_err::read(path).unwrap() == expected,
                    "{name}, {how}: not the planned bytes"
                );
            };
            let path = dir.path().join("lib.so");
            fs_err::write(&path, bytes).unwrap();
            check(
                crate::apply_to_file(&path, edits, &options).unwrap(),
                &path,
                "apply_to_file",
            );

            fs_err::write(&path, bytes).unwrap();
            let outcome = crate::apply_to_read_file(&path, bytes, edits, &options).unwrap();
            check(outcome, &path, "apply_to_read_file");

            fs_err::write(&path, bytes).unwrap();
            let other = dir.path().join("other-name.so");
            fs_err::hard_link(&path, &other).unwrap();
            check(
                crate::apply_to_file(&path, edits, &options).unwrap(),
                &path,
                "hard link",
            );
            assert!(
                fs_err::read(&other).unwrap() == *bytes,
                "{name}: the other name changed"
            );
            fs_err::remove_file(&other).unwrap();

            fs_err::write(&path, bytes).unwrap();
            let output = dir.path().join("output.so");
            let outcome = crate::apply_to_file_as(&path, &output, edits, &options).unwrap();
            check(outcome, &output, "separate output");
            assert!(
                fs_err::read(&path).unwrap() == *bytes,
                "{name}: the input changed"
            );
            fs_err::remove_file(&output).unwrap();
        }
    }
    // Nothing else was left in the directory (no temporary file).
    let left: Vec<_> = fs_err::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(left, ["lib.so"]);
}

/// A write lands in a window only where the two overlap, whichever side sticks out.
#[test]
fn writes_apply_only_where_they_overlap_the_window() {
    let write = crate::plan::Write {
        offset: 10,
        bytes: b"abcdef".to_vec(),
    };
    let cases: [(u64, usize, &[u8], usize); 5] = [
        (0, 20, b"..........abcdef....", 6),
        (12, 4, b"cdef", 4),
        (8, 5, b"..abc", 3),
        (14, 6, b"ef....", 2),
        (16, 4, b"....", 0),
    ];
    for (start, len, expected, copied) in cases {
        let mut window = vec![b'.'; len];
        assert_eq!(
            write.apply_within(&mut window, start),
            copied,
            "window at {start}"
        );
        assert_eq!(window, expected, "window at {start}");
    }
}
