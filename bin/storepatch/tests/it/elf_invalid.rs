//! `storepatch elf` on malformed ELF files, side by side with the real patchelf: each case is a
//! real gcc-built library with one field corrupted, and every command (printing, editing, and a
//! plain `--output` copy) must reject it with a message naming the file and the structure,
//! leaving no file behind, wherever patchelf rejects it or crashes. Valid files, from the real
//! system's libraries and programs, are never refused.
#![expect(
    clippy::print_stderr,
    reason = "a skipped check and the side-by-side table say so loudly"
)]
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{run, run_ok};

const LIBRARY_SOURCE: &str = "#include <stdio.h>\nint answer(void) { puts(\"x\"); return 42; }\n";
const PROGRAM_SOURCE: &str = "#include <stdio.h>\nextern int answer(void);\n\
    int main(void) { printf(\"answer=%d\\n\", answer()); return 0; }\n";

/// A gcc-built library (with a run path, a soname and a version need on libc) in a temporary
/// directory, and a symlink `patchelf` to the binary under test.
struct Library {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl Library {
    fn build() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs_err::write(dir.path().join("answer.c"), LIBRARY_SOURCE).unwrap();
        let path = dir.path().join("libanswer.so");
        run_ok(
            Command::new("gcc")
                .current_dir(dir.path())
                .args(["-shared", "-fPIC", "-o"])
                .arg(&path)
                .args(["answer.c", "-Wl,-soname,libanswer.so"])
                .args(["-Wl,-rpath,/old/rpath", "-Wl,--enable-new-dtags"]),
        );
        std::os::unix::fs::symlink(
            env!("CARGO_BIN_EXE_storepatch"),
            dir.path().join("patchelf"),
        )
        .unwrap();
        Self { dir, path }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn storepatch(&self) -> Command {
        let mut command = Command::new(self.path("patchelf"));
        command.current_dir(self.dir.path());
        command
    }

    /// Names in the directory, sorted.
    fn listing(&self) -> Vec<String> {
        let mut names: Vec<String> = fs_err::read_dir(self.dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

/// The real patchelf, if it is on `PATH` (loudly skipped otherwise).
fn real_patchelf() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("patchelf"))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        eprintln!("SKIPPING the side-by-side half: the real patchelf is not on PATH");
    }
    found
}

/// Reads fields of a 64-bit little-endian ELF file (what gcc builds here).
struct Fields<'a>(&'a [u8]);

/// One section header: where it is in the file and its fields.
#[derive(Debug, Clone, Copy)]
struct SectionHeader {
    at: usize,
    name: u32,
    addr: u64,
    offset: u64,
    size: u64,
}

/// One program header: where it is in the file and its fields.
#[derive(Debug, Clone, Copy)]
struct ProgramHeader {
    at: usize,
    p_type: u32,
    offset: u64,
    filesz: u64,
}

impl Fields<'_> {
    fn u16(&self, at: usize) -> u16 {
        u16::from_le_bytes(self.0[at..at + 2].try_into().unwrap())
    }

    fn u32(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.0[at..at + 4].try_into().unwrap())
    }

    fn u64(&self, at: usize) -> u64 {
        u64::from_le_bytes(self.0[at..at + 8].try_into().unwrap())
    }

    fn program_headers(&self) -> Vec<ProgramHeader> {
        let phoff = usize::try_from(self.u64(0x20)).unwrap();
        (0..usize::from(self.u16(0x38)))
            .map(|index| {
                let at = phoff + index * 56;
                ProgramHeader {
                    at,
                    p_type: self.u32(at),
                    offset: self.u64(at + 8),
                    filesz: self.u64(at + 32),
                }
            })
            .collect()
    }

    fn program_header(&self, p_type: u32) -> ProgramHeader {
        self.program_headers()
            .into_iter()
            .find(|header| header.p_type == p_type)
            .unwrap()
    }

    fn section_headers(&self) -> Vec<SectionHeader> {
        let shoff = usize::try_from(self.u64(0x28)).unwrap();
        (0..usize::from(self.u16(0x3c)))
            .map(|index| {
                let at = shoff + index * 64;
                SectionHeader {
                    at,
                    name: self.u32(at),
                    addr: self.u64(at + 16),
                    offset: self.u64(at + 24),
                    size: self.u64(at + 32),
                }
            })
            .collect()
    }

    fn name_table(&self) -> SectionHeader {
        self.section_headers()[usize::from(self.u16(0x3e))]
    }

    fn section(&self, name: &str) -> SectionHeader {
        let table = self.name_table();
        self.section_headers()
            .into_iter()
            .find(|header| {
                let start = usize::try_from(table.offset).unwrap() + header.name as usize;
                let end = start + self.0[start..].iter().position(|&b| b == 0).unwrap();
                &self.0[start..end] == name.as_bytes()
            })
            .unwrap_or_else(|| panic!("no section {name}"))
    }

    /// File offset of the dynamic entry with `tag`.
    fn dynamic_entry(&self, tag: u64) -> usize {
        let dynamic = self.program_header(2);
        let start = usize::try_from(dynamic.offset).unwrap();
        (start..start + usize::try_from(dynamic.filesz).unwrap())
            .step_by(16)
            .find(|&at| self.u64(at) == tag)
            .unwrap_or_else(|| panic!("no dynamic tag {tag:#x}"))
    }
}

