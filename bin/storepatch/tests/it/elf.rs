//! `storepatch elf` / `patchelf`: every edit is proven by running the patched program (with
//! `LD_BIND_NOW=1`), by `readelf -a` printing no warnings, by `strip` still working, and against
//! the real patchelf where it is on `PATH`.
#![expect(
    clippy::print_stderr,
    reason = "a skipped check says so loudly instead of passing silently"
)]
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{run, run_ok};

use tempfile::TempDir;

/// A library and a program using it, built with gcc into a temporary directory.
struct Fixture {
    dir: TempDir,
}

const LIBRARY_SOURCE: &str = "int answer(void) { return 42; }\n";
const PROGRAM_SOURCE: &str = "#include <stdio.h>\nextern int answer(void);\n\
    int main(void) { printf(\"answer=%d\\n\", answer()); return 0; }\n";
const EXPECTED: &str = "answer=42\n";

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs_err::write(dir.path().join("answer.c"), LIBRARY_SOURCE).unwrap();
        fs_err::write(dir.path().join("main.c"), PROGRAM_SOURCE).unwrap();
        // `patchelf` is a symlink to the binary under test: argv[0] dispatch.
        std::os::unix::fs::symlink(
            env!("CARGO_BIN_EXE_storepatch"),
            dir.path().join("patchelf"),
        )
        .unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Builds `lib<name>.so` (soname = file name) with extra gcc flags.
    fn library(&self, name: &str, flags: &[&str]) -> PathBuf {
        let file = format!("lib{name}.so");
        let out = self.path(&file);
        run_ok(
            Command::new("gcc")
                .current_dir(self.dir.path())
                .args(["-shared", "-fPIC", "-o"])
                .arg(&out)
                .arg("answer.c")
                .arg(format!("-Wl,-soname,{file}"))
                .args(flags),
        );
        out
    }

    /// Builds a program linked against `libanswer.so` with extra gcc flags.
    fn program(&self, name: &str, flags: &[&str]) -> PathBuf {
        if !self.path("libanswer.so").exists() {
            self.library("answer", &[]);
        }
        let out = self.path(name);
        run_ok(
            Command::new("gcc")
                .current_dir(self.dir.path())
                .arg("-o")
                .arg(&out)
                .arg("main.c")
                .args(["-L.", "-lanswer"])
                .args(flags),
        );
        out
    }

    /// Runs `patchelf` (the symlink to storepatch) with arguments.
    fn patchelf(&self) -> Command {
        let mut command = Command::new(self.path("patchelf"));
        command.current_dir(self.dir.path());
        command
    }

    fn copy(&self, from: &Path, name: &str) -> PathBuf {
        let to = self.path(name);
        fs_err::copy(from, &to).unwrap();
        to
    }
}

/// Runs a program with `LD_BIND_NOW=1` and no `LD_LIBRARY_PATH`; returns stdout.
fn run_program(program: &Path) -> String {
    let output = run_ok(
        Command::new(program)
            .env("LD_BIND_NOW", "1")
            .env_remove("LD_LIBRARY_PATH"),
    );
    String::from_utf8(output.stdout).unwrap()
}

/// `readelf -a -W` must succeed without a single warning.
fn assert_readelf_clean(file: &Path) {
    let output = run_ok(Command::new("readelf").args(["-a", "-W"]).arg(file));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.trim().is_empty(),
        "readelf warns about {}:\n{stderr}",
        file.display()
    );
}

/// `strip` must work quietly, and the stripped program must still run.
fn assert_strip_works(file: &Path, expected: Option<&str>) {
    let stripped = file.with_extension("stripped");
    fs_err::copy(file, &stripped).unwrap();
    let output = run_ok(Command::new("strip").arg(&stripped));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.trim().is_empty(), "strip warns:\n{stderr}");
    if let Some(expected) = expected {
        assert_eq!(run_program(&stripped), expected);
    }
    assert_readelf_clean(&stripped);
}

/// All the proofs for a patched program.
fn assert_healthy_program(file: &Path) {
    assert_eq!(run_program(file), EXPECTED);
    assert_readelf_clean(file);
    assert_strip_works(file, Some(EXPECTED));
}

