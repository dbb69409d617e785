//! Foreign architectures for real: programs and libraries built with Debian's cross compilers
//! (32-bit little-endian i686, 32-bit big-endian powerpc, 64-bit big-endian s390x, 64 KiB-page
//! aarch64), edited by `storepatch elf` and relinked by `storepatch relink`, then *run* under
//! `qemu-<arch> -L <sysroot>` and read by the cross `readelf` without a warning.
//!
//! `.ci/install-deps` installs the tools; where one is missing locally its architecture is
//! skipped with a message saying which.
#![expect(
    clippy::print_stderr,
    reason = "a skipped architecture says so loudly instead of passing silently"
)]
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::run_ok;

/// One target: GNU triple, qemu binary, expected `e_machine` name in readelf's header dump.
struct Arch {
    triple: &'static str,
    qemu: &'static str,
    machine: &'static str,
}

const ARCHES: &[Arch] = &[
    Arch {
        triple: "i686-linux-gnu",
        qemu: "qemu-i386",
        machine: "Intel 80386",
    },
    Arch {
        triple: "powerpc-linux-gnu",
        qemu: "qemu-ppc",
        machine: "PowerPC",
    },
    Arch {
        triple: "s390x-linux-gnu",
        qemu: "qemu-s390x",
        machine: "IBM S/390",
    },
    Arch {
        triple: "aarch64-linux-gnu",
        qemu: "qemu-aarch64",
        machine: "AArch64",
    },
];

const LIBRARY_SOURCE: &str = "int answer(void) { return 42; }\n";
const EXTRA_SOURCE: &str = "int extra(void) { return 7; }\n";
const PROGRAM_SOURCE: &str = "#include <stdio.h>\nextern int answer(void);\n\
    int main(void) { printf(\"answer=%d\\n\", answer()); return 0; }\n";
const EXPECTED: &str = "answer=42\n";

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

/// A temporary directory with the sources, and the tools of one architecture.
struct Cross<'a> {
    arch: &'a Arch,
    dir: tempfile::TempDir,
    sysroot: PathBuf,
}