fn put_u16(bytes: &mut [u8], at: usize, value: u16) {
    bytes[at..at + 2].copy_from_slice(&value.to_le_bytes());
}

fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn put_u64(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

fn offset(value: u64) -> usize {
    usize::try_from(value).unwrap()
}

const PT_DYNAMIC: u32 = 2;
const DT_STRTAB: u64 = 5;
const DT_RUNPATH: u64 = 29;
const DT_VERNEED: u64 = 0x6fff_fffe;

/// One malformed file: a name, the corrupted bytes, and the problem the message must name.
struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    problem: &'static str,
}

/// The malformed files, each a copy of `original` with one structure damaged.
#[expect(clippy::too_many_lines, reason = "one short block per case")]
fn malformed_cases(original: &[u8]) -> Vec<Case> {
    let fields = Fields(original);
    let file_size = original.len() as u64;
    let dynamic = fields.program_header(PT_DYNAMIC);
    let dynstr = fields.section(".dynstr");
    let names = fields.name_table();
    let version_r = fields.section(".gnu.version_r");
    let text = fields.section(".text");
    let mut cases = Vec::new();
    let mut case = |name, problem, change: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = original.to_vec();
        change(&mut bytes);
        assert_ne!(bytes, original, "{name} changes the file");
        cases.push(Case {
            name,
            bytes,
            problem,
        });
    };
    case("e_ident-class", "unknown ELF class (EI_CLASS)", &|b| {
        b[4] = 7;
    });
    case(
        "e_ident-data",
        "unknown ELF data encoding (EI_DATA)",
        &|b| {
            b[5] = 9;
        },
    );
    case(
        "e_ident-version",
        "unsupported ELF version (EI_VERSION)",
        &|b| {
            b[6] = 2;
        },
    );
    case("e_shstrndx", "(e_shstrndx) out of range", &|b| {
        put_u16(b, 0x3e, 200);
    });
    case("e_shentsize", "(e_shentsize)", &|b| put_u16(b, 0x3a, 60));
    case("e_phentsize", "(e_phentsize)", &|b| put_u16(b, 0x36, 50));
    case("e_phoff", "program header table", &|b| {
        put_u64(b, 0x20, file_size);
    });
    case("e_shoff", "section header table outside the file", &|b| {
        put_u64(b, 0x28, file_size - 10);
    });
    case(
        "pt-dynamic-misaligned",
        "dynamic section (PT_DYNAMIC) offset misaligned",
        &|b| put_u64(b, dynamic.at + 8, dynamic.offset + 4),
    );
    case(
        "pt-dynamic-outside",
        "program header PT_DYNAMIC (p_offset + p_filesz beyond the end of the file)",
        &|b| put_u64(b, dynamic.at + 8, file_size + 0x1000),
    );
    case(
        "pt-load-filesz",
        "program header PT_LOAD (p_offset + p_filesz beyond the end of the file)",
        &|b| {
            let load = Fields(original).program_header(1);
            put_u64(b, load.at + 32, file_size * 4);
        },
    );
    case(
        "dynstr-unterminated",
        "dynamic string table (.dynstr) not NUL-terminated",
        &|b| {
            b[offset(dynstr.offset + dynstr.size - 1)] = b'X';
        },
    );
    case("dt-strtab-unmapped", "DT_STRTAB address", &|b| {
        put_u64(b, fields.dynamic_entry(DT_STRTAB) + 8, 0x7fff_0000_0000);
    });
    case("dt-runpath-offset", "dynamic string offset", &|b| {
        put_u64(b, fields.dynamic_entry(DT_RUNPATH) + 8, dynstr.size + 0x100);
    });
    case("verneed-unmapped", "DT_VERNEED address", &|b| {
        put_u64(b, fields.dynamic_entry(DT_VERNEED) + 8, 0x7fff_0000_0000);
    });
    case("verneed-vn_file", "(vn_file) outside .dynstr", &|b| {
        put_u32(b, offset(version_r.offset) + 4, 0x00ff_ffff);
    });
    case(
        "verneed-vn_aux",
        "(vn_aux/vna_next) outside the file",
        &|b| {
            put_u32(b, offset(version_r.offset) + 8, 0x7fff_ff00);
        },
    );
    case("vernaux-vna_name", "(vna_name) outside .dynstr", &|b| {
        let aux =
            offset(version_r.offset) + Fields(original).u32(offset(version_r.offset) + 8) as usize;
        put_u32(b, aux + 8, 0x00ff_ffff);
    });
    case(
        "sh_name-outside",
        "section name (sh_name) outside the section name string table",
        &|b| put_u32(b, text.at, 0x00ff_ffff),
    );
    case(
        "sh_name-at-end",
        "section name (sh_name) outside the section name string table",
        &|b| put_u32(b, text.at, u32::try_from(names.size).unwrap()),
    );
    case(
        "shstrtab-unterminated",
        "section name string table (.shstrtab) empty or not NUL-terminated",
        &|b| {
            b[offset(names.offset + names.size - 1)] = b'X';
        },
    );
    case(
        "shstrtab-outside",
        "section name string table outside the file",
        &|b| put_u64(b, names.at + 24, file_size + 0x100),
    );
    case(
        "truncated-header",
        "truncated or invalid ELF header",
        &|b| {
            b.truncate(40);
        },
    );
    case(
        "truncated-half",
        "program header PT_LOAD (p_offset + p_filesz beyond the end of the file)",
        &|b| b.truncate(b.len() / 2),
    );
    case(
        "truncated-section-headers",
        "section header table outside the file",
        &|b| b.truncate(b.len() - 32),
    );
    cases
}