fn print(fixture: &Fixture, option: &str, file: &Path) -> String {
    let output = run_ok(fixture.patchelf().arg(option).arg(file));
    String::from_utf8(output.stdout).unwrap()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// Dynamic entries as `readelf -d` renders them, without addresses: `(TAG) value` lines.
fn dynamic_entries(file: &Path) -> Vec<String> {
    let output = run_ok(Command::new("readelf").args(["-d", "-W"]).arg(file));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let rest = line.strip_prefix("0x")?;
            let (_, rest) = rest.split_once(' ')?;
            let rest = rest.trim();
            let interesting = ["(NEEDED)", "(SONAME)", "(RPATH)", "(RUNPATH)", "(FLAGS_1)"];
            interesting
                .iter()
                .any(|tag| rest.starts_with(tag))
                .then(|| rest.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .collect()
}

/// The program variants the ELF editor must handle.
fn program_variants(fixture: &Fixture) -> Vec<(&'static str, PathBuf)> {
    let rpath = format!("-Wl,-rpath,{}", fixture.dir.path().display());
    vec![
        ("pie", fixture.program("pie", &["-pie", "-fPIE", &rpath])),
        ("no-pie", fixture.program("nopie", &["-no-pie", &rpath])),
        (
            "noseparate-code",
            fixture.program("nosep", &["-Wl,-z,noseparate-code", &rpath]),
        ),
        (
            "relro-now",
            fixture.program("relro", &["-Wl,-z,relro,-z,now", &rpath]),
        ),
        (
            "rpath-dtag",
            fixture.program("oldtags", &["-Wl,--disable-new-dtags", &rpath]),
        ),
    ]
}

/// Zeroes `e_shoff`, `e_shnum` and `e_shstrndx` of a 64-bit little-endian ELF file, like
/// binaries whose section headers were stripped by sstrip.
fn strip_section_headers(file: &Path) {
    let mut bytes = fs_err::read(file).unwrap();
    assert_eq!(&bytes[..6], b"\x7fELF\x02\x01");
    bytes[0x28..0x30].fill(0); // e_shoff
    bytes[0x3c..0x40].fill(0); // e_shnum, e_shstrndx
    fs_err::write(file, bytes).unwrap();
}

#[test]
fn version_says_patchelf_compatible() {
    let fixture = Fixture::new();
    let output = run_ok(fixture.patchelf().arg("--version"));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.starts_with("storepatch-elf ") && stdout.contains("patchelf 0.19 compatible"),
        "{stdout}"
    );
    let output = run_ok(
        Command::new(env!("CARGO_BIN_EXE_storepatch"))
            .args(["elf", "--version"])
            .current_dir(fixture.dir.path()),
    );
    assert_eq!(String::from_utf8(output.stdout).unwrap(), stdout);
}

#[test]
fn prints_what_the_loader_reads() {
    let fixture = Fixture::new();
    let program = fixture.program("main", &["-Wl,-rpath,/opt/one:/opt/two"]);
    assert_eq!(
        print(&fixture, "--print-interpreter", &program),
        "/lib64/ld-linux-x86-64.so.2\n"
    );
    assert_eq!(
        print(&fixture, "--print-rpath", &program),
        "/opt/one:/opt/two\n"
    );
    assert_eq!(
        print(&fixture, "--print-needed", &program),
        "libanswer.so\nlibc.so.6\n"
    );
    assert_eq!(print(&fixture, "--print-os-abi", &program), "System V\n");
    let library = fixture.path("libanswer.so");
    assert_eq!(
        print(&fixture, "--print-soname", &library),
        "libanswer.so\n"
    );
    assert_eq!(print(&fixture, "--print-rpath", &library), "\n");
}

#[test]
fn set_rpath_that_fits_is_written_in_place() {
    let fixture = Fixture::new();
    let dir = fixture.dir.path().display().to_string();
    let long = format!("{dir}/xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    let program = fixture.program("main", &[&format!("-Wl,-rpath,{long}")]);
    let before = fs_err::read(&program).unwrap();
    run_ok(
        fixture
            .patchelf()
            .arg("--set-rpath")
            .arg(&dir)
            .arg(&program),
    );
    let after = fs_err::read(&program).unwrap();
    assert_eq!(before.len(), after.len(), "an in-place edit keeps the size");
    assert!(
        !contains(&after, long.as_bytes()),
        "the old run path survives"
    );
    let changed = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    assert!(changed <= long.len() + 16, "{changed} bytes changed");
    assert_eq!(
        print(&fixture, "--print-rpath", &program),
        format!("{dir}\n")
    );
    assert_healthy_program(&program);
}

#[test]
fn set_rpath_that_grows_relayouts_every_variant() {
    let fixture = Fixture::new();
    let dir = fixture.dir.path().display().to_string();
    // Long enough to never fit in place.
    let grown = format!("/nonexistent/{}:{dir}", "y".repeat(300));
    for (variant, program) in program_variants(&fixture) {
        let size = fs_err::metadata(&program).unwrap().len();
        run_ok(
            fixture
                .patchelf()
                .arg("--set-rpath")
                .arg(&grown)
                .arg(&program),
        );
        assert!(
            fs_err::metadata(&program).unwrap().len() > size,
            "{variant}"
        );
        assert_eq!(
            print(&fixture, "--print-rpath", &program),
            format!("{grown}\n"),
            "{variant}"
        );
        assert_healthy_program(&program);
        // Setting the same value again changes nothing.
        let before = fs_err::read(&program).unwrap();
        run_ok(
            fixture
                .patchelf()
                .arg("--set-rpath")
                .arg(&grown)
                .arg(&program),
        );
        assert_eq!(before, fs_err::read(&program).unwrap(), "{variant}");
    }
}

#[test]
fn stripped_section_headers_still_work() {
    let fixture = Fixture::new();
    let dir = fixture.dir.path().display().to_string();
    let program = fixture.program(
        "main",
        &[&format!("-Wl,-rpath,{dir}:/nonexistent/zzzzzzzz")],
    );
    strip_section_headers(&program);
    assert_eq!(run_program(&program), EXPECTED);
    // In place (shorter), then grown.
    run_ok(
        fixture
            .patchelf()
            .arg("--set-rpath")
            .arg(&dir)
            .arg(&program),
    );
    assert_eq!(
        print(&fixture, "--print-rpath", &program),
        format!("{dir}\n")
    );
    assert_eq!(run_program(&program), EXPECTED);
    let grown = format!("/nonexistent/{}:{dir}", "q".repeat(200));
    run_ok(
        fixture
            .patchelf()
            .arg("--set-rpath")
            .arg(&grown)
            .arg(&program),
    );
    assert_eq!(
        print(&fixture, "--print-rpath", &program),
        format!("{grown}\n")
    );
    assert_eq!(
        print(&fixture, "--print-needed", &program),
        "libanswer.so\nlibc.so.6\n"
    );
    assert_eq!(run_program(&program), EXPECTED);
}

#[test]
fn long_interpreter_and_many_edits_in_one_pass() {
    let fixture = Fixture::new();
    let dir = fixture.dir.path().display().to_string();
    let program = fixture.program("main", &[]);
    let interpreter = format!("/lib64{}/ld-linux-x86-64.so.2", "/../lib64".repeat(30));
    run_ok(
        fixture
            .patchelf()
            .arg("--set-interpreter")
            .arg(&interpreter)
            .arg("--set-rpath")
            .arg(format!("{dir}:/nonexistent/{}", "r".repeat(100)))
            .arg("--add-needed")
            .arg("libm.so.6")
            .arg("--no-default-lib")
            .arg(&program),
    );
    assert_eq!(
        print(&fixture, "--print-interpreter", &program),
        format!("{interpreter}\n")
    );
    assert_eq!(
        print(&fixture, "--print-needed", &program),
        "libm.so.6\nlibanswer.so\nlibc.so.6\n"
    );
    assert!(
        dynamic_entries(&program)
            .iter()
            .any(|line| line.starts_with("(FLAGS_1)") && line.contains("NODEFLIB")),
        "{:?}",
        dynamic_entries(&program)
    );
    // NODEFLIB: libc and libm must come from the run path now.
    let libc_dir = Path::new("/lib/x86_64-linux-gnu");
    run_ok(
        fixture
            .patchelf()
            .arg("--add-rpath")
            .arg(libc_dir)
            .arg(&program),
    );
    assert_healthy_program(&program);
}

#[test]
fn repeated_updates_keep_working_and_grow_boundedly() {
    let fixture = Fixture::new();
    let dir = fixture.dir.path().display().to_string();
    let program = fixture.program("main", &[]);
    let mut sizes = Vec::new();
    for round in 0..12 {
        let value = format!("/nonexistent/{}:{dir}", "w".repeat(20 * round + 1));
        run_ok(
            fixture
                .patchelf()
                .arg("--set-rpath")
                .arg(&value)
                .arg(&program),
        );
        assert_eq!(
            print(&fixture, "--print-rpath", &program),
            format!("{value}\n")
        );
        assert_eq!(run_program(&program), EXPECTED, "round {round}");
        sizes.push(fs_err::metadata(&program).unwrap().len());
    }
    assert_readelf_clean(&program);
    assert_strip_works(&program, Some(EXPECTED));
    // Twelve rounds must not have cost more than a few pages.
    assert!(sizes[11] - sizes[0] < 64 * 1024, "{sizes:?}");
}

#[test]
fn needed_edits_and_version_needs() {
    let fixture = Fixture::new();
    let dir = fixture.dir.path().display().to_string();
    let program = fixture.program("main", &[&format!("-Wl,-rpath,{dir}")]);
    // A second copy of the library under another name, and libc under another name.
    fixture.library("other", &[]);
    let libc = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
    std::os::unix::fs::symlink(libc, fixture.path("libcopy.so.6")).unwrap();
    run_ok(
        fixture
            .patchelf()
            .args(["--replace-needed", "libanswer.so", "libother.so"])
            .args(["--replace-needed", "libc.so.6", "libcopy.so.6"])
            .arg(&program),
    );
    assert_eq!(
        print(&fixture, "--print-needed", &program),
        "libother.so\nlibcopy.so.6\n"
    );
    // .gnu.version_r names the new file, or the loader would reject the versions.
    let versions = run_ok(Command::new("readelf").arg("-V").arg(&program));
    let versions = String::from_utf8_lossy(&versions.stdout);
    assert!(versions.contains("File: libcopy.so.6"), "{versions}");
    assert!(!versions.contains("File: libc.so.6"), "{versions}");
    assert_healthy_program(&program);

    // Remove and add back.
    run_ok(
        fixture
            .patchelf()
            .args([
                "--remove-needed",
                "libother.so",
                "--add-needed",
                "libanswer.so",
            ])
            .arg(&program),
    );
    assert_eq!(
        print(&fixture, "--print-needed", &program),
        "libanswer.so\nlibcopy.so.6\n"
    );
    assert_healthy_program(&program);
}

#[test]
fn soname_of_a_library_and_programs_still_load_it() {
    let fixture = Fixture::new();
    let dir = fixture.dir.path().display().to_string();
    let program = fixture.program("main", &[&format!("-Wl,-rpath,{dir}")]);
    let library = fixture.path("libanswer.so");
    let soname = format!("libanswer-{}.so", "s".repeat(80));
    run_ok(
        fixture
            .patchelf()
            .arg("--set-soname")
            .arg(&soname)
            .arg(&library),
    );
    assert_eq!(
        print(&fixture, "--print-soname", &library),
        format!("{soname}\n")
    );
    assert_readelf_clean(&library);
    assert_strip_works(&library, None);
    assert_eq!(run_program(&program), EXPECTED);
    // And the library still links.
    let relinked = fixture.path("relinked");
    run_ok(
        Command::new("gcc")
            .current_dir(fixture.dir.path())
            .arg("-o")
            .arg(&relinked)
            .args(["main.c", "-L.", "-lanswer"])
            .arg(format!("-Wl,-rpath,{dir}")),
    );
    fs_err::copy(&library, fixture.path(&soname)).unwrap();
    assert_eq!(run_program(&relinked), EXPECTED);
}

#[test]
fn tail_shared_strings_are_not_clobbered() {
    let fixture = Fixture::new();
    // GNU ld stores "libanswer.so" as the tail of this run path entry.
    let dir = fixture.dir.path().display().to_string();
    let program = fixture.program(
        "main",
        &[&format!("-Wl,-rpath,{dir}:/nonexistent/libanswer.so")],
    );
    let bytes = fs_err::read(&program).unwrap();
    assert!(
        !contains(&bytes, b"\0libanswer.so\0"),
        "the linker did not merge the string tails; the test would prove nothing"
    );
    run_ok(
        fixture
            .patchelf()
            .arg("--set-rpath")
            .arg(&dir)
            .arg(&program),
    );
    assert_eq!(
        print(&fixture, "--print-needed", &program),
        "libanswer.so\nlibc.so.6\n"
    );
    assert_eq!(
        print(&fixture, "--print-rpath", &program),
        format!("{dir}\n")
    );
    assert_healthy_program(&program);
}

#[test]
fn big_dynamic_string_table() {
    let fixture = Fixture::new();
    let dir = fixture.dir.path().display().to_string();
    // Thousands of exported symbols make .dynstr large.
    let mut source = String::from(LIBRARY_SOURCE);
    for index in 0..3000 {
        writeln!(
            source,
            "int exported_symbol_with_a_long_name_{index}(void) {{ return {index}; }}"
        )
        .unwrap();
    }
    fs_err::write(fixture.path("answer.c"), source).unwrap();
    let program = fixture.program("main", &[]);
    let library = fixture.path("libanswer.so");
    let grown = format!("/nonexistent/{}:{dir}", "b".repeat(150));
    run_ok(
        fixture
            .patchelf()
            .arg("--set-rpath")
            .arg(&grown)
            .arg(&library),
    );
    run_ok(
        fixture
            .patchelf()
            .arg("--set-rpath")
            .arg(&grown)
            .arg(&program),
    );
    assert_readelf_clean(&library);
    assert_strip_works(&library, None);
    assert_healthy_program(&program);
    let symbols = run_ok(
        Command::new("nm")
            .args(["-D", "--defined-only"])
            .arg(&library),
    );
    let symbols = String::from_utf8_lossy(&symbols.stdout);
    assert!(symbols.contains("exported_symbol_with_a_long_name_2999"));
}

#[test]
fn static_binary_errors_and_stays_untouched() {
    let fixture = Fixture::new();
    let program = fixture.path("static");
    let output = run(Command::new("gcc")
        .current_dir(fixture.dir.path())
        .args(["-static", "-o"])
        .arg(&program)
        .arg("answer.c")
        .arg("-x")
        .arg("c")
        .arg("-")
        .stdin(std::process::Stdio::null()));
    // Linking a static binary needs libc.a; build a trivial one without it if that fails.
    if !output.status.success() {
        fs_err::write(fixture.path("s.c"), "int main(void) { return 0; }\n").unwrap();
        let output = run(Command::new("gcc")
            .current_dir(fixture.dir.path())
            .args(["-static", "-o"])
            .arg(&program)
            .arg("s.c"));
        if !output.status.success() {
            eprintln!("SKIPPING static_binary_errors_and_stays_untouched: cannot link statically");
            return;
        }
    }
    let before = fs_err::read(&program).unwrap();
    for args in [
        vec!["--print-rpath"],
        vec!["--print-interpreter"],
        vec!["--set-rpath", "/x"],
        vec!["--set-interpreter", "/x"],
    ] {
        let output = run(fixture.patchelf().args(&args).arg(&program));
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("static"), "{args:?}: {stderr}");
        assert_eq!(before, fs_err::read(&program).unwrap());
    }
}

#[test]
fn malformed_input_is_an_error_naming_the_file() {
    let fixture = Fixture::new();
    let program = fixture.program("main", &[]);
    let bytes = fs_err::read(&program).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("text", b"#!/bin/sh\necho hi\n".to_vec()),
        ("truncated", bytes[..100].to_vec()),
        ("half", bytes[..bytes.len() / 2].to_vec()),
    ];
    for (name, contents) in cases {
        let file = fixture.path(name);
        fs_err::write(&file, &contents).unwrap();
        let output = run(fixture.patchelf().args(["--set-rpath", "/x"]).arg(&file));
        assert_eq!(output.status.code(), Some(1), "{name}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(name), "{name}: {stderr}");
        assert_eq!(contents, fs_err::read(&file).unwrap(), "{name}");
    }
    let output = run(fixture
        .patchelf()
        .arg("--print-rpath")
        .arg(fixture.path("missing")));
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("missing"));
    let output = run(fixture.patchelf().arg("--bogus-option").arg(&program));
    assert_eq!(output.status.code(), Some(1));
    let output = run(&mut fixture.patchelf());
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn output_option_and_at_file_values_and_mode() {
    let fixture = Fixture::new();
    let dir = fixture.dir.path().display().to_string();
    let program = fixture.program("main", &[]);
    fs_err::set_permissions(&program, std::fs::Permissions::from_mode(0o751)).unwrap();
    let value_file = fixture.path("rpath.txt");
    let value = format!("/nonexistent/{}:{dir}", "f".repeat(64));
    fs_err::write(&value_file, &value).unwrap();
    let output = fixture.path("out");
    let before = fs_err::read(&program).unwrap();
    run_ok(
        fixture
            .patchelf()
            .arg("--set-rpath")
            .arg(format!("@{}", value_file.display()))
            .arg("--output")
            .arg(&output)
            .arg(&program),
    );
    assert_eq!(before, fs_err::read(&program).unwrap(), "input untouched");
    assert_eq!(
        print(&fixture, "--print-rpath", &output),
        format!("{value}\n")
    );
    assert_eq!(
        fs_err::metadata(&output).unwrap().permissions().mode() & 0o7777,
        0o751
    );
    assert_healthy_program(&output);
    // The mode survives an in-place relayout too.
    run_ok(
        fixture
            .patchelf()
            .arg("--set-rpath")
            .arg(&value)
            .arg(&program),
    );
    assert_eq!(
        fs_err::metadata(&program).unwrap().permissions().mode() & 0o7777,
        0o751
    );
}

#[test]
fn shrink_rpath_matches_patchelf() {
    let fixture = Fixture::new();
    let dir = fixture.dir.path().display().to_string();
    let rpath = format!("$ORIGIN/x:/usr/lib/x86_64-linux-gnu:/nonexistent:{dir}");
    let program = fixture.program("main", &[&format!("-Wl,-rpath,{rpath}")]);
    for extra in [vec![], vec!["--allowed-rpath-prefixes", dir.as_str()]] {
        let ours = fixture.copy(&program, "ours");
        run_ok(
            fixture
                .patchelf()
                .arg("--shrink-rpath")
                .args(&extra)
                .arg(&ours),
        );
        let Some(theirs) = real_patchelf(
            &fixture,
            &program,
            &[&["--shrink-rpath"], &extra[..]].concat(),
        ) else {
            return;
        };
        assert_eq!(
            print(&fixture, "--print-rpath", &ours),
            print(&fixture, "--print-rpath", &theirs),
            "{extra:?}"
        );
        assert_eq!(run_program(&ours), EXPECTED);
    }
}

/// Runs the real patchelf on a copy of `file`; `None` (loudly) when it is not installed.
fn real_patchelf(fixture: &Fixture, file: &Path, args: &[&str]) -> Option<PathBuf> {
    let copy = fixture.copy(file, "theirs");
    match Command::new("patchelf").args(args).arg(&copy).output() {
        Ok(output) => {
            assert!(
                output.status.success(),
                "patchelf {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            Some(copy)
        }
        Err(err) => {
            eprintln!("SKIPPING differential check: the real patchelf is not on PATH ({err})");
            None
        }
    }
}

#[test]
fn differential_against_real_patchelf() {
    let fixture = Fixture::new();
    let dir = fixture.dir.path().display().to_string();
    fixture.library("other", &[]);
    let long = format!("/nonexistent/{}:{dir}", "d".repeat(120));
    let interpreter = format!("/lib64{}/ld-linux-x86-64.so.2", "/../lib64".repeat(12));
    let edits: Vec<Vec<String>> = vec![
        vec!["--set-rpath".into(), dir.clone()],
        vec!["--set-rpath".into(), long.clone()],
        vec!["--set-rpath".into(), long.clone(), "--force-rpath".into()],
        vec!["--add-rpath".into(), "/nonexistent/extra".into()],
        vec!["--remove-rpath".into()],
        vec!["--set-interpreter".into(), interpreter.clone()],
        vec!["--add-needed".into(), "libm.so.6".into()],
        vec!["--remove-needed".into(), "libm.so.6".into()],
        vec![
            "--replace-needed".into(),
            "libanswer.so".into(),
            "libother.so".into(),
        ],
        vec!["--no-default-lib".into()],
        vec!["--set-soname".into(), "libprogram.so".into()],
        vec!["--set-os-abi".into(), "linux".into()],
    ];
    for (variant, program) in program_variants(&fixture) {
        for edit in &edits {
            let args: Vec<&str> = edit.iter().map(String::as_str).collect();
            let ours = fixture.copy(&program, "ours");
            run_ok(fixture.patchelf().args(&args).arg(&ours));
            let Some(theirs) = real_patchelf(&fixture, &program, &args) else {
                return;
            };
            assert_eq!(
                dynamic_entries(&ours),
                dynamic_entries(&theirs),
                "{variant} {args:?}"
            );
            for option in [
                "--print-interpreter",
                "--print-rpath",
                "--print-needed",
                "--print-soname",
                "--print-os-abi",
            ] {
                let theirs_printed = run_ok(Command::new("patchelf").arg(option).arg(&theirs));
                assert_eq!(
                    print(&fixture, option, &ours),
                    String::from_utf8_lossy(&theirs_printed.stdout),
                    "{variant} {args:?} {option}"
                );
            }
            assert_readelf_clean(&ours);
            let runs = |file: &Path| {
                Command::new(file)
                    .env("LD_BIND_NOW", "1")
                    .output()
                    .map(|output| (output.status.success(), output.stdout))
                    .ok()
            };
            let (our_run, their_run) = (runs(&ours), runs(&theirs));
            assert_eq!(
                our_run.as_ref().map(|(ok, _)| *ok),
                their_run.as_ref().map(|(ok, _)| *ok),
                "{variant} {args:?}: runs differently"
            );
            if let (Some((true, ours)), Some((true, theirs))) = (our_run, their_run) {
                assert_eq!(ours, theirs, "{variant} {args:?}");
            }
        }
    }
}

/// `e_phoff` and `e_phnum` of a 64-bit little-endian ELF file.
fn program_header_table(file: &Path) -> (u64, u16) {
    let bytes = fs_err::read(file).unwrap();
    assert_eq!(&bytes[..6], b"\x7fELF\x02\x01");
    (
        u64::from_le_bytes(bytes[0x20..0x28].try_into().unwrap()),
        u16::from_le_bytes(bytes[0x38..0x3a].try_into().unwrap()),
    )
}

/// patchelf's own relayout (as found in many manylinux wheels, `libtorch_cpu.so` among them) moves
/// the sections after the program header table into a new segment and leaves their old bytes
/// unused. The next relayout puts its new program header there, in place, rather than moving the
/// table into the new segment: BFD (`strip`, `objcopy`) accepts a moved table only with a note
/// that it "adjusted" the LMA of the section behind it.
#[test]
fn new_program_header_goes_where_an_earlier_relayout_freed_room() {
    let fixture = Fixture::new();
    let dir = fixture.dir.path().display().to_string();
    let program = fixture.program("main", &["-pie", "-fPIE", &format!("-Wl,-rpath,{dir}")]);
    let first = format!("{dir}:{}", "/x".repeat(200));
    let Some(theirs) = real_patchelf(&fixture, &program, &["--set-rpath", &first]) else {
        return;
    };
    // Bytes after patchelf's segment (a signature, say) keep it from simply growing, so the next
    // edit needs a new program header.
    let mut bytes = fs_err::read(&theirs).unwrap();
    bytes.extend_from_slice(&[0xa5; 64]);
    fs_err::write(&theirs, &bytes).unwrap();
    let (phoff, phnum) = program_header_table(&theirs);
    let second = format!("{dir}:{}", "/y".repeat(400));
    run_ok(
        fixture
            .patchelf()
            .arg("--set-rpath")
            .arg(&second)
            .arg(&theirs),
    );
    assert_eq!(program_header_table(&theirs), (phoff, phnum + 1));
    // PT_PHDR covers the grown table.
    let headers = run_ok(Command::new("readelf").args(["-l", "-W"]).arg(&theirs));
    let headers = String::from_utf8_lossy(&headers.stdout);
    let phdr: Vec<&str> = headers
        .lines()
        .find(|line| line.trim_start().starts_with("PHDR "))
        .expect("a PT_PHDR segment")
        .split_whitespace()
        .collect();
    assert_eq!(phdr[1], format!("{phoff:#08x}"), "{phdr:?}");
    assert_eq!(
        phdr[4],
        format!("{:#08x}", (u64::from(phnum) + 1) * 56),
        "{phdr:?}"
    );
    assert_eq!(
        print(&fixture, "--print-rpath", &theirs),
        format!("{second}\n")
    );
    assert_healthy_program(&theirs);
}

#[test]
fn symlink_named_patchelf_dispatches_on_argv0() {
    let fixture = Fixture::new();
    let output = run_ok(fixture.patchelf().arg("--help"));
    assert!(String::from_utf8_lossy(&output.stdout).contains("--set-rpath"));
    // Under its own name the binary needs the `elf` subcommand.
    let output = run(Command::new(env!("CARGO_BIN_EXE_storepatch")).arg("--print-rpath"));
    assert!(!output.status.success());
}

/// Downloads (once, cached under the target dir) a manylinux wheel and unpacks it.
fn wheel(package: &str) -> Option<PathBuf> {
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("elf-wheels")
        .join(package);
    let unpacked = cache.join("unpacked");
    if unpacked.join(".done").exists() {
        return Some(unpacked);
    }
    fs_err::create_dir_all(&cache).unwrap();
    let download = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
        ])
        .arg("-d")
        .arg(&cache)
        .arg(package)
        .output();
    let ok = matches!(&download, Ok(output) if output.status.success());
    if !ok {
        eprintln!(
            "SKIPPING wheel test: `pip download {package}` failed (no network?): {:?}",
            download.map(|output| String::from_utf8_lossy(&output.stderr).into_owned())
        );
        return None;
    }
    let wheel = fs_err::read_dir(&cache)
        .unwrap()
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension() == Some(OsStr::new("whl")))?;
    let _ = fs_err::remove_dir_all(&unpacked);
    run_ok(
        Command::new("python3")
            .args(["-m", "zipfile", "-e"])
            .arg(&wheel)
            .arg(&unpacked),
    );
    fs_err::write(unpacked.join(".done"), "").unwrap();
    Some(unpacked)
}