impl<'a> Cross<'a> {
    /// `None`, with a message, when a tool of this architecture is missing.
    fn new(arch: &'a Arch) -> Option<Self> {
        let sysroot = Path::new("/usr").join(arch.triple);
        let missing: Vec<String> = [
            format!("{}-gcc", arch.triple),
            format!("{}-readelf", arch.triple),
            arch.qemu.to_owned(),
        ]
        .into_iter()
        .filter(|tool| !on_path(tool))
        .collect();
        if !missing.is_empty() || !sysroot.join("lib").is_dir() {
            eprintln!(
                "SKIPPING {}: missing {missing:?} or the sysroot {} (.ci/install-deps installs them)",
                arch.triple,
                sysroot.display()
            );
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        for (name, source) in [
            ("answer.c", LIBRARY_SOURCE),
            ("extra.c", EXTRA_SOURCE),
            ("main.c", PROGRAM_SOURCE),
        ] {
            fs_err::write(dir.path().join(name), source).unwrap();
        }
        Some(Self { arch, dir, sysroot })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn gcc(&self, args: &[&str]) {
        run_ok(
            Command::new(format!("{}-gcc", self.arch.triple))
                .current_dir(self.dir.path())
                .args(args),
        );
    }

    /// Builds `lib<name>.so` from `<source>.c` with soname `lib<name>.so`.
    fn library(&self, name: &str, source: &str) -> PathBuf {
        let file = format!("lib{name}.so");
        self.gcc(&[
            "-shared",
            "-fPIC",
            "-o",
            &file,
            &format!("{source}.c"),
            &format!("-Wl,-soname,{file}"),
        ]);
        self.path(&file)
    }

    /// Builds `main` linked against `libanswer.so`, with no run path.
    fn program(&self) -> PathBuf {
        self.gcc(&["-o", "main", "main.c", "-L.", "-lanswer"]);
        self.path("main")
    }

    fn storepatch_elf(&self, args: &[&str], file: &Path) {
        run_ok(
            Command::new(env!("CARGO_BIN_EXE_storepatch"))
                .current_dir(self.dir.path())
                .arg("elf")
                .args(args)
                .arg(file),
        );
    }

    fn print(&self, option: &str, file: &Path) -> String {
        let output = run_ok(
            Command::new(env!("CARGO_BIN_EXE_storepatch"))
                .current_dir(self.dir.path())
                .args(["elf", option])
                .arg(file),
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Runs `program` under qemu with the sysroot; returns its stdout.
    fn run_program(&self, program: &Path) -> String {
        let output = run_ok(
            Command::new(self.arch.qemu)
                .arg("-L")
                .arg(&self.sysroot)
                .arg(program)
                .env("LD_BIND_NOW", "1")
                .env_remove("LD_LIBRARY_PATH")
                .current_dir(self.dir.path()),
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// The cross readelf reads everything without a warning, and sees the right machine.
    fn assert_readelf_clean(&self, file: &Path) {
        let output = run_ok(
            Command::new(format!("{}-readelf", self.arch.triple))
                .args(["-a", "-W"])
                .arg(file),
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.trim().is_empty(),
            "{}: readelf warns about {}:\n{stderr}",
            self.arch.triple,
            file.display()
        );
        assert!(
            String::from_utf8_lossy(&output.stdout).contains(self.arch.machine),
            "{}: not a {} file",
            file.display(),
            self.arch.machine
        );
    }

    /// The sysroot's dynamic loader, named by the program's `PT_INTERP`.
    fn loader(&self, program: &Path) -> PathBuf {
        let interpreter = self.print("--print-interpreter", program);
        self.sysroot
            .join(interpreter.trim().trim_start_matches('/'))
            .canonicalize()
            .unwrap()
    }
}

/// Every edit patchelf users make, on each architecture: a long run path and a long interpreter
/// in one pass, needed entries added, replaced and removed, a new soname; the same edits again;
/// then `storepatch relink` on the tree. Every step's program runs under qemu.
#[test]
fn foreign_architectures_edit_relink_and_run() {
    let mut ran = 0;
    for arch in ARCHES {
        let Some(cross) = Cross::new(arch) else {
            continue;
        };
        let triple = arch.triple;
        cross.library("answer", "answer");
        cross.library("extra", "extra");
        let program = cross.program();
        cross.assert_readelf_clean(&program);

        // A long interpreter: a symbolic link with a long name to the sysroot's loader (qemu
        // looks the interpreter up in the sysroot first, then as given).
        let long_dir = cross.path(&"d".repeat(120));
        fs_err::create_dir(&long_dir).unwrap();
        let interpreter = long_dir.join("ld-linux-long-name.so");
        std::os::unix::fs::symlink(cross.loader(&program), &interpreter).unwrap();
        let dir = cross.dir.path().display().to_string();
        let run_path = format!("{dir}:/{}", "r".repeat(300));
        let edits = [
            "--set-rpath",
            run_path.as_str(),
            "--set-interpreter",
            interpreter.to_str().unwrap(),
            "--add-needed",
            "libextra.so",
        ];
        for pass in 0..2 {
            cross.storepatch_elf(&edits, &program);
            assert_eq!(
                cross.print("--print-rpath", &program),
                format!("{run_path}\n"),
                "{triple} pass {pass}"
            );
            assert_eq!(
                cross.print("--print-interpreter", &program).trim(),
                interpreter.to_str().unwrap()
            );
            assert_eq!(
                cross.print("--print-needed", &program),
                "libextra.so\nlibanswer.so\nlibc.so.6\n",
                "{triple}"
            );
            assert_eq!(
                cross.run_program(&program),
                EXPECTED,
                "{triple} pass {pass}"
            );
            cross.assert_readelf_clean(&program);
        }
        // The same edits once more change no byte.
        let before = fs_err::read(&program).unwrap();
        cross.storepatch_elf(&edits, &program);
        assert_eq!(
            before,
            fs_err::read(&program).unwrap(),
            "{triple}: not idempotent"
        );

        // A renamed library: new soname, needed entry replaced, the extra one removed.
        let renamed = cross.path("libanswer-renamed.so");
        fs_err::copy(cross.path("libanswer.so"), &renamed).unwrap();
        cross.storepatch_elf(&["--set-soname", "libanswer-renamed.so"], &renamed);
        assert_eq!(
            cross.print("--print-soname", &renamed),
            "libanswer-renamed.so\n"
        );
        cross.assert_readelf_clean(&renamed);
        cross.storepatch_elf(
            &[
                "--replace-needed",
                "libanswer.so",
                "libanswer-renamed.so",
                "--remove-needed",
                "libextra.so",
            ],
            &program,
        );
        assert_eq!(
            cross.print("--print-needed", &program),
            "libanswer-renamed.so\nlibc.so.6\n"
        );
        fs_err::remove_file(cross.path("libanswer.so")).unwrap();
        assert_eq!(cross.run_program(&program), EXPECTED, "{triple} renamed");
        cross.assert_readelf_clean(&program);

        // Relink: the run path drops to what is needed, the program still runs.
        run_ok(
            Command::new(env!("CARGO_BIN_EXE_storepatch"))
                .arg("relink")
                .arg("--interpreter")
                .arg(&interpreter)
                .arg(cross.dir.path())
                .env_remove("NIX_BINTOOLS")
                .env("STOREPATCH_NO_PROGRESS", "1"),
        );
        let relinked = cross.print("--print-rpath", &program);
        assert!(
            !relinked.contains("rrrr"),
            "{triple}: relink kept an unneeded entry: {relinked}"
        );
        assert_eq!(cross.run_program(&program), EXPECTED, "{triple} relinked");
        cross.assert_readelf_clean(&program);
        cross.assert_readelf_clean(&renamed);
        ran += 1;
    }
    eprintln!("ran on {ran} of {} foreign architectures", ARCHES.len());
}