/// How a run ended, in one word and the first line of stderr.
fn outcome(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let first = stderr.lines().next().unwrap_or_default().to_owned();
    match output.status.code() {
        Some(0) => "accepts".to_owned(),
        Some(code) => format!("rejects (exit {code}): {first}"),
        None => format!("crashes ({})", output.status),
    }
}

/// The commands run on every malformed file, by both tools: none (which validates), printing,
/// an edit that relayouts, one that reads the version needs, and a plain copy.
const COMMANDS: &[&[&str]] = &[
    &[],
    &["--print-rpath"],
    &["--print-needed"],
    &[
        "--set-rpath",
        "/a/run/path/long/enough/to/need/a/new/segment/xxxxxxxxxxxxxxxxxxxxxxxx",
    ],
    &["--replace-needed", "libc.so.6", "libd.so.6"],
    &["--output", "copy"],
];

/// Each malformed file is refused by every command, naming the file and the problem, and is left
/// as it was with nothing written next to it; where the real patchelf is installed, it is run
/// the same way, and storepatch never accepts what patchelf rejects or crashes on. The table of
/// both tools' answers is printed (`--no-capture` shows it).
#[test]
fn malformed_files_are_rejected_where_patchelf_rejects_them() {
    let library = Library::build();
    let original = fs_err::read(&library.path).unwrap();
    let patchelf = real_patchelf();
    let mut table = String::new();
    let mut messages = String::new();
    for case in malformed_cases(&original) {
        let file = library.path(case.name);
        let mut first_message: Option<String> = None;
        for command in COMMANDS {
            fs_err::write(&file, &case.bytes).unwrap();
            let before = library.listing();
            let ours = run(library.storepatch().args(*command).arg(case.name));
            let stderr = String::from_utf8_lossy(&ours.stderr);
            assert_eq!(
                ours.status.code(),
                Some(1),
                "{} {command:?}: {stderr}",
                case.name
            );
            assert!(ours.stdout.is_empty(), "{} {command:?}", case.name);
            assert!(
                stderr.contains(case.name) && stderr.contains(case.problem),
                "{} {command:?} must name the file and `{}`: {stderr}",
                case.name,
                case.problem
            );
            assert_eq!(fs_err::read(&file).unwrap(), case.bytes, "{}", case.name);
            assert_eq!(library.listing(), before, "{} {command:?}", case.name);
            // Every command says the same about the same file.
            match &first_message {
                None => {
                    writeln!(messages, "{}", stderr.trim()).unwrap();
                    first_message = Some(stderr.into_owned());
                }
                Some(first) => assert_eq!(&*stderr, first, "{} {command:?}", case.name),
            }
            // patchelf (here behind a slow wrapper script) is asked what reads the damaged
            // structure: printing, a relayout, a copy, and `--replace-needed` for version needs.
            let Some(patchelf) = &patchelf else { continue };
            let first = command.first().copied().unwrap_or_default();
            if first.is_empty()
                || first == "--print-needed"
                || (first == "--replace-needed" && !case.name.starts_with("ver"))
            {
                continue;
            }
            let theirs = run(Command::new(patchelf)
                .current_dir(library.dir.path())
                .args(*command)
                .arg(case.name));
            let _ = fs_err::remove_file(library.path("copy"));
            writeln!(
                table,
                "{:<26} {:<40} patchelf {}",
                case.name,
                command.join(" "),
                outcome(&theirs)
            )
            .unwrap();
        }
    }
    eprintln!("{table}");
    // Offsets depend on gcc's layout; the messages are compared without them.
    insta::assert_snapshot!(without_offsets(&messages), @"
    error: cannot read `e_ident-class`: not an ELF file: unknown ELF class (EI_CLASS)
    error: cannot read `e_ident-data`: not an ELF file: unknown ELF data encoding (EI_DATA)
    error: cannot read `e_ident-version`: not an ELF file: unsupported ELF version (EI_VERSION)
    error: cannot read `e_shstrndx`: malformed ELF: section name string table index (e_shstrndx) out of range at offset [OFFSET]
    error: cannot read `e_shentsize`: malformed ELF: section header entry size (e_shentsize) at offset [OFFSET]
    error: cannot read `e_phentsize`: malformed ELF: program header entry size (e_phentsize) at offset [OFFSET]
    error: cannot read `e_phoff`: malformed ELF: program header table at offset [OFFSET]
    error: cannot read `e_shoff`: malformed ELF: section header table outside the file at offset [OFFSET]
    error: cannot read `pt-dynamic-misaligned`: malformed ELF: dynamic section (PT_DYNAMIC) offset misaligned at offset [OFFSET]
    error: cannot read `pt-dynamic-outside`: malformed ELF: program header PT_DYNAMIC (p_offset + p_filesz beyond the end of the file) at offset [OFFSET]
    error: cannot read `pt-load-filesz`: malformed ELF: program header PT_LOAD (p_offset + p_filesz beyond the end of the file) at offset [OFFSET]
    error: cannot read `dynstr-unterminated`: malformed ELF: dynamic string table (.dynstr) not NUL-terminated at offset [OFFSET]
    error: cannot read `dt-strtab-unmapped`: malformed ELF: DT_STRTAB address at offset [OFFSET]
    error: cannot read `dt-runpath-offset`: malformed ELF: dynamic string offset at offset [OFFSET]
    error: cannot read `verneed-unmapped`: malformed ELF: DT_VERNEED address at offset [OFFSET]
    error: cannot read `verneed-vn_file`: malformed ELF: version need file name (vn_file) outside .dynstr at offset [OFFSET]
    error: cannot read `verneed-vn_aux`: malformed ELF: version need auxiliary entry (vn_aux/vna_next) outside the file at offset [OFFSET]
    error: cannot read `vernaux-vna_name`: malformed ELF: version need auxiliary name (vna_name) outside .dynstr at offset [OFFSET]
    error: cannot read `sh_name-outside`: malformed ELF: section name (sh_name) outside the section name string table at offset [OFFSET]
    error: cannot read `sh_name-at-end`: malformed ELF: section name (sh_name) outside the section name string table at offset [OFFSET]
    error: cannot read `shstrtab-unterminated`: malformed ELF: section name string table (.shstrtab) empty or not NUL-terminated at offset [OFFSET]
    error: cannot read `shstrtab-outside`: malformed ELF: section name string table outside the file at offset [OFFSET]
    error: cannot read `truncated-header`: not an ELF file: truncated or invalid ELF header
    error: cannot read `truncated-half`: malformed ELF: program header PT_LOAD (p_offset + p_filesz beyond the end of the file) at offset [OFFSET]
    error: cannot read `truncated-section-headers`: malformed ELF: section header table outside the file at offset [OFFSET]
    ");
}

/// `text` with every `0x…` number replaced by `[OFFSET]`.
fn without_offsets(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("0x") {
        out.push_str(&rest[..at]);
        out.push_str("[OFFSET]");
        rest = rest[at + 2..].trim_start_matches(|c: char| c.is_ascii_hexdigit());
    }
    out.push_str(rest);
    out
}

/// `readelf -a -W` succeeds without a warning.
fn assert_readelf_clean(file: &Path) {
    let output = run_ok(Command::new("readelf").args(["-a", "-W"]).arg(file));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.trim().is_empty(),
        "readelf warns about {}:\n{stderr}",
        file.display()
    );
}