fn copy_tree(from: &Path, to: &Path) {
    fs_err::create_dir_all(to).unwrap();
    for entry in fs_err::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs_err::copy(entry.path(), &target).unwrap();
        }
    }
}

fn find_file(dir: &Path, predicate: &dyn Fn(&Path) -> bool) -> Option<PathBuf> {
    for entry in fs_err::read_dir(dir).ok()? {
        let path = entry.ok()?.path();
        if path.is_dir() {
            if let Some(found) = find_file(&path, predicate) {
                return Some(found);
            }
        } else if predicate(&path) {
            return Some(path);
        }
    }
    None
}

#[test]
fn real_wheel_extension_still_imports_after_run_path_edits() {
    // Pillow's extension finds its bundled libraries (pillow.libs) only through its run path.
    let Some(unpacked) = wheel("pillow") else {
        return;
    };
    let fixture = Fixture::new();
    let site = fixture.path("site");
    copy_tree(&unpacked, &site);
    let module = find_file(&site.join("PIL"), &|path| {
        path.file_name()
            .and_then(OsStr::to_str)
            .is_some_and(|name| {
                name.starts_with("_imaging.")
                    && Path::new(name).extension() == Some(OsStr::new("so"))
            })
    })
    .expect("PIL/_imaging*.so in the wheel");
    let libs = site.join("pillow.libs");
    assert!(
        libs.is_dir(),
        "the wheel bundles its libraries in pillow.libs"
    );
    let import = || {
        run(Command::new("python3")
            .arg("-c")
            .arg("import sys; sys.path.insert(0, sys.argv[1]); import PIL._imaging; print('ok')")
            .arg(&site)
            .env("LD_BIND_NOW", "1"))
    };
    assert!(import().status.success(), "the unmodified wheel imports");

    // Break the run path: the import must fail, proving the run path matters.
    run_ok(
        fixture
            .patchelf()
            .args(["--set-rpath", "/nonexistent"])
            .arg(&module),
    );
    assert!(
        !import().status.success(),
        "import without the run path must fail"
    );

    // Grow it to an absolute path (relayout): imports again.
    let absolute = format!("/nonexistent/{}:{}", "p".repeat(200), libs.display());
    run_ok(
        fixture
            .patchelf()
            .arg("--set-rpath")
            .arg(&absolute)
            .arg(&module),
    );
    assert_eq!(
        print(&fixture, "--print-rpath", &module),
        format!("{absolute}\n")
    );
    let output = import();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_readelf_clean(&module);

    // Back to $ORIGIN-relative, in place.
    run_ok(
        fixture
            .patchelf()
            .args(["--set-rpath", "$ORIGIN/../pillow.libs"])
            .arg(&module),
    );
    assert!(import().status.success());
}

#[test]
fn dlopen_note_survives_a_relayout() {
    let fixture = Fixture::new();
    let source = r#"
#define DESC "[{\"feature\":\"zstd\",\"soname\":[\"libzstd.so.1\",\"libzstd.so\"]}]"
struct note { unsigned namesz, descsz, type; char name[4]; char desc[(sizeof(DESC) + 3) & ~3]; };
__attribute__((section(".note.dlopen"), used, aligned(4)))
static const struct note dlopen_note = { 4, sizeof(DESC), 0x407c0c0a, "FDO", DESC };
int answer(void) { return 42; }
"#;
    fs_err::write(fixture.path("answer.c"), source).unwrap();
    let library = fixture.library("answer", &[]);
    let expected = vec![b"libzstd.so.1".to_vec(), b"libzstd.so".to_vec()];
    let info = storepatch_elf::ElfInfo::parse(&fs_err::read(&library).unwrap()).unwrap();
    assert_eq!(info.dlopen, expected);
    let grown = format!("/nonexistent/{}", "n".repeat(300));
    run_ok(
        fixture
            .patchelf()
            .arg("--set-rpath")
            .arg(&grown)
            .arg(&library),
    );
    let info = storepatch_elf::ElfInfo::parse(&fs_err::read(&library).unwrap()).unwrap();
    assert_eq!(info.dlopen, expected);
    // `readelf -a` exits 1 on the (to it) unknown FDO note type even for the unpatched file, so
    // check the parts it does know, and that it never warns.
    let output = run_ok(
        Command::new("readelf")
            .args(["-h", "-l", "-S", "-d", "-s", "-V", "-W"])
            .arg(&library),
    );
    assert!(String::from_utf8_lossy(&output.stderr).trim().is_empty());
    let notes = run(Command::new("readelf").args(["-n", "-W"]).arg(&library));
    assert!(String::from_utf8_lossy(&notes.stdout).contains("FDO"));
    let dir = fixture.dir.path().display().to_string();
    let program = fixture.program("main", &[&format!("-Wl,-rpath,{dir}")]);
    assert_eq!(run_program(&program), EXPECTED);
}

#[test]
fn page_size_option_aligns_the_new_segment() {
    let fixture = Fixture::new();
    let dir = fixture.dir.path().display().to_string();
    let program = fixture.program("main", &[]);
    let grown = format!("/nonexistent/{}:{dir}", "g".repeat(200));
    run_ok(
        fixture
            .patchelf()
            .args(["--page-size", "65536", "--set-rpath"])
            .arg(&grown)
            .arg(&program),
    );
    let headers = run_ok(Command::new("readelf").args(["-l", "-W"]).arg(&program));
    let headers = String::from_utf8_lossy(&headers.stdout);
    let last_load = headers
        .lines()
        .rfind(|line| line.trim_start().starts_with("LOAD"))
        .unwrap()
        .to_owned();
    assert!(last_load.ends_with("0x10000"), "{last_load}");
    assert_healthy_program(&program);
    let output = run(fixture
        .patchelf()
        .args(["--page-size", "1000", "--set-rpath"])
        .arg(&grown)
        .arg(&program));
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn in_place_edit_of_a_big_file_writes_only_the_changed_bytes() {
    use std::os::unix::fs::MetadataExt;
    let fixture = Fixture::new();
    let dir = fixture.dir.path().display().to_string();
    let old = format!("{dir}:/nonexistent/{}", "o".repeat(40));
    let program = fixture.program("main", &[&format!("-Wl,-rpath,{old}")]);
    // Trailing bytes the loader never maps make the file big (sparse, so the test stays fast).
    let file = fs_err::OpenOptions::new()
        .write(true)
        .open(&program)
        .unwrap();
    file.set_len(256 << 20).unwrap();
    drop(file);
    let before = fs_err::metadata(&program).unwrap();
    let output = run_ok(
        fixture
            .patchelf()
            .args(["--debug", "--set-rpath"])
            .arg(&dir)
            .arg(&program),
    );
    let after = fs_err::metadata(&program).unwrap();
    assert_eq!(before.ino(), after.ino(), "same inode: not rewritten");
    assert_eq!(before.len(), after.len());
    assert!(after.blocks() <= before.blocks() + 8, "no hole was filled");
    let log = String::from_utf8_lossy(&output.stderr);
    let written: u64 = log
        .split_whitespace()
        .zip(log.split_whitespace().skip(1))
        .find(|(_, next)| *next == "bytes")
        .and_then(|(count, _)| count.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in {log}"));
    assert!(written <= old.len() as u64 + 1, "{written} bytes written");
    assert_eq!(run_program(&program), EXPECTED);
}

#[test]
fn many_new_entries_move_the_dynamic_section() {
    let fixture = Fixture::new();
    let libraries = [
        "libm.so.6",
        "libdl.so.2",
        "libpthread.so.0",
        "librt.so.1",
        "libutil.so.1",
        "libresolv.so.2",
        "libanl.so.1",
    ];
    for (variant, program) in program_variants(&fixture) {
        let before = dynamic_entries(&program).len();
        let dynamic_segment = dynamic_segment_of(&program);
        let mut command = fixture.patchelf();
        for library in libraries {
            command.args(["--add-needed", library]);
        }
        command.args(["--set-soname", "libsoname-of-a-program.so", "--add-rpath"]);
        command.arg(format!("/nonexistent/{}", "m".repeat(50)));
        run_ok(command.arg(&program));
        let needed = print(&fixture, "--print-needed", &program);
        let mut expected = libraries.join("\n");
        expected.push_str("\nlibanswer.so\nlibc.so.6\n");
        assert_eq!(needed, expected, "{variant}");
        assert!(dynamic_entries(&program).len() >= before + libraries.len());
        assert_ne!(
            dynamic_segment,
            dynamic_segment_of(&program),
            "{variant}: .dynamic moved"
        );
        assert_healthy_program(&program);
    }
}

/// The `DYNAMIC` line of `readelf -l`.
fn dynamic_segment_of(file: &Path) -> String {
    let headers = run_ok(Command::new("readelf").args(["-l", "-W"]).arg(file));
    String::from_utf8_lossy(&headers.stdout)
        .lines()
        .find(|line| line.trim_start().starts_with("DYNAMIC"))
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn hard_links_are_broken_and_read_only_files_restored() {
    let fixture = Fixture::new();
    let dir = fixture.dir.path().display().to_string();
    let program = fixture.program("main", &[&format!("-Wl,-rpath,{dir}:/nonexistent/long")]);
    let link = fixture.path("link");
    fs_err::hard_link(&program, &link).unwrap();
    let original = fs_err::read(&link).unwrap();
    fs_err::set_permissions(&program, std::fs::Permissions::from_mode(0o555)).unwrap();
    // Fits in place, but the inode is shared.
    run_ok(
        fixture
            .patchelf()
            .arg("--set-rpath")
            .arg(&dir)
            .arg(&program),
    );
    assert_eq!(
        original,
        fs_err::read(&link).unwrap(),
        "the other name is untouched"
    );
    assert_eq!(
        print(&fixture, "--print-rpath", &program),
        format!("{dir}\n")
    );
    assert_eq!(
        fs_err::metadata(&program).unwrap().permissions().mode() & 0o7777,
        0o555
    );
    // Now alone and read-only: patched in place, mode restored.
    fs_err::remove_file(&link).unwrap();
    run_ok(
        fixture
            .patchelf()
            .arg("--set-rpath")
            .arg(format!("{dir}:/x"))
            .arg(&program),
    );
    assert_eq!(
        print(&fixture, "--print-rpath", &program),
        format!("{dir}:/x\n")
    );
    assert_eq!(
        fs_err::metadata(&program).unwrap().permissions().mode() & 0o7777,
        0o555
    );
    assert_eq!(run_program(&program), EXPECTED);
}

#[test]
fn big_real_extension_module_after_interpreter_free_edits() {
    // pydantic-core: one big Rust extension module; set, grow and remove its run path and add a
    // NEEDED, then import it.
    let Some(unpacked) = wheel("pydantic-core") else {
        return;
    };
    let fixture = Fixture::new();
    let site = fixture.path("site");
    copy_tree(&unpacked, &site);
    let module = find_file(&site.join("pydantic_core"), &|path| {
        path.file_name()
            .and_then(OsStr::to_str)
            .is_some_and(|name| {
                name.starts_with("_pydantic_core.")
                    && Path::new(name).extension() == Some(OsStr::new("so"))
            })
    })
    .expect("pydantic_core/_pydantic_core*.so in the wheel");
    let import = || {
        run(Command::new("python3")
            .arg("-c")
            .arg(
                "import sys, importlib.util as u\n\
                 spec = u.spec_from_file_location('pydantic_core._pydantic_core', sys.argv[1])\n\
                 module = u.module_from_spec(spec)\n\
                 spec.loader.exec_module(module)\n\
                 print(module.__version__)",
            )
            .arg(&module)
            .env("LD_BIND_NOW", "1"))
    };
    let original = import();
    if !original.status.success() {
        eprintln!(
            "SKIPPING pydantic-core import test: the unmodified wheel does not load here: {}",
            String::from_utf8_lossy(&original.stderr)
        );
        return;
    }
    let long = format!("/nonexistent/{}", "z".repeat(400));
    for args in [
        vec!["--set-rpath", "/x"],
        vec!["--set-rpath", long.as_str()],
        vec![
            "--add-needed",
            "libm.so.6",
            "--set-rpath",
            "/lib/x86_64-linux-gnu",
        ],
        vec!["--remove-rpath"],
    ] {
        run_ok(fixture.patchelf().args(&args).arg(&module));
        let output = import();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(output.stdout, original.stdout);
        assert_readelf_clean(&module);
    }
    assert_eq!(print(&fixture, "--print-rpath", &module), "\n");
    assert!(print(&fixture, "--print-needed", &module).starts_with("libm.so.6\n"));
}

#[test]
fn library_without_section_headers_moves_its_program_headers() {
    let fixture = Fixture::new();
    let dir = fixture.dir.path().display().to_string();
    let program = fixture.program("main", &[&format!("-Wl,-rpath,{dir}")]);
    let library = fixture.path("libanswer.so");
    strip_section_headers(&library);
    let phoff = |file: &Path| {
        let bytes = fs_err::read(file).unwrap();
        u64::from_le_bytes(bytes[0x20..0x28].try_into().unwrap())
    };
    assert_eq!(phoff(&library), 64);
    // Without section headers nothing after the table is known to be movable, so the table
    // itself moves into the new segment (PT_PHDR, if any, follows).
    let grown = format!("/nonexistent/{}:{dir}", "h".repeat(200));
    run_ok(
        fixture
            .patchelf()
            .arg("--set-rpath")
            .arg(&grown)
            .arg(&library),
    );
    assert_ne!(phoff(&library), 64);
    assert_eq!(
        print(&fixture, "--print-rpath", &library),
        format!("{grown}\n")
    );
    assert_eq!(
        print(&fixture, "--print-soname", &library),
        "libanswer.so\n"
    );
    let output = run_ok(
        Command::new("readelf")
            .args(["-l", "-d", "-W"])
            .arg(&library),
    );
    assert!(String::from_utf8_lossy(&output.stderr).trim().is_empty());
    assert_eq!(run_program(&program), EXPECTED);
    // And again: the segment grows, the table stays.
    let before = phoff(&library);
    let longer = format!("{grown}:/nonexistent/{}", "i".repeat(100));
    run_ok(
        fixture
            .patchelf()
            .arg("--set-rpath")
            .arg(&longer)
            .arg(&library),
    );
    assert_eq!(phoff(&library), before);
    assert_eq!(run_program(&program), EXPECTED);
}

/// A character device, a FIFO, a socket and a directory as `--output`, input, or in-place file:
/// a device is written into (never renamed over), the rest is refused with an error naming the
/// file, nothing is read without bound, nothing blocks, and no file is left behind. The devices
/// are made with mknod in the test's own directory (the machine's `/dev/null` is not touched).
#[test]
fn special_files_are_never_replaced_nor_read_without_bound() {
    use std::os::unix::fs::FileTypeExt;
    let fixture = Fixture::new();
    let library = fixture.library("answer", &[]);
    let null = fixture.path("null");
    let zero = fixture.path("zero");
    let have_devices = run(Command::new("mknod").arg(&null).args(["c", "1", "3"]))
        .status
        .success()
        && run(Command::new("mknod").arg(&zero).args(["c", "1", "5"]))
            .status
            .success();
    // A `nodev` mount (a tmpfs `/tmp`, as systemd's tmp.mount makes it) lets mknod make a device
    // but refuses to open it.
    let have_devices = have_devices && fs_err::OpenOptions::new().write(true).open(&null).is_ok();
    if !have_devices {
        eprintln!(
            "skipping the device cases: mknod is not permitted here, or the test directory is on \
             a nodev mount"
        );
    }
    let fifo = fixture.path("fifo");
    run_ok(Command::new("mkfifo").arg(&fifo));
    let socket = fixture.path("socket");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let directory = fixture.path("directory");
    fs_err::create_dir(&directory).unwrap();
    let entries = |dir: &Path| {
        let mut names: Vec<_> = fs_err::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        names.sort();
        names
    };
    let before = entries(fixture.dir.path());
    let copy = fixture.path("copy");
    let long = format!("/{}", "x".repeat(300));
    // With a timeout: a FIFO must be refused, not waited on.
    let patchelf = |args: &[&OsStr]| {
        run(Command::new("timeout")
            .arg("20")
            .arg(fixture.path("patchelf"))
            .args(args))
    };
    if have_devices {
        // In place, in the layout, and unchanged: written into, still a character device.
        for rpath in ["/x", long.as_str(), ""] {
            let mut args: Vec<&OsStr> = Vec::new();
            if !rpath.is_empty() {
                args.extend([OsStr::new("--set-rpath"), OsStr::new(rpath)]);
            }
            args.extend([
                OsStr::new("--output"),
                null.as_os_str(),
                library.as_os_str(),
            ]);
            let output = patchelf(&args);
            assert!(output.status.success(), "{rpath}: {output:?}");
            assert!(
                fs_err::metadata(&null)
                    .unwrap()
                    .file_type()
                    .is_char_device(),
                "{rpath}"
            );
        }
        // `/dev/zero` gives bytes without end: refused at once, not read.
        for print in ["--print-rpath", "--print-needed"] {
            let output = patchelf(&[OsStr::new(print), zero.as_os_str()]);
            assert_eq!(output.status.code(), Some(1), "{output:?}");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                stderr.contains("cannot read `")
                    && stderr.contains("zero`: a character device, not a regular file"),
                "{stderr}"
            );
        }
        let output = patchelf(&[
            OsStr::new("--set-rpath"),
            OsStr::new("/x"),
            null.as_os_str(),
        ]);
        assert_eq!(output.status.code(), Some(1), "{output:?}");
        assert!(
            fs_err::metadata(&null)
                .unwrap()
                .file_type()
                .is_char_device()
        );
    }
    let refused = [
        (&fifo, "a FIFO"),
        (&socket, "a socket"),
        (&directory, "a directory"),
    ];
    for (file, kind) in refused {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        for rpath in ["/x", long.as_str()] {
            let output = patchelf(&[
                OsStr::new("--set-rpath"),
                OsStr::new(rpath),
                OsStr::new("--output"),
                file.as_os_str(),
                library.as_os_str(),
            ]);
            assert_eq!(output.status.code(), Some(1), "{name}: {output:?}");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                stderr.contains("cannot replace `")
                    && stderr.contains(&format!("{name}`: {kind}, not a regular file")),
                "{stderr}"
            );
        }
        // As input: to print, to edit in place, to copy.
        for args in [
            vec![OsStr::new("--print-rpath"), file.as_os_str()],
            vec![
                OsStr::new("--set-rpath"),
                OsStr::new("/x"),
                file.as_os_str(),
            ],
            vec![OsStr::new("--output"), copy.as_os_str(), file.as_os_str()],
        ] {
            let output = patchelf(&args);
            assert_eq!(output.status.code(), Some(1), "{name} {args:?}: {output:?}");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                stderr.contains("cannot read `")
                    && stderr.contains(&format!("{name}`: {kind}, not a regular file")),
                "{stderr}"
            );
        }
    }
    assert!(fs_err::metadata(&fifo).unwrap().file_type().is_fifo());
    assert!(
        fs_err::symlink_metadata(&socket)
            .unwrap()
            .file_type()
            .is_socket()
    );
    assert_eq!(before, entries(fixture.dir.path()), "no file left behind");
    assert!(entries(&directory).is_empty());
}