/// stdout of a successful run.
fn stdout_of(command: &mut Command) -> String {
    String::from_utf8(run_ok(command).stdout).unwrap()
}

/// A library whose `PT_DYNAMIC` was turned into `PT_NULL` keeps its `.dynamic` section header,
/// which is all patchelf reads: printing and editing (a longer run path and a new needed entry,
/// which move `.dynamic`) work as with patchelf. With `PT_DYNAMIC` put back where the section
/// header now says `.dynamic` is, the edited library loads and runs.
#[test]
fn dynamic_section_without_pt_dynamic_is_read_through_its_section_header() {
    let library = Library::build();
    fs_err::write(library.path("main.c"), PROGRAM_SOURCE).unwrap();
    let dir = library.dir.path().display().to_string();
    let program = library.path("main");
    run_ok(
        Command::new("gcc")
            .current_dir(library.dir.path())
            .arg("-o")
            .arg(&program)
            .args(["main.c", "-L.", "-lanswer"])
            .arg(format!("-Wl,-rpath,{dir}")),
    );
    let mut bytes = fs_err::read(&library.path).unwrap();
    let dynamic = Fields(&bytes).program_header(PT_DYNAMIC);
    put_u32(&mut bytes, dynamic.at, 0);
    fs_err::write(&library.path, &bytes).unwrap();
    let patchelf = real_patchelf();
    for option in ["--print-rpath", "--print-needed", "--print-soname"] {
        let ours = stdout_of(library.storepatch().arg(option).arg(&library.path));
        let expected = match option {
            "--print-rpath" => "/old/rpath\n",
            "--print-needed" => "libc.so.6\n",
            _ => "libanswer.so\n",
        };
        assert_eq!(ours, expected, "{option}");
        if let Some(patchelf) = &patchelf {
            assert_eq!(
                stdout_of(Command::new(patchelf).arg(option).arg(&library.path)),
                ours
            );
        }
    }
    let run_path = format!("{dir}:/{}", "r".repeat(300));
    let edits = ["--set-rpath", &run_path, "--add-needed", "libm.so.6"];
    if let Some(patchelf) = &patchelf {
        let theirs = library.path("theirs.so");
        fs_err::copy(&library.path, &theirs).unwrap();
        run_ok(Command::new(patchelf).args(edits).arg(&theirs));
        assert_eq!(
            stdout_of(
                library
                    .storepatch()
                    .args(["--print-rpath", "--print-needed"])
                    .arg(&theirs)
            ),
            format!("{run_path}\nlibm.so.6\nlibc.so.6\n")
        );
    }
    run_ok(library.storepatch().args(edits).arg(&library.path));
    assert_eq!(
        stdout_of(
            library
                .storepatch()
                .args(["--print-rpath", "--print-needed"])
                .arg(&library.path)
        ),
        format!("{run_path}\nlibm.so.6\nlibc.so.6\n")
    );
    if let Some(patchelf) = &patchelf {
        assert_eq!(
            stdout_of(
                Command::new(patchelf)
                    .args(["--print-rpath", "--print-needed"])
                    .arg(&library.path)
            ),
            format!("{run_path}\nlibm.so.6\nlibc.so.6\n")
        );
    }
    assert_readelf_clean(&library.path);
    // Put PT_DYNAMIC back, from the (moved) section header, and load the library. The relayout
    // may have used the PT_NULL entry for its new PT_LOAD; then PT_GNU_PROPERTY or a PT_NOTE,
    // which loading does not need, gives up its entry.
    let mut bytes = fs_err::read(&library.path).unwrap();
    let fields = Fields(&bytes);
    let section = fields.section(".dynamic");
    let headers = fields.program_headers();
    let header = [0, 0x6474_e553, 4]
        .iter()
        .find_map(|&p_type| headers.iter().find(|header| header.p_type == p_type))
        .copied()
        .unwrap();
    put_u32(&mut bytes, header.at, PT_DYNAMIC);
    put_u64(&mut bytes, header.at + 8, section.offset);
    put_u64(&mut bytes, header.at + 16, section.addr);
    put_u64(&mut bytes, header.at + 24, section.addr);
    put_u64(&mut bytes, header.at + 32, section.size);
    put_u64(&mut bytes, header.at + 40, section.size);
    fs_err::write(&library.path, &bytes).unwrap();
    let output = run_ok(Command::new(&program).env("LD_BIND_NOW", "1"));
    assert_eq!(String::from_utf8(output.stdout).unwrap(), "x\nanswer=42\n");
}