/// The dynamic symbol names of a file, in table order.
fn dynamic_symbol_names(file: &Path) -> Vec<String> {
    let output = run_ok(Command::new("readelf").args(["--dyn-syms", "-W"]).arg(file));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| {
            line.trim_start()
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
        })
        .filter_map(|line| line.split_whitespace().nth(7).map(str::to_owned))
        .collect()
}

/// `--rename-dynamic-symbols MAP` (patchelf 0.19): real gcc libraries (GNU, System V and both hash
/// styles, and one with a version script) get two exported functions renamed; a program compiled
/// against the NEW names and linked against the patched library runs with `LD_BIND_NOW=1` (every
/// symbol is looked up through the rebuilt hash tables, versions included); readelf is clean; the
/// symbol names (and their order) are the real patchelf's; map file errors name file and line.
#[test]
fn rename_dynamic_symbols() {
    let fixture = Fixture::new();
    let source = "int answer(void) { return 42; }\nint alpha(void) { return 1; }\n\
        int beta(void) { return 2; }\nint gamma_(void) { return 3; }\n\
        int delta(void) { return answer() + 4; }\n";
    fs_err::write(fixture.path("syms.c"), source).unwrap();
    fs_err::write(
        fixture.path("user.c"),
        "#include <stdio.h>\nextern int renamed_answer(void);\nextern int delta_v2(void);\n\
         int main(void) { printf(\"%d %d\\n\", renamed_answer(), delta_v2()); return 0; }\n",
    )
    .unwrap();
    fs_err::write(
        fixture.path("vers.map"),
        "SYMS_1 { global: answer; alpha; beta; gamma_; delta; local: *; };\n",
    )
    .unwrap();
    fs_err::write(
        fixture.path("map"),
        "answer renamed_answer\ndelta   delta_v2\n\nalpha never\n",
    )
    .unwrap();
    let variants: [(&str, &[&str]); 4] = [
        ("gnu", &["-Wl,--hash-style=gnu"]),
        ("sysv", &["-Wl,--hash-style=sysv"]),
        ("both", &["-Wl,--hash-style=both"]),
        ("versioned", &["-Wl,--version-script=vers.map"]),
    ];
    for (name, flags) in variants {
        let dir = fixture.path(name);
        fs_err::create_dir(&dir).unwrap();
        let library = dir.join("libsyms.so");
        run_ok(
            Command::new("gcc")
                .current_dir(fixture.dir.path())
                .args(["-shared", "-fPIC", "-o"])
                .arg(&library)
                .args(["syms.c", "-Wl,-soname,libsyms.so"])
                .args(flags),
        );
        let original = fixture.copy(&library, &format!("{name}.orig.so"));
        run_ok(
            fixture
                .patchelf()
                .args(["--rename-dynamic-symbols", "map"])
                .arg(&library),
        );
        let names = dynamic_symbol_names(&library);
        for (gone, present) in [("answer", "renamed_answer"), ("delta", "delta_v2")] {
            assert!(
                names.iter().any(|n| n.split('@').next() == Some(present)),
                "{name}: {names:?}"
            );
            assert!(
                !names.iter().any(|n| n.split('@').next() == Some(gone)),
                "{name}: {names:?}"
            );
        }
        // Reading stops at the blank line, as in patchelf.
        assert!(
            names.iter().any(|n| n.starts_with("alpha")),
            "{name}: {names:?}"
        );
        assert_readelf_clean(&library);
        let map = fixture.path("map");
        if let Some(theirs) = real_patchelf(
            &fixture,
            &original,
            &["--rename-dynamic-symbols", map.to_str().unwrap()],
        ) {
            assert_eq!(
                names,
                dynamic_symbol_names(&theirs),
                "{name}: differs from patchelf"
            );
        }
        let program = dir.join("user");
        run_ok(
            Command::new("gcc")
                .current_dir(fixture.dir.path())
                .arg("-o")
                .arg(&program)
                .arg("user.c")
                .arg(format!("-L{}", dir.display()))
                .arg("-lsyms")
                .arg(format!("-Wl,-rpath,{}", dir.display())),
        );
        assert_eq!(run_program(&program), "42 46\n", "{name}");
        // Renaming again changes nothing.
        let before = fs_err::read(&library).unwrap();
        run_ok(
            fixture
                .patchelf()
                .args(["--rename-dynamic-symbols", "map"])
                .arg(&library),
        );
        assert_eq!(before, fs_err::read(&library).unwrap(), "{name}: again");
    }
    // With --clear-symbol-version in the same run, the cleared version moves with its symbol.
    let original = fixture.path("versioned.orig.so");
    let both = fixture.copy(&original, "both-options.so");
    let map = fixture.path("map");
    let args = [
        "--clear-symbol-version",
        "beta",
        "--rename-dynamic-symbols",
        map.to_str().unwrap(),
    ];
    run_ok(fixture.patchelf().args(args).arg(&both));
    let names = dynamic_symbol_names(&both);
    assert!(names.contains(&"beta".to_owned()), "{names:?}");
    assert!(names.contains(&"delta_v2@@SYMS_1".to_owned()), "{names:?}");
    assert_readelf_clean(&both);
    if let Some(theirs) = real_patchelf(&fixture, &original, &args) {
        assert_eq!(names, dynamic_symbol_names(&theirs));
    }
    // Map file errors, as patchelf reports them; the library is left alone.
    let library = fixture.path("gnu/libsyms.so");
    let before = fs_err::read(&library).unwrap();
    for (contents, message) in [
        (
            "answer x\nbeta\n",
            "bad.map:2: Map file line is missing the second element",
        ),
        (
            "answer x\nanswer y\n",
            "bad.map:2: Name 'answer' appears twice in the map file",
        ),
        (
            "answer x@V1\n",
            "bad.map:1: Name pair contains version tag: answer x@V1",
        ),
    ] {
        fs_err::write(fixture.path("bad.map"), contents).unwrap();
        let output = run(fixture
            .patchelf()
            .args(["--rename-dynamic-symbols", "bad.map"])
            .arg(&library));
        assert_eq!(output.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(message), "{stderr}");
    }
    let output = run(fixture
        .patchelf()
        .args(["--rename-dynamic-symbols", "missing.map"])
        .arg(&library));
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("missing.map"));
    assert_eq!(before, fs_err::read(&library).unwrap());

    // patchelf's own scenario: every symbol a library defines renamed, in the library and in the
    // program calling them all; the renamed pair runs with LD_BIND_NOW=1.
    let count = 600;
    let lines = |line: &dyn Fn(i64) -> String| -> String {
        (0..count).map(line).collect::<Vec<_>>().concat()
    };
    let library = lines(&|i| format!("int f{i}(void) {{ return {i}; }}\n"));
    let declarations = lines(&|i| format!("int f{i}(void);\n"));
    let calls = lines(&|i| format!("sum += f{i}();\n"));
    fs_err::write(fixture.path("many.c"), library).unwrap();
    fs_err::write(
        fixture.path("many_main.c"),
        format!(
            "#include <stdio.h>\n{declarations}int main(void) {{ long sum = 0;\n{calls}\
             printf(\"%ld\\n\", sum); return 0; }}\n"
        ),
    )
    .unwrap();
    let dir = fixture.path("many");
    fs_err::create_dir(&dir).unwrap();
    run_ok(Command::new("gcc").current_dir(fixture.dir.path()).args([
        "-shared",
        "-fPIC",
        "-o",
        "many/libmany.so",
        "many.c",
    ]));
    run_ok(Command::new("gcc").current_dir(fixture.dir.path()).args([
        "-o",
        "many/main",
        "many_main.c",
        "-Lmany",
        "-lmany",
        "-Wl,-rpath,$ORIGIN",
    ]));
    let map = lines(&|i| format!("f{i} f{i}_renamed\n"));
    fs_err::write(fixture.path("many.map"), map).unwrap();
    run_ok(fixture.patchelf().args([
        "--rename-dynamic-symbols",
        "many.map",
        "many/libmany.so",
        "many/main",
    ]));
    let expected = format!("{}\n", (0..count).sum::<i64>());
    assert_eq!(run_program(&dir.join("main")), expected);
    for file in ["libmany.so", "main"] {
        let file = dir.join(file);
        assert_readelf_clean(&file);
        let names = dynamic_symbol_names(&file);
        assert!(names.contains(&"f7_renamed".to_owned()), "{names:?}");
        assert!(!names.contains(&"f7".to_owned()), "{names:?}");
    }
}

/// Takes `PT_GNU_STACK` out of a real gcc-built x86-64 file: turned into `PT_NULL` (`keep_slot`), or
/// dropped from the table (moved to the end, `e_phnum` and `PT_PHDR`'s sizes one entry smaller).
fn without_gnu_stack(file: &Path, keep_slot: bool) {
    const PT_GNU_STACK: u32 = 0x6474_e551;
    const ENTRY: usize = 56;
    let mut bytes = fs_err::read(file).unwrap();
    let (phoff, phnum) = program_header_table(file);
    let phoff = usize::try_from(phoff).unwrap();
    let count = usize::from(phnum);
    let p_type = |bytes: &[u8], index: usize| {
        let at = phoff + index * ENTRY;
        u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
    };
    let stack = (0..count)
        .find(|&index| p_type(&bytes, index) == PT_GNU_STACK)
        .expect("gcc writes PT_GNU_STACK");
    let at = phoff + stack * ENTRY;
    if keep_slot {
        bytes[at..at + ENTRY].fill(0);
    } else {
        let last = phoff + (count - 1) * ENTRY;
        let entry: Vec<u8> = bytes[at..at + ENTRY].to_vec();
        bytes.copy_within(last..last + ENTRY, at);
        bytes[last..last + ENTRY].copy_from_slice(&entry);
        bytes[last..last + ENTRY].fill(0);
        bytes[0x38..0x3a].copy_from_slice(&(phnum - 1).to_le_bytes());
        for index in 0..count - 1 {
            if p_type(&bytes, index) == 6 {
                let entry = phoff + index * ENTRY;
                let size = ((count - 1) * ENTRY) as u64;
                bytes[entry + 32..entry + 40].copy_from_slice(&size.to_le_bytes());
                bytes[entry + 40..entry + 48].copy_from_slice(&size.to_le_bytes());
            }
        }
    }
    fs_err::write(file, bytes).unwrap();
}

/// The `GNU_STACK` line of `readelf -lW`, if any.
fn gnu_stack_line(file: &Path) -> Option<String> {
    let headers = run_ok(Command::new("readelf").args(["-l", "-W"]).arg(file));
    String::from_utf8_lossy(&headers.stdout)
        .lines()
        .find(|line| line.contains("GNU_STACK"))
        .map(str::to_owned)
}

/// `--set-execstack`/`--clear-execstack` on a file without `PT_GNU_STACK` add one, as patchelf
/// 0.19 does: the same `GNU_STACK` header as the real patchelf writes (`RWE` or `RW`, align 1),
/// into the `PT_NULL` slot when there is one (in place, the file does not grow), else in a grown
/// program header table; readelf is clean, the program runs, and the edit again is a no-op.
#[test]
fn execstack_adds_a_missing_gnu_stack() {
    let fixture = Fixture::new();
    let library = fixture.library("answer", &[]);
    let rpath = format!("-Wl,-rpath,{}", fixture.dir.path().display());
    let program = fixture.program("main", &[&rpath]);
    let pristine = fixture.copy(&library, "libanswer.so.orig");
    for (name, file) in [("library", &pristine), ("program", &program)] {
        for keep_slot in [true, false] {
            let stripped = fixture.copy(file, "nostack");
            without_gnu_stack(&stripped, keep_slot);
            assert_eq!(gnu_stack_line(&stripped), None);
            assert_eq!(
                print(&fixture, "--print-execstack", &stripped),
                "execstack: ?\n"
            );
            for (operation, state) in [("--set-execstack", "X"), ("--clear-execstack", "-")] {
                let ours = fixture.copy(&stripped, "ours");
                run_ok(fixture.patchelf().arg(operation).arg(&ours));
                let context = format!("{name} {operation} keep_slot={keep_slot}");
                assert_eq!(
                    print(&fixture, "--print-execstack", &ours),
                    format!("execstack: {state}\n"),
                    "{context}"
                );
                let line = gnu_stack_line(&ours).unwrap();
                if let Some(theirs) = real_patchelf(&fixture, &stripped, &[operation]) {
                    assert_eq!(Some(&line), gnu_stack_line(&theirs).as_ref(), "{context}");
                }
                if keep_slot {
                    assert_eq!(
                        fs_err::metadata(&ours).unwrap().len(),
                        fs_err::metadata(&stripped).unwrap().len(),
                        "{context}: the PT_NULL slot is reused"
                    );
                }
                assert_readelf_clean(&ours);
                if name == "program" {
                    assert_eq!(run_program(&ours), EXPECTED, "{context}");
                } else {
                    fs_err::copy(&ours, &library).unwrap();
                    assert_eq!(run_program(&program), EXPECTED, "{context}");
                    fs_err::copy(&pristine, &library).unwrap();
                }
                let before = fs_err::read(&ours).unwrap();
                run_ok(fixture.patchelf().arg(operation).arg(&ours));
                assert_eq!(before, fs_err::read(&ours).unwrap(), "{context}: again");
            }
        }
    }
}

/// `--print-execstack`, `--set-execstack`, `--clear-execstack` and `--add-debug-tag` (patchelf
/// 0.19): the execstack edits give byte-identical files to the real patchelf, the printed state
/// matches, the edited programs still run (an executable stack is really granted: readelf says
/// `RWE`), and a library with a new `DT_DEBUG` still loads.
#[test]
fn execstack_and_debug_tag_options() {
    let fixture = Fixture::new();
    let library = fixture.library("answer", &[]);
    let rpath = format!("-Wl,-rpath,{}", fixture.dir.path().display());
    let program = fixture.program("main", &[&rpath]);
    for (name, file) in [("library", &library), ("program", &program)] {
        for (operation, state) in [("--set-execstack", "X"), ("--clear-execstack", "-")] {
            let ours = fixture.copy(file, "ours");
            run_ok(fixture.patchelf().arg(operation).arg(&ours));
            let printed = print(&fixture, "--print-execstack", &ours);
            assert_eq!(
                printed,
                format!("execstack: {state}\n"),
                "{name} {operation}"
            );
            if let Some(theirs) = real_patchelf(&fixture, file, &[operation]) {
                assert_eq!(
                    fs_err::read(&ours).unwrap(),
                    fs_err::read(&theirs).unwrap(),
                    "{name} {operation}: differs from patchelf"
                );
                let output = run_ok(
                    Command::new("patchelf")
                        .arg("--print-execstack")
                        .arg(&theirs),
                );
                assert_eq!(String::from_utf8_lossy(&output.stdout), printed);
            }
            let headers = run_ok(Command::new("readelf").args(["-l", "-W"]).arg(&ours));
            let stack = String::from_utf8_lossy(&headers.stdout)
                .lines()
                .find(|line| line.contains("GNU_STACK"))
                .map(str::to_owned)
                .unwrap();
            assert_eq!(stack.contains("RWE"), state == "X", "{stack}");
            assert_readelf_clean(&ours);
            if name == "program" {
                assert_eq!(run_program(&ours), EXPECTED);
            }
            // The same edit again changes nothing.
            let before = fs_err::read(&ours).unwrap();
            run_ok(fixture.patchelf().arg(operation).arg(&ours));
            assert_eq!(before, fs_err::read(&ours).unwrap());
        }
    }
    // Printing wins over an edit given with it, as in patchelf.
    let ours = fixture.copy(&program, "ours");
    let before = fs_err::read(&ours).unwrap();
    let output = run_ok(
        fixture
            .patchelf()
            .args(["--print-execstack", "--set-execstack"])
            .arg(&ours),
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "execstack: -\n");
    assert_eq!(before, fs_err::read(&ours).unwrap());

    let debug_entries = |file: &Path| -> Vec<usize> {
        let output = run_ok(Command::new("readelf").args(["-d", "-W"]).arg(file));
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| line.trim().starts_with("0x"))
            .enumerate()
            .filter(|(_, line)| line.contains("(DEBUG)"))
            .map(|(index, _)| index)
            .collect()
    };
    // A library gets a DT_DEBUG in front; the program loading it still runs; twice is once.
    let tagged = fixture.path("libanswer.so");
    assert!(debug_entries(&tagged).is_empty());
    for _ in 0..2 {
        run_ok(fixture.patchelf().arg("--add-debug-tag").arg(&tagged));
        assert_eq!(debug_entries(&tagged), [0]);
    }
    assert_readelf_clean(&tagged);
    assert_eq!(run_program(&program), EXPECTED);
}

/// A new `PT_LOAD` takes the alignment the file's LOADs use (here 0x10000 on x86-64, whose ABI
/// page is 0x1000), and the library still loads; a run path is refused for a static-pie, which
/// glibc cannot start with one; a missing `@FILE` value is named as patchelf names it.
#[test]
fn new_load_alignment_static_pie_and_at_file_errors() {
    let fixture = Fixture::new();
    let library = fixture.library("answer", &["-Wl,-z,max-page-size=0x10000"]);
    let program = fixture.program("main", &[]);
    let long = format!("{}:/{}", fixture.dir.path().display(), "r".repeat(300));
    run_ok(
        fixture
            .patchelf()
            .arg("--set-rpath")
            .arg(&long)
            .arg(&library),
    );
    run_ok(
        fixture
            .patchelf()
            .arg("--set-rpath")
            .arg(&long)
            .arg(&program),
    );
    let headers = run_ok(Command::new("readelf").args(["-l", "-W"]).arg(&library));
    let aligns: Vec<String> = String::from_utf8_lossy(&headers.stdout)
        .lines()
        .filter(|line| line.trim_start().starts_with("LOAD"))
        .map(|line| line.split_whitespace().last().unwrap().to_owned())
        .collect();
    assert!(aligns.len() >= 5, "a new LOAD was added: {aligns:?}");
    assert!(aligns.iter().all(|align| align == "0x10000"), "{aligns:?}");
    assert_readelf_clean(&library);
    assert_eq!(run_program(&program), EXPECTED);

    let static_pie = fixture.path("static-pie");
    let built = run(Command::new("gcc")
        .current_dir(fixture.dir.path())
        .args(["-static-pie", "-o"])
        .arg(&static_pie)
        .arg("main.c")
        .arg("answer.c"));
    if built.status.success() {
        let before = fs_err::read(&static_pie).unwrap();
        let output = run(fixture
            .patchelf()
            .args(["--set-rpath", "/x"])
            .arg(&static_pie));
        assert_eq!(output.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("cannot patch `") && stderr.contains("static-pie`: unsupported:"),
            "{stderr}"
        );
        assert_eq!(before, fs_err::read(&static_pie).unwrap());
        assert_eq!(run_program(&static_pie), EXPECTED);
    } else {
        eprintln!("skipping the static-pie case: gcc -static-pie failed (no static libc?)");
    }

    let output = run(fixture
        .patchelf()
        .args(["--set-rpath", "@no-such-value-file"])
        .arg(&program));
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "error: getting info about 'no-such-value-file' (the value of --set-rpath): \
             cannot read `no-such-value-file`: No such file"
        ),
        "{stderr}"
    );
}

/// `storepatch --set-rpath … FILE` (no `elf`) is a patchelf command line and runs as
/// `storepatch elf`; other unknown options stay clap errors.
#[test]
fn patchelf_command_line_without_the_subcommand() {
    let fixture = Fixture::new();
    let program = fixture.program("main", &[]);
    let dir = fixture.dir.path().display().to_string();
    let storepatch = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_storepatch"));
        command.current_dir(fixture.dir.path());
        command
    };
    run_ok(storepatch().args(["--set-rpath", &dir]).arg(&program));
    let output = run_ok(storepatch().arg("--print-rpath").arg(&program));
    assert_eq!(String::from_utf8_lossy(&output.stdout), format!("{dir}\n"));
    assert_eq!(run_program(&program), EXPECTED);
    let output = run_ok(fixture.patchelf().arg("--print-rpath").arg(&program));
    assert_eq!(String::from_utf8_lossy(&output.stdout), format!("{dir}\n"));
    // patchelf's exit status on errors, not storepatch's.
    let output = run(storepatch()
        .arg("--print-rpath")
        .arg(fixture.path("missing")));
    assert_eq!(output.status.code(), Some(1));
    let output = run(storepatch().arg("--no-such-option").arg(&program));
    assert_eq!(output.status.code(), Some(2));
}

/// When `.dynstr` moves into the new segment, its old copy is cleared: the old run path (a store
/// path) is gone from every byte of the file, and the program still runs, strips and reads clean.
#[test]
fn moved_string_table_leaves_no_stale_strings() {
    let fixture = Fixture::new();
    let old = "/nix/store/00000000000000000000000000000000-stale-path/lib";
    let program = fixture.program(
        "main",
        &[&format!(
            "-Wl,-rpath,{old}:{}",
            fixture.dir.path().display()
        )],
    );
    assert!(contains(&fs_err::read(&program).unwrap(), old.as_bytes()));
    let new = format!("{}:/{}", fixture.dir.path().display(), "n".repeat(400));
    run_ok(
        fixture
            .patchelf()
            .arg("--set-rpath")
            .arg(&new)
            .arg(&program),
    );
    let bytes = fs_err::read(&program).unwrap();
    assert!(
        !contains(&bytes, old.as_bytes()),
        "the old run path survived"
    );
    assert!(!contains(&bytes, b"stale-path"));
    assert_eq!(
        print(&fixture, "--print-rpath", &program),
        format!("{new}\n")
    );
    assert_healthy_program(&program);
}