/// ELF files of the system under test: its libraries and programs, the cross sysroots'
/// libraries, and the Rust toolchain's binaries, sorted.
fn system_elf_files() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/bin",
        "/usr/sbin",
        "/usr/libexec",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    if let Ok(entries) = fs_err::read_dir("/usr") {
        dirs.extend(
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| path.to_string_lossy().ends_with("-linux-gnu"))
                .map(|path| path.join("lib")),
        );
    }
    if let Some(home) = std::env::var_os("HOME") {
        let toolchains = Path::new(&home).join(".rustup/toolchains");
        if let Ok(entries) = fs_err::read_dir(&toolchains) {
            for entry in entries.filter_map(Result::ok) {
                dirs.push(entry.path().join("bin"));
                dirs.push(entry.path().join("lib"));
            }
        }
    }
    let mut files = Vec::new();
    for dir in dirs {
        let Ok(entries) = fs_err::read_dir(&dir) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            let Ok(metadata) = fs_err::symlink_metadata(&path) else {
                continue;
            };
            if !metadata.is_file() {
                continue;
            }
            let mut magic = [0u8; 4];
            let is_elf = fs_err::File::open(&path)
                .and_then(|mut file| std::io::Read::read_exact(&mut file, &mut magic))
                .is_ok()
                && magic == *b"\x7fELF";
            if is_elf {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Valid real files are never refused: a spread sample of the system's ELF files (every one
/// with `STOREPATCH_ELF_CORPUS=all`) is parsed and validated, through the no-edit command line
/// that validates each file given.
#[test]
fn valid_system_files_are_never_refused() {
    let files = system_elf_files();
    assert!(files.len() > 100, "only {} ELF files found", files.len());
    let all = std::env::var_os("STOREPATCH_ELF_CORPUS").is_some_and(|value| value == "all");
    let step = if all { 1 } else { files.len().div_ceil(300) };
    let sample: Vec<&PathBuf> = files.iter().step_by(step).collect();
    for chunk in sample.chunks(200) {
        let output = run(Command::new(env!("CARGO_BIN_EXE_storepatch"))
            .arg("elf")
            .args(chunk));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && stderr.is_empty(),
            "valid files refused:\n{stderr}"
        );
    }
    eprintln!(
        "validated {} of {} system ELF files",
        sample.len(),
        files.len()
    );
}

/// Every option patchelf reads `@FILE` for names a missing file as patchelf does ("getting info
/// about 'FILE'"); `--output @FILE` writes where FILE says; `--replace-needed` takes its names
/// as they are, `@` included, as patchelf does.
#[test]
fn at_file_values_are_read_for_exactly_patchelfs_options() {
    let library = Library::build();
    let original = fs_err::read(&library.path).unwrap();
    let patchelf = real_patchelf();
    for option in [
        "--set-interpreter",
        "--set-os-abi",
        "--set-soname",
        "--set-rpath",
        "--add-rpath",
        "--add-needed",
        "--remove-needed",
        "--clear-symbol-version",
        "--output",
    ] {
        let mut tools = vec![library.storepatch()];
        tools.extend(patchelf.iter().map(Command::new));
        for mut tool in tools {
            let output = run(tool
                .current_dir(library.dir.path())
                .args([option, "@missing-value"])
                .arg(&library.path));
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(1), "{option}: {stderr}");
            assert!(
                stderr.contains("getting info about 'missing-value'"),
                "{option}: {stderr}"
            );
            assert_eq!(fs_err::read(&library.path).unwrap(), original, "{option}");
        }
    }
    fs_err::write(library.path("output-name"), "written-here").unwrap();
    run_ok(
        library
            .storepatch()
            .args(["--output", "@output-name"])
            .arg(&library.path),
    );
    assert_eq!(
        fs_err::read(library.path("written-here")).unwrap(),
        original
    );
    for mut tool in [library.storepatch()]
        .into_iter()
        .chain(patchelf.iter().map(Command::new))
    {
        run_ok(
            tool.current_dir(library.dir.path())
                .args(["--replace-needed", "@output-name", "libd.so.6"])
                .arg(&library.path),
        );
        assert_eq!(fs_err::read(&library.path).unwrap(), original);
    }
}

/// A run path is refused for a static-pie (glibc's static-pie startup crashes on one) by every
/// option that would write one, with and without `--output`; nothing is written.
#[test]
fn static_pie_refuses_a_run_path_from_every_option() {
    let library = Library::build();
    fs_err::write(library.path("main.c"), "int main(void) { return 7; }\n").unwrap();
    let program = library.path("static-pie");
    let built = run(Command::new("gcc")
        .current_dir(library.dir.path())
        .args(["-static-pie", "-o"])
        .arg(&program)
        .arg("main.c"));
    if !built.status.success() {
        eprintln!("SKIPPING static_pie_refuses_a_run_path_from_every_option: no static-pie libc");
        return;
    }
    let original = fs_err::read(&program).unwrap();
    for args in [
        &["--set-rpath", "/x"][..],
        &["--add-rpath", "/x"],
        &["--force-rpath", "--set-rpath", "/x"],
        &["--set-rpath", "/x", "--output", "out"],
        &["--add-rpath", "/x", "--output", "out"],
    ] {
        let output = run(library.storepatch().args(args).arg("static-pie"));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert!(
            stderr.contains("static-pie`") && stderr.contains("a run path in a static-pie"),
            "{args:?}: {stderr}"
        );
        assert_eq!(fs_err::read(&program).unwrap(), original);
        assert!(!library.path("out").exists(), "{args:?}");
    }
    assert_eq!(run(&mut Command::new(&program)).status.code(), Some(7));
}