/// Tools that rewrite a file from its section headers, as build systems run them after patchelf:
/// binutils `strip` (all, and debug only), elfutils `eu-strip` and a plain `objcopy` copy.
const STRIPPERS: &[&[&str]] = &[
    &["strip"],
    &["strip", "--strip-debug"],
    &["eu-strip"],
    &["objcopy"],
];

/// Puts each stripper's output of `library` in a directory of its own and runs `program` (which
/// needs that library) against it: each must still load it, and `readelf -a` must not warn.
fn assert_library_survives_strippers(library: &Path, program: &Path) {
    let name = library.file_name().unwrap();
    for tool in STRIPPERS {
        let dir = library.with_file_name(format!("{}-{}", tool.join("-"), name.display()));
        fs_err::create_dir_all(&dir).unwrap();
        let stripped = dir.join(name);
        fs_err::copy(library, &stripped).unwrap();
        let output = run_ok(Command::new(tool[0]).args(&tool[1..]).arg(&stripped));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.trim().is_empty(), "{tool:?} warns:\n{stderr}");
        assert_readelf_clean(&stripped);
        let output = run(Command::new(program)
            .env("LD_BIND_NOW", "1")
            .env("LD_LIBRARY_PATH", &dir));
        assert!(
            output.status.success(),
            "{} does not load after {tool:?}: {}",
            program.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            EXPECTED,
            "{tool:?}"
        );
    }
}

/// Indexes (in program header order) of the `PT_LOAD`s that map no section, from `readelf -lW`.
fn loads_without_sections(file: &Path) -> Vec<usize> {
    let output = run_ok(Command::new("readelf").args(["-l", "-W"]).arg(file));
    let text = String::from_utf8_lossy(&output.stdout);
    let types: Vec<&str> = text
        .lines()
        .skip_while(|line| !line.trim_start().starts_with("Type "))
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .filter(|line| !line.trim_start().starts_with('['))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    let mapping: Vec<usize> = text
        .lines()
        .skip_while(|line| !line.contains("Segment Sections..."))
        .skip(1)
        .map_while(|line| {
            let mut words = line.split_whitespace();
            words.next()?.parse::<usize>().ok()?;
            Some(words.count())
        })
        .collect();
    assert_eq!(types.len(), mapping.len(), "{text}");
    types
        .iter()
        .zip(&mapping)
        .enumerate()
        .filter(|(_, (kind, sections))| **kind == "LOAD" && **sections == 0)
        .map(|(index, _)| index)
        .collect()
}