/// Symbols defined in an unnamed section, or in a section beyond the table, are warned about on
/// stderr when the file is relayouted, with patchelf's wording and for the same sections as
/// patchelf; an in-place edit warns about nothing, as with patchelf.
#[test]
fn symbols_in_unnamed_or_missing_sections_warn_on_a_relayout_like_patchelf() {
    let library = Library::build();
    let mut bytes = fs_err::read(&library.path).unwrap();
    let fields = Fields(&bytes);
    let text_index = fields
        .section_headers()
        .iter()
        .position(|header| header.at == fields.section(".text").at)
        .unwrap();
    let text = fields.section(".text");
    let symtab = fields.section(".symtab");
    // One symbol defined in .text is moved to section 300 (there are fewer than 40).
    let moved = (offset(symtab.offset)..offset(symtab.offset + symtab.size))
        .step_by(24)
        .find(|&at| usize::from(fields.u16(at + 6)) == text_index)
        .unwrap();
    put_u16(&mut bytes, moved + 6, 300);
    put_u32(&mut bytes, text.at, 0);
    fs_err::write(&library.path, &bytes).unwrap();
    let warnings = |stderr: &[u8]| -> Vec<String> {
        let mut lines: Vec<String> = String::from_utf8_lossy(stderr)
            .lines()
            .filter_map(|line| {
                line.split_once("warning: ")
                    .map(|(_, rest)| rest.to_owned())
            })
            .map(|line| {
                line.trim_start_matches(&format!("{}: ", library.path.display()))
                    .trim_end_matches(", skipping")
                    .to_owned()
            })
            .collect();
        lines.sort();
        lines.dedup();
        lines
    };
    let long = format!("/{}", "r".repeat(300));
    for (run_path, expected) in [
        ("/x", vec![]),
        (
            long.as_str(),
            vec![
                "entry 300 in symbol table refers to a non-existent section".to_owned(),
                format!("symbol table entry refers to an unnamed section (index {text_index})"),
            ],
        ),
    ] {
        fs_err::write(&library.path, &bytes).unwrap();
        let ours = run_ok(
            library
                .storepatch()
                .args(["--set-rpath", run_path])
                .arg(&library.path),
        );
        assert_eq!(warnings(&ours.stderr), expected, "{run_path}");
        if !expected.is_empty() {
            let stderr = String::from_utf8_lossy(&ours.stderr);
            assert!(
                stderr.contains(&library.path.display().to_string()),
                "{stderr}"
            );
        }
        if let Some(patchelf) = real_patchelf() {
            fs_err::write(&library.path, &bytes).unwrap();
            let theirs = run_ok(
                Command::new(patchelf)
                    .args(["--set-rpath", run_path])
                    .arg(&library.path),
            );
            assert_eq!(warnings(&theirs.stderr), expected, "patchelf, {run_path}");
        }
    }
}

/// Extended section numbering (`e_shnum` 0 with the count in the first section header's
/// `sh_size`, `e_shstrndx` `SHN_XINDEX` with the index in its `sh_link`), which the ELF
/// specification defines for files with 0xff00 sections or more, is read: an edit that moves
/// `.dynstr` updates its section header, and `readelf` finds nothing wrong. (patchelf refuses
/// such a file: "no section headers".)
#[test]
fn extended_section_numbering_is_read() {
    let library = Library::build();
    let mut bytes = fs_err::read(&library.path).unwrap();
    let fields = Fields(&bytes);
    let count = fields.u16(0x3c);
    let names = fields.u16(0x3e);
    let first = fields.section_headers()[0].at;
    put_u64(&mut bytes, first + 32, u64::from(count)); // sh_size
    put_u32(&mut bytes, first + 40, u32::from(names)); // sh_link
    put_u16(&mut bytes, 0x3c, 0);
    put_u16(&mut bytes, 0x3e, 0xffff);
    fs_err::write(&library.path, &bytes).unwrap();
    assert_readelf_clean(&library.path);
    let run_path = format!("/{}", "r".repeat(300));
    run_ok(
        library
            .storepatch()
            .args(["--set-rpath", &run_path])
            .arg(&library.path),
    );
    assert_eq!(
        stdout_of(library.storepatch().arg("--print-rpath").arg(&library.path)),
        format!("{run_path}\n")
    );
    assert_readelf_clean(&library.path);
    let strings = stdout_of(
        Command::new("readelf")
            .args(["-W", "-p", ".dynstr"])
            .arg(&library.path),
    );
    assert!(
        strings.contains(&run_path),
        "the .dynstr section header follows: {strings}"
    );
}