/// `readelf -h`'s section header table offset, entry size and count.
fn section_header_table(file: &Path) -> (u64, u64, u64) {
    let output = run_ok(Command::new("readelf").args(["-h", "-W"]).arg(file));
    let text = String::from_utf8_lossy(&output.stdout);
    let field = |name: &str| -> u64 {
        let line = text
            .lines()
            .find(|line| line.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no {name:?} in readelf -h:\n{text}"));
        line.split(':')
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    (
        field("Start of section headers"),
        field("Size of section headers"),
        field("Number of section headers"),
    )
}

fn assert_section_headers_end_the_file(file: &Path) {
    let (offset, entry_size, count) = section_header_table(file);
    let size = fs_err::metadata(file).unwrap().len();
    assert_eq!(
        offset + entry_size * count,
        size,
        "the section header table of {} does not end the file",
        file.display()
    );
}

/// A run path long enough to grow any `.dynstr`, starting with `dir` so the program still finds
/// its library.
fn growing_run_path(dir: &Path, tag: char) -> String {
    format!(
        "{}:/nix/store/{}-openssl-3.4.1/lib:/nix/store/{}-glibc-2.40-66/lib",
        dir.display(),
        tag.to_string().repeat(32),
        tag.to_string().repeat(32)
    )
}

/// The layout patchelf's relayout leaves in manylinux wheels (psycopg-binary's bundled libssl):
/// `.dynstr` alone in a `PT_LOAD` of its own. Built here with ld, from its default linker script
/// with `.dynstr` moved behind `.bss`. When a growing edit moves `.dynstr` out, that segment maps
/// no section any more; binutils `strip` and `objcopy` then turned it into an empty segment at an
/// offset not congruent to its address, which the loader refuses ("ELF load command
/// address/offset not page-aligned"). It becomes a `PT_NULL` instead, and the result survives
/// every stripper.
#[test]
fn grown_library_with_a_segment_for_dynstr_alone_survives_strip() {
    let fixture = Fixture::new();
    let script = run_ok(Command::new("gcc").current_dir(fixture.dir.path()).args([
        "-shared",
        "-fPIC",
        "-Wl,--verbose",
        "-o",
        "/dev/null",
        "answer.c",
    ]));
    let script = String::from_utf8(script.stdout).unwrap();
    let script: Vec<&str> = script
        .split("==================================================")
        .collect();
    assert_eq!(script.len(), 3, "ld --verbose printed no default script");
    let dynstr = "  .dynstr         : { *(.dynstr) }\n";
    let lbss = "  .lbss   :\n";
    assert!(
        script[1].contains(dynstr) && script[1].contains(lbss),
        "{}",
        script[1]
    );
    let script = script[1].replacen(dynstr, "", 1).replacen(
        lbss,
        &format!("  . = ALIGN(CONSTANT (MAXPAGESIZE));\n{dynstr}{lbss}"),
        1,
    );
    fs_err::write(fixture.path("lonely-dynstr.ld"), script).unwrap();
    let lib = fixture.path("lib");
    fs_err::create_dir(&lib).unwrap();
    let library = lib.join("libanswer.so");
    fs_err::rename(
        fixture.library("answer", &["-Wl,-T,lonely-dynstr.ld"]),
        &library,
    )
    .unwrap();
    let lines = run_ok(Command::new("readelf").args(["-l", "-W"]).arg(&library));
    let lines = String::from_utf8_lossy(&lines.stdout);
    assert!(
        lines
            .lines()
            .any(|line| line.split_whitespace().skip(1).eq([".dynstr"])),
        "the fixture has no segment for .dynstr alone:\n{lines}"
    );
    let program = fixture.program("main", &["-Llib", &format!("-Wl,-rpath,{}", lib.display())]);
    assert_eq!(run_program(&program), EXPECTED);

    run_ok(
        fixture
            .patchelf()
            .arg("--set-rpath")
            .arg(growing_run_path(&lib, 'a'))
            .arg(&library),
    );
    assert_eq!(loads_without_sections(&library), Vec::<usize>::new());
    assert_readelf_clean(&library);
    assert_section_headers_end_the_file(&library);
    assert_eq!(run_program(&program), EXPECTED);
    assert_library_survives_strippers(&library, &program);
}

/// A plain gcc library and program, grown twice (the second edit grows the segment the first
/// one added): the section header table still ends the file, every `PT_LOAD` maps a section, and
/// the results load after every stripper.
#[test]
fn grown_files_keep_section_headers_last_and_survive_strip() {
    let fixture = Fixture::new();
    let lib = fixture.path("lib");
    fs_err::create_dir(&lib).unwrap();
    let library = lib.join("libanswer.so");
    fs_err::rename(fixture.library("answer", &[]), &library).unwrap();
    let program = fixture.program("main", &["-Llib", &format!("-Wl,-rpath,{}", lib.display())]);
    assert_section_headers_end_the_file(&library);
    let size = fs_err::metadata(&library).unwrap().len();
    for (round, tag) in ['a', 'b'].into_iter().enumerate() {
        let run_path = format!(
            "{}:/{}",
            growing_run_path(&lib, tag),
            "x".repeat(round * 300)
        );
        run_ok(
            fixture
                .patchelf()
                .arg("--set-rpath")
                .arg(&run_path)
                .arg(&library),
        );
        assert!(fs_err::metadata(&library).unwrap().len() > size);
        assert_section_headers_end_the_file(&library);
        assert_eq!(loads_without_sections(&library), Vec::<usize>::new());
        assert_readelf_clean(&library);
        assert_eq!(run_program(&program), EXPECTED);
        assert_library_survives_strippers(&library, &program);

        run_ok(
            fixture
                .patchelf()
                .arg("--set-rpath")
                .arg(&run_path)
                .arg(&program),
        );
        assert_section_headers_end_the_file(&program);
        assert_eq!(loads_without_sections(&program), Vec::<usize>::new());
        assert_healthy_program(&program);
    }
    // The second growth reused the first one's segment rather than adding another.
    let headers = run_ok(Command::new("readelf").args(["-l", "-W"]).arg(&library));
    let loads = String::from_utf8_lossy(&headers.stdout)
        .lines()
        .filter(|line| line.trim_start().starts_with("LOAD "))
        .count();
    let original = fixture.library("fresh", &[]);
    let headers = run_ok(Command::new("readelf").args(["-l", "-W"]).arg(&original));
    let original_loads = String::from_utf8_lossy(&headers.stdout)
        .lines()
        .filter(|line| line.trim_start().starts_with("LOAD "))
        .count();
    assert_eq!(loads, original_loads + 1);
}

/// The real file behind the layout above: psycopg-binary 3.2.9's bundled libssl, which an earlier
/// patchelf relayout (auditwheel's) left with `.dynstr` alone in its last segment, one byte short
/// of the end of the file. A growing run path now grows that segment, as patchelf does, and the
/// library loads (under Python's ctypes) after every stripper.
#[test]
fn psycopg_bundled_libssl_survives_strip_after_growth() {
    let Some(unpacked) = wheel("psycopg-binary==3.2.9") else {
        return;
    };
    let libs = unpacked.join("psycopg_binary.libs");
    let original = fs_err::read_dir(&libs)
        .unwrap()
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("libssl-")
        })
        .expect("the wheel bundles libssl");
    let fixture = Fixture::new();
    let library = fixture.copy(&original, "libssl.so.3");
    run_ok(
        fixture
            .patchelf()
            .arg("--set-rpath")
            .arg(growing_run_path(&libs, 'c'))
            .arg(&library),
    );
    assert_eq!(loads_without_sections(&library), Vec::<usize>::new());
    assert_readelf_clean(&library);
    for tool in STRIPPERS {
        let stripped = fixture.path(&format!("{}.so", tool.join("-")));
        fs_err::copy(&library, &stripped).unwrap();
        run_ok(Command::new(tool[0]).args(&tool[1..]).arg(&stripped));
        assert_readelf_clean(&stripped);
        let output = run(Command::new("python3")
            .args([
                "-c",
                "import ctypes, sys; ctypes.CDLL(sys.argv[1]); print('loaded')",
            ])
            .arg(&stripped));
        assert!(
            output.status.success(),
            "libssl does not load after {tool:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Counts the runs of `byte` at least `at_least` long.
fn runs_of(bytes: &[u8], byte: u8, at_least: usize) -> usize {
    bytes
        .split(|&b| b != byte)
        .filter(|run| run.len() >= at_least)
        .count()
}

/// An old run path that nothing else shares is overwritten with `X` bytes, as patchelf does
/// (patchelf's `shared-rpath.sh` counts them): in place up to its terminator behind a shorter new
/// one, and in the copy of a grown `.dynstr`, whose old bytes are cleared, so that exactly one
/// run of `X` is left and no old byte of the run path survives.
#[test]
fn old_run_path_is_overwritten_with_x() {
    let fixture = Fixture::new();
    let dir = fixture.dir.path().display().to_string();
    let old = format!("{dir}:/nix/store/{}-old-dependency/lib", "q".repeat(32));
    let program = fixture.program("main", &[&format!("-Wl,-rpath,{old}")]);
    assert_eq!(runs_of(&fs_err::read(&program).unwrap(), b'X', 8), 0);

    let shorter = fixture.copy(&program, "shorter");
    run_ok(
        fixture
            .patchelf()
            .arg("--set-rpath")
            .arg(&dir)
            .arg(&shorter),
    );
    let bytes = fs_err::read(&shorter).unwrap();
    let mut expected = dir.clone().into_bytes();
    expected.push(0);
    expected.extend(std::iter::repeat_n(b'X', old.len() - dir.len() - 1));
    expected.push(0);
    assert!(contains(&bytes, &expected), "no {dir}\\0XXX…\\0 in place");
    assert!(!contains(&bytes, b"old-dependency"));
    assert_eq!(runs_of(&bytes, b'X', 8), 1);
    assert_healthy_program(&shorter);

    let longer = fixture.copy(&program, "longer");
    let new = format!("{dir}:/{}", "n".repeat(300));
    run_ok(fixture.patchelf().arg("--set-rpath").arg(&new).arg(&longer));
    let bytes = fs_err::read(&longer).unwrap();
    let mut tainted = vec![0];
    tainted.extend(std::iter::repeat_n(b'X', old.len()));
    tainted.push(0);
    assert!(
        contains(&bytes, &tainted),
        "the copied old run path is not all X"
    );
    assert!(!contains(&bytes, b"old-dependency"));
    assert_eq!(runs_of(&bytes, b'X', 8), 1);
    assert_eq!(
        print(&fixture, "--print-rpath", &longer),
        format!("{new}\n")
    );
    assert_healthy_program(&longer);
}

/// The bytes of `file`'s `.note.nixos.ldcache` section, or `None` without one.
fn resolution_cache_note(file: &Path) -> Option<Vec<u8>> {
    let sections = run_ok(Command::new("readelf").args(["-S", "-W"]).arg(file));
    let count = String::from_utf8_lossy(&sections.stdout)
        .matches(".note.nixos.ldcache")
        .count();
    if count == 0 {
        return None;
    }
    assert_eq!(count, 1, "more than one resolution cache note");
    let out = file.with_extension("note");
    run_ok(
        Command::new("objcopy")
            .args(["-O", "binary", "--only-section=.note.nixos.ldcache"])
            .arg(file)
            .arg(&out),
    );
    Some(fs_err::read(out).unwrap())
}

/// `--build-resolution-cache` records, per needed library, where the run path resolves it
/// (`=path`) and which entries only the loader can search (`?dir`: empty, relative, `$ORIGIN`,
/// a directory with `glibc-hwcaps`), in an allocated `NixOS` note with a `PT_NOTE`, byte for
/// byte as patchelf writes it; the program still runs and strips; building again changes nothing.
#[test]
fn resolution_cache_note_is_built_as_patchelf_builds_it() {
    let fixture = Fixture::new();
    let dir = fixture.dir.path().display().to_string();
    let hw = fixture.path("hw");
    fs_err::create_dir_all(hw.join("glibc-hwcaps")).unwrap();
    let run_path = format!("{dir}:$ORIGIN/x::{}:rel/dir:{dir}", hw.display());
    let program = fixture.program("main", &[]);
    run_ok(
        fixture
            .patchelf()
            .arg("--set-rpath")
            .arg(&run_path)
            .arg(&program),
    );
    assert_eq!(resolution_cache_note(&program), None);
    let uncached = fixture.copy(&program, "uncached");

    run_ok(
        fixture
            .patchelf()
            .arg("--build-resolution-cache")
            .arg(&program),
    );
    let note = resolution_cache_note(&program).expect("a resolution cache note");
    let hints = format!("?$ORIGIN/x:?:?{}:?rel/dir", hw.display());
    let descriptor = format!(
        "libanswer.so\0={dir}/libanswer.so:{hints}:={dir}/libanswer.so\0libc.so.6\0{hints}\0\0"
    );
    let mut expected = Vec::new();
    for word in [6, u32::try_from(descriptor.len()).unwrap(), 0x63a8_6cb6] {
        expected.extend(word.to_le_bytes());
    }
    expected.extend(b"NixOS\0\0\0");
    expected.extend(descriptor.as_bytes());
    expected.resize(expected.len().next_multiple_of(4), 0);
    assert_eq!(
        String::from_utf8_lossy(&note),
        String::from_utf8_lossy(&expected)
    );
    let notes = run_ok(Command::new("readelf").args(["-n", "-W"]).arg(&program));
    assert!(String::from_utf8_lossy(&notes.stdout).contains("NixOS"));
    let sections = run_ok(Command::new("readelf").args(["-S", "-W"]).arg(&program));
    let line = String::from_utf8_lossy(&sections.stdout)
        .lines()
        .find(|line| line.contains(".note.nixos.ldcache"))
        .map(str::to_owned)
        .unwrap();
    assert!(line.contains(" NOTE ") && line.contains(" A "), "{line}");
    let headers = run_ok(Command::new("readelf").args(["-l", "-W"]).arg(&program));
    let headers = String::from_utf8_lossy(&headers.stdout).into_owned();
    let note_offset = line.split_whitespace().nth(4).unwrap().to_owned();
    assert!(
        headers.lines().any(|l| l.trim_start().starts_with("NOTE ")
            && l.contains(&format!("0x{note_offset}"))),
        "no PT_NOTE maps the note:\n{headers}"
    );
    assert_eq!(loads_without_sections(&program), Vec::<usize>::new());
    assert_section_headers_end_the_file(&program);
    assert_healthy_program(&program);

    let before = fs_err::read(&program).unwrap();
    run_ok(
        fixture
            .patchelf()
            .arg("--build-resolution-cache")
            .arg(&program),
    );
    assert_eq!(
        fs_err::read(&program).unwrap(),
        before,
        "building twice changed the file"
    );

    // The same note as the real patchelf's, where it is on PATH.
    if let Some(theirs) = real_patchelf(&fixture, &uncached, &["--build-resolution-cache"]) {
        assert_eq!(resolution_cache_note(&theirs), Some(note));
    }
}

/// Edits that change what the note says (the run path, the needed libraries) remove it and clear
/// its bytes; edits that change nothing keep it; a note that differs from what would be built is
/// an error, as is `--force-rpath` with the option; without a run path there is a warning and no
/// note. The results still run.
#[test]
fn resolution_cache_note_goes_when_it_would_be_stale() {
    let fixture = Fixture::new();
    let dir = fixture.dir.path().display().to_string();
    let other = fixture.path("other");
    fs_err::create_dir(&other).unwrap();
    fs_err::copy(fixture.library("answer", &[]), other.join("libanswer.so")).unwrap();
    let program = fixture.program("main", &[&format!("-Wl,-rpath,{dir}")]);
    let cached = |name: &str| {
        let copy = fixture.copy(&program, name);
        run_ok(
            fixture
                .patchelf()
                .arg("--build-resolution-cache")
                .arg(&copy),
        );
        assert!(resolution_cache_note(&copy).is_some());
        copy
    };
    let resolved = format!("={dir}/libanswer.so");
    let edits: Vec<(&str, Vec<String>, bool)> = vec![
        (
            "set",
            vec!["--set-rpath".into(), other.display().to_string()],
            false,
        ),
        (
            "grow",
            vec!["--set-rpath".into(), format!("{dir}:/{}", "g".repeat(300))],
            false,
        ),
        (
            "add",
            vec!["--add-rpath".into(), other.display().to_string()],
            false,
        ),
        ("remove", vec!["--remove-rpath".into()], false),
        (
            "add-needed",
            vec!["--add-needed".into(), "libm.so.6".into()],
            false,
        ),
        (
            "replace-needed",
            vec![
                "--replace-needed".into(),
                "libanswer.so".into(),
                "libanswer.so".into(),
            ],
            true,
        ),
        (
            "remove-absent",
            vec!["--remove-needed".into(), "libabsent.so".into()],
            true,
        ),
        ("same-rpath", vec!["--set-rpath".into(), dir.clone()], true),
        (
            "soname",
            vec!["--set-soname".into(), "libmain.so".into()],
            true,
        ),
    ];
    for (name, args, kept) in edits {
        let file = cached(name);
        run_ok(fixture.patchelf().args(&args).arg(&file));
        assert_eq!(resolution_cache_note(&file).is_some(), kept, "{name}");
        if !kept {
            assert!(
                !contains(&fs_err::read(&file).unwrap(), resolved.as_bytes()),
                "{name}: the old note's bytes survive"
            );
        }
        assert_readelf_clean(&file);
        if name != "remove" {
            let output = run(Command::new(&file)
                .env("LD_BIND_NOW", "1")
                .env("LD_LIBRARY_PATH", &other));
            assert!(output.status.success(), "{name}");
            assert_strip_works(&file, None);
        }
    }

    // Rebuilt after a run path change: the new place.
    let file = cached("rebuilt");
    run_ok(fixture.patchelf().arg("--set-rpath").arg(&other).arg(&file));
    run_ok(
        fixture
            .patchelf()
            .arg("--build-resolution-cache")
            .arg(&file),
    );
    let note = resolution_cache_note(&file).unwrap();
    let moved = format!("={}/libanswer.so", other.display());
    assert!(contains(&note, moved.as_bytes()));
    assert_eq!(run_program(&file), EXPECTED);

    // A note that says something else is never rebuilt in place.
    let stale = fixture.copy(&program, "stale");
    fs_err::write(fixture.path("garbage"), "stale").unwrap();
    run_ok(
        Command::new("objcopy")
            .arg("--add-section")
            .arg(format!(
                ".note.nixos.ldcache={}",
                fixture.path("garbage").display()
            ))
            .arg(&stale),
    );
    let before = fs_err::read(&stale).unwrap();
    let output = run(fixture
        .patchelf()
        .arg("--build-resolution-cache")
        .arg(&stale));
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("already present"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(fs_err::read(&stale).unwrap(), before);

    // No run path: a warning, and nothing written.
    let bare = fixture.copy(&program, "bare");
    run_ok(fixture.patchelf().arg("--remove-rpath").arg(&bare));
    let before = fs_err::read(&bare).unwrap();
    let output = run_ok(
        fixture
            .patchelf()
            .arg("--build-resolution-cache")
            .arg(&bare),
    );
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("warning: --build-resolution-cache: no DT_NEEDED entries or run path"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(fs_err::read(&bare).unwrap(), before);

    let output = run(fixture
        .patchelf()
        .args(["--force-rpath", "--build-resolution-cache"])
        .arg(&bare));
    assert_eq!(output.status.code(), Some(1));
}

/// `--no-clobber-old-sections` keeps the old copy of a moved `.dynstr`, as the real patchelf
/// keeps it; without it the old copy is cleared. Measured by how often a string that lives only
/// in `.dynstr` (the soname) is in the file after a run path too long to fit in place, side by
/// side with the real patchelf.
#[test]
fn no_clobber_old_sections_keeps_the_old_dynstr_as_patchelf_does() {
    let fixture = Fixture::new();
    let dir = fixture.dir.path().display().to_string();
    let marker = "libmarker-qzqzqz.so.1";
    let program = fixture.program("main", &[&format!("-Wl,-soname,{marker}")]);
    let copies = |bytes: &[u8]| {
        bytes
            .windows(marker.len())
            .filter(|window| *window == marker.as_bytes())
            .count()
    };
    assert_eq!(copies(&fs_err::read(&program).unwrap()), 1);
    let grown = format!("{dir}:/{}", "n".repeat(300));
    for (flags, expected) in [(&[][..], 1), (&["--no-clobber-old-sections"][..], 2)] {
        let ours = fixture.copy(&program, "ours");
        run_ok(
            fixture
                .patchelf()
                .args(flags)
                .arg("--set-rpath")
                .arg(&grown)
                .arg(&ours),
        );
        let bytes = fs_err::read(&ours).unwrap();
        assert_eq!(copies(&bytes), expected, "{flags:?}");
        assert_eq!(
            print(&fixture, "--print-rpath", &ours),
            format!("{grown}\n"),
            "{flags:?}"
        );
        assert_healthy_program(&ours);
        let mut args: Vec<&str> = flags.to_vec();
        args.extend(["--set-rpath", &grown]);
        if let Some(theirs) = real_patchelf(&fixture, &program, &args) {
            assert_eq!(
                copies(&fs_err::read(&theirs).unwrap()),
                expected,
                "patchelf {flags:?}"
            );
        }
    }
}
