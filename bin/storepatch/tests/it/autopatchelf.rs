//! autoPatchelfHook parity, knob by knob, on real gcc-built programs and libraries that are run
//! after the relink: auto-patchelf.py's command line, `runtimeDependencies`, `.note.dlopen`
//! groups, `patchelfFlags`, libc decided by its directory, search order, and the scenarios of
//! nixpkgs' own tests of the hook (`pkgs/test/auto-patchelf-hook*`).
use std::ffi::OsStr;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{json_lines, run_ok, storepatch};

/// A scratch build: C sources compiled with gcc into libraries and programs, a private copy of
/// the dynamic linker standing in for `$NIX_BINTOOLS`' one, and a fake `orig-libc/lib`.
struct Build {
    dir: tempfile::TempDir,
}

impl Build {
    fn new() -> Self {
        let build = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        let linker_dir = build.path("glibc/lib");
        fs_err::create_dir_all(&linker_dir).unwrap();
        fs_err::copy(
            "/lib64/ld-linux-x86-64.so.2",
            linker_dir.join("ld-linux-x86-64.so.2"),
        )
        .unwrap();
        for name in ["libc.so.6", "libm.so.6", "libdl.so.2", "libpthread.so.0"] {
            fs_err::write(linker_dir.join(name), "").unwrap();
        }
        fs_err::create_dir_all(build.path("bintools/nix-support")).unwrap();
        fs_err::write(
            build.path("bintools/nix-support/dynamic-linker"),
            format!("{}\n", linker_dir.join("ld-linux-x86-64.so.2").display()),
        )
        .unwrap();
        fs_err::write(
            build.path("bintools/nix-support/orig-libc"),
            format!("{}\n", build.path("glibc").display()),
        )
        .unwrap();
        build
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// Copies the first of the host's `candidates` that exists into the directory `dir` (a
    /// relative path, created), under its own name, and gives that directory.
    fn host_library(&self, dir: &str, candidates: &[&str]) -> PathBuf {
        let dir = self.path(dir);
        fs_err::create_dir_all(&dir).unwrap();
        let found = candidates
            .iter()
            .map(Path::new)
            .find(|path| path.is_file())
            .unwrap_or_else(|| panic!("the host has none of {candidates:?}"));
        fs_err::copy(found, dir.join(found.file_name().unwrap())).unwrap();
        dir
    }

    /// Compiles `source` into `output` (a relative path) with extra gcc arguments.
    fn gcc(&self, output: &str, source: &str, args: &[&str]) -> PathBuf {
        let out = self.path(output);
        fs_err::create_dir_all(out.parent().unwrap()).unwrap();
        let c_file = out.with_extension("c");
        let c_file = c_file.with_file_name(format!(
            "{}.src.c",
            out.file_name().unwrap().to_string_lossy()
        ));
        fs_err::write(&c_file, source).unwrap();
        let output = Command::new("gcc")
            .arg("-o")
            .arg(&out)
            .arg(&c_file)
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "gcc {output:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        fs_err::remove_file(&c_file).unwrap();
        out
    }

    /// `lib<name>.so` in `dir` exporting `int <name>(void)` returning `value`.
    fn library(&self, dir: &str, name: &str, value: i32, extra: &[&str]) -> PathBuf {
        self.gcc(
            &format!("{dir}/lib{name}.so"),
            &format!("int {name}(void) {{ return {value}; }}\n"),
            &[&["-shared", "-fPIC"], extra].concat(),
        )
    }

    /// `storepatch relink` with this build's `$NIX_BINTOOLS`.
    fn relink(&self) -> Command {
        let mut command = storepatch();
        command
            .arg("relink")
            .env("NIX_BINTOOLS", self.path("bintools"))
            .env_remove("NIX_STORE");
        command
    }
}

/// `DT_RUNPATH`, else `DT_RPATH`, of a file, with which of the two it is.
fn run_path(path: &Path) -> (Option<String>, &'static str) {
    let info = storepatch_elf::ElfInfo::parse(&fs_err::read(path).unwrap()).unwrap();
    match (&info.runpath, &info.rpath) {
        (Some(runpath), _) => (
            Some(String::from_utf8_lossy(runpath).into_owned()),
            "RUNPATH",
        ),
        (None, Some(rpath)) => (Some(String::from_utf8_lossy(rpath).into_owned()), "RPATH"),
        (None, None) => (None, "none"),
    }
}

fn run_program(path: &Path) -> Output {
    Command::new(path)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap()
}

fn stdout_of(path: &Path) -> String {
    let output = run_program(path);
    assert!(
        output.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn text(path: &Path) -> String {
    path.display().to_string()
}

/// Where a Debian-like host keeps gcc's `libgcc_s.so.1`.
const LIBGCC_S: [&str; 2] = [
    "/lib/x86_64-linux-gnu/libgcc_s.so.1",
    "/usr/lib/x86_64-linux-gnu/libgcc_s.so.1",
];

const MAIN_FOO: &str =
    "#include <stdio.h>\nint foo(void);\nint main(void) { printf(\"%d\\n\", foo()); return 0; }\n";

/// A program that calls `foo()` and `plugin()` from `libplugin.so`, loaded with dlopen by soname.
const MAIN_FOO_PLUGIN: &str = r#"#include <dlfcn.h>
#include <stdio.h>
int foo(void);
int main(void) {
    void *plugin = dlopen("libplugin.so", RTLD_NOW);
    if (!plugin) { fprintf(stderr, "%s\n", dlerror()); return 1; }
    int (*call)(void) = (int (*)(void))dlsym(plugin, "plugin");
    printf("%d %d\n", foo(), call());
    return 0;
}
"#;

/// auto-patchelf.py's own command line, as `autoPatchelfFlags` and the hook give it, is accepted
/// with its meaning: `runtimeDependencies` go first into dynamic executables only (the program
/// finds its dlopen'ed plugin there), libraries get what they need and the appended run paths,
/// empty `--ignore-missing` / `--extra-args` lists are fine, and `--preserve-origin` is accepted.
#[test]
fn auto_patchelf_command_line_and_runtime_dependencies_for_executables_only() {
    let build = Build::new();
    let foo = build.library("deps/foo/lib", "foo", 41, &[]);
    build.library("deps/rt/lib", "plugin", 1, &[]);
    let foo_dir = foo.parent().unwrap();
    let link = format!("-L{}", foo_dir.display());
    let app = build.gcc("out/bin/app", MAIN_FOO_PLUGIN, &[&link, "-lfoo", "-ldl"]);
    let libuse = build.gcc(
        "out/lib/libuse.so",
        MAIN_FOO.replace("int main(void)", "int use(void)").as_str(),
        &["-shared", "-fPIC", &link, "-lfoo"],
    );
    let out = build.path("out");
    let runtime = build.path("deps/rt");
    let output = run_ok(
        build
            .relink()
            .arg("--ignore-missing")
            .arg("--paths")
            .arg(&out)
            .arg("--libs")
            .arg(foo_dir)
            .arg(build.path("deps/none"))
            .arg("--runtime-dependencies")
            .arg(runtime.join("lib"))
            .arg("--append-rpaths")
            .arg("/opt/extra/lib")
            .arg("--preserve-origin")
            .arg("--extra-args"),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("2 files"), "{stderr}");
    assert_eq!(
        run_path(&app),
        (
            Some(format!(
                "{}:{}:/opt/extra/lib",
                text(&runtime.join("lib")),
                text(foo_dir)
            )),
            "RUNPATH"
        )
    );
    assert_eq!(
        run_path(&libuse),
        (Some(format!("{}:/opt/extra/lib", text(foo_dir))), "RUNPATH")
    );
    assert_eq!(stdout_of(&app), "41 1\n");
    // Idempotent: the run path that starts with the runtime dependencies is kept.
    let again = run_ok(
        build
            .relink()
            .arg("--runtime-dependency")
            .arg(runtime.join("lib"))
            .args(["--append-rpath", "/opt/extra/lib", "--library-path"])
            .arg(foo_dir)
            .args(["--json", "--"])
            .arg(&out),
    );
    let summary = json_lines(&again.stdout).pop().unwrap();
    assert_eq!(summary["patched"], 0, "{summary}");
}

/// A C source for a library with a `.note.dlopen` note holding `json`.
fn dlopen_note_library(json: &str) -> String {
    let escaped = json.replace('"', "\\\"");
    format!(
        r#"#define DESC "{escaped}"
struct note {{ unsigned namesz, descsz, type; char name[4]; char desc[(sizeof(DESC) + 3) & ~3]; }};
__attribute__((section(".note.dlopen"), used, aligned(4)))
static const struct note dlopen_note = {{ 4, sizeof(DESC), 0x407c0c0a, "FDO", DESC }};
int answer(void) {{ return 42; }}
"#
    )
}

/// A `.note.dlopen` entry is a priority group: the first alternative found satisfies it (and
/// its directory goes into the run path), and a group with no alternative found is one missing
/// dependency named `any(…)`, which an ignore pattern for one alternative lets pass.
#[test]
fn dlopen_note_groups_are_satisfied_by_one_alternative() {
    let build = Build::new();
    build.library("deps/second/lib", "second", 2, &[]);
    build.library("deps/first/lib", "first", 1, &[]);
    let module = build.gcc(
        "out/lib/libmodule.so",
        &dlopen_note_library(
            r#"[{"feature":"compression","soname":["libabsent.so.9","libsecond.so","libfirst.so"]},{"feature":"extra","soname":["libnothere.so.1","libnothere.so"]}]"#,
        ),
        &["-shared", "-fPIC"],
    );
    let relink = |extra: &[&str]| {
        build
            .relink()
            .arg("--json")
            .arg("--library-path")
            .arg(build.path("deps/first/lib"))
            .arg("--library-path")
            .arg(build.path("deps/second/lib"))
            .args(extra)
            .arg(build.path("out"))
            .output()
            .unwrap()
    };
    let failed = relink(&["--dry-run"]);
    assert_eq!(failed.status.code(), Some(1));
    let lines = json_lines(&failed.stdout);
    let missing: Vec<_> = lines
        .iter()
        .filter(|line| line["type"] == "missing")
        .collect();
    assert_eq!(missing.len(), 1, "{lines:?}");
    assert_eq!(missing[0]["name"]["text"], "libnothere.so.1");
    let human = build
        .relink()
        .args(["--dry-run", "--library-path"])
        .arg(build.path("deps/second/lib"))
        .arg(build.path("out"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&human.stderr);
    assert!(
        stderr.contains("libmodule.so: any(libnothere.so.1, libnothere.so) not found"),
        "{stderr}"
    );

    let passed = relink(&["--ignore-missing", "libnothere.so"]);
    assert!(
        passed.status.success(),
        "{}",
        String::from_utf8_lossy(&passed.stderr)
    );
    let record = json_lines(&passed.stdout)
        .into_iter()
        .find(|line| line["type"] == "relink")
        .unwrap();
    let group = &record["dependencies"][0];
    assert_eq!(group["kind"], "dlopen");
    assert_eq!(group["name"]["text"], "libsecond.so");
    assert_eq!(group["alternatives"].as_array().unwrap().len(), 3);
    // Only the found alternative's directory: libfirst.so is never needed.
    assert_eq!(
        run_path(&module).0,
        Some(text(&build.path("deps/second/lib")))
    );
}

/// `libgcc_s.so.1` is part of libc only when libc's directory holds it (nixpkgs' glibc does):
/// otherwise it is looked up like any library and gcc's `lib` goes into the run path.
#[test]
fn libgcc_s_is_libc_only_where_the_libc_directory_holds_it() {
    let build = Build::new();
    let gcc_lib = build.host_library("gcc-lib/lib", &LIBGCC_S);
    let source = "#include <stdio.h>\nint main(void) { puts(\"ok\"); return 0; }\n";
    let app = build.gcc("out/bin/app", source, &["-Wl,--no-as-needed", "-lgcc_s"]);
    let needed = storepatch_elf::ElfInfo::parse(&fs_err::read(&app).unwrap())
        .unwrap()
        .needed;
    assert!(needed.contains(&b"libgcc_s.so.1".to_vec()), "{needed:?}");
    let relink = || {
        run_ok(
            build
                .relink()
                .arg("--library-path")
                .arg(&gcc_lib)
                .arg(build.path("out")),
        )
    };
    relink();
    assert_eq!(run_path(&app).0, Some(text(&gcc_lib)));
    assert_eq!(stdout_of(&app), "ok\n");

    // Now libc's directory has it, as nixpkgs' glibc does: nothing to point at.
    let fresh = build.gcc("out/bin/app", source, &["-Wl,--no-as-needed", "-lgcc_s"]);
    fs_err::write(build.path("glibc/lib/libgcc_s.so.1"), "").unwrap();
    relink();
    assert_eq!(run_path(&fresh).0, None);
}

/// nixpkgs' `auto-patchelf-hook-preserve-origin` test: a bundle whose program finds its
/// libraries through `$ORIGIN/../lib` keeps that run path (no self-reference to the output), and
/// still runs, also after the tree is moved.
#[test]
fn origin_run_paths_that_resolve_are_kept_as_with_preserve_origin() {
    let build = Build::new();
    let foo = build.library("src/lib", "foo", 40, &[]);
    build.library("src/lib", "bar", 2, &[]);
    let source = "#include <stdio.h>\nint foo(void); int bar(void);\nint main(void) { printf(\"%d\\n\", foo() + bar()); return 0; }\n";
    let link = format!("-L{}", foo.parent().unwrap().display());
    build.gcc(
        "out/bin/lib-check",
        source,
        &[&link, "-lfoo", "-lbar", "-Wl,-rpath,$ORIGIN/../lib"],
    );
    fs_err::create_dir_all(build.path("out/lib")).unwrap();
    for name in ["libfoo.so", "libbar.so"] {
        fs_err::rename(
            build.path(&format!("src/lib/{name}")),
            build.path(&format!("out/lib/{name}")),
        )
        .unwrap();
    }
    let before_libs: Vec<_> = ["libfoo.so", "libbar.so"]
        .iter()
        .map(|name| fs_err::read(build.path(&format!("out/lib/{name}"))).unwrap())
        .collect();
    run_ok(
        build
            .relink()
            .args(["--preserve-origin", "--paths"])
            .arg(build.path("out")),
    );
    let program = build.path("out/bin/lib-check");
    assert_eq!(run_path(&program).0.as_deref(), Some("$ORIGIN/../lib"));
    let out_bytes = text(&build.path("out")).into_bytes();
    for path in [&program, &build.path("out/lib/libfoo.so")] {
        let bytes = fs_err::read(path).unwrap();
        assert!(
            !bytes
                .windows(out_bytes.len())
                .any(|window| window == out_bytes),
            "{} refers to the output itself",
            path.display()
        );
    }
    for (name, before) in ["libfoo.so", "libbar.so"].iter().zip(before_libs) {
        assert_eq!(
            fs_err::read(build.path(&format!("out/lib/{name}"))).unwrap(),
            before
        );
    }
    assert_eq!(stdout_of(&program), "42\n");
    fs_err::rename(build.path("out"), build.path("moved")).unwrap();
    assert_eq!(stdout_of(&build.path("moved/bin/lib-check")), "42\n");
}

/// `patchelfFlags` (`--extra-args`, `--patchelf-flag`): `--force-rpath` and `--no-default-lib`
/// reach the files patchelf would be called on; flags that make no sense there are refused by
/// name before anything is written.
#[test]
fn patchelf_flags_apply_where_patchelf_would_run_and_others_are_refused() {
    let build = Build::new();
    let foo = build.library("deps/foo/lib", "foo", 42, &[]);
    let link = format!("-L{}", foo.parent().unwrap().display());
    let app = build.gcc("out/bin/app", MAIN_FOO, &[&link, "-lfoo"]);
    let lonely = build.library("out/lib", "lonely", 0, &[]);
    let lonely_before = fs_err::read(&lonely).unwrap();
    let app_before = fs_err::read(&app).unwrap();

    let refused = build
        .relink()
        .arg("--paths")
        .arg(build.path("out"))
        .arg("--libs")
        .arg(foo.parent().unwrap())
        .args(["--extra-args", "--set-soname", "libx.so"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("patchelf flag --set-soname"), "{stderr}");
    assert_eq!(fs_err::read(&app).unwrap(), app_before);

    run_ok(
        build
            .relink()
            .arg("--paths")
            .arg(build.path("out"))
            .arg("--libs")
            .arg(foo.parent().unwrap())
            .args([
                "--extra-args",
                "",
                "--force-rpath",
                "--no-default-lib",
                "--page-size",
                "4096",
            ]),
    );
    assert_eq!(run_path(&app), (Some(text(foo.parent().unwrap())), "RPATH"));
    let dynamic = Command::new("readelf")
        .args(["-d", "-W"])
        .arg(&app)
        .output()
        .unwrap();
    let dynamic = String::from_utf8_lossy(&dynamic.stdout);
    assert!(dynamic.contains("NODEFLIB"), "{dynamic}");
    // A library that needs nothing but libc gets no patchelf call from the hook: untouched.
    assert_eq!(fs_err::read(&lonely).unwrap(), lonely_before);
    // The real loader honours both: with DF_1_NODEFLIB it no longer looks in its default
    // directories (the host's libc is there, not next to this copied linker), and libfoo still
    // comes through DT_RPATH when libc's directory is given explicitly.
    let refused_default = run_program(&app);
    assert!(!refused_default.status.success());
    assert!(
        String::from_utf8_lossy(&refused_default.stderr).contains("libc.so.6"),
        "{}",
        String::from_utf8_lossy(&refused_default.stderr)
    );
    let host_libc = ["/lib/x86_64-linux-gnu", "/usr/lib64", "/lib64"]
        .into_iter()
        .find(|dir| Path::new(dir).join("libc.so.6").is_file())
        .expect("the host's libc");
    let with_libc = Command::new(&app)
        .env("LD_LIBRARY_PATH", host_libc)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&with_libc.stdout), "42\n");
    // Running again writes nothing: the flags are already in effect.
    let again = run_ok(
        build
            .relink()
            .arg("--json")
            .arg("--paths")
            .arg(build.path("out"))
            .arg("--libs")
            .arg(foo.parent().unwrap())
            .args(["--extra-args", "--force-rpath", "--no-default-lib"]),
    );
    let summary = json_lines(&again.stdout).pop().unwrap();
    assert_eq!(summary["patched"], 0, "{summary}");
}

/// Search order: the trees being relinked first (unless `--ignore-existing`), then
/// `--library-path`, `--libs` and `--library-tree` in command-line order (so the hook can give
/// `addAutoPatchelfSearchPath` directories where nixpkgs has them: after the inputs' `lib`);
/// with `--follow-run-paths`, also what indexed libraries' run paths name.
#[test]
fn search_order_ignore_existing_and_following_run_paths() {
    let build = Build::new();
    let bundled = build.library("out/lib", "foo", 1, &[]);
    let tree_copy = build.library("tree/nested/lib", "foo", 2, &[]);
    let dir_copy = build.library("dir/lib", "foo", 3, &[]);
    let link = format!("-L{}", bundled.parent().unwrap().display());
    let app = build.gcc("out/bin/app", MAIN_FOO, &[&link, "-lfoo"]);
    let relink = |args: &[&OsStr]| {
        run_ok(build.relink().args(args).arg("--").arg(build.path("out")));
        stdout_of(&app)
    };
    let (tree, dir) = (build.path("tree"), build.path("dir/lib"));
    let tree_flag = [OsStr::new("--library-tree"), tree.as_os_str()];
    let dir_flag = [OsStr::new("--library-path"), dir.as_os_str()];
    assert_eq!(relink(&[&tree_flag[..], &dir_flag[..]].concat()), "1\n");
    assert_eq!(run_path(&app).0, Some(text(bundled.parent().unwrap())));
    let ignore = [OsStr::new("--ignore-existing")];
    assert_eq!(
        relink(&[&ignore[..], &tree_flag[..], &dir_flag[..]].concat()),
        "2\n"
    );
    assert_eq!(run_path(&app).0, Some(text(tree_copy.parent().unwrap())));
    assert_eq!(
        relink(&[&ignore[..], &dir_flag[..], &tree_flag[..]].concat()),
        "3\n"
    );
    assert_eq!(run_path(&app).0, Some(text(dir_copy.parent().unwrap())));

    // libuse's run path names libfoo's directory; only libuse's directory is given.
    let dep = build.library("far/lib", "far", 7, &[]);
    let far_dir = dep.parent().unwrap();
    build.gcc(
        "near/lib/libnear.so",
        "int far(void);\nint near(void) { return far() * 6; }\n",
        &[
            "-shared",
            "-fPIC",
            &format!("-L{}", far_dir.display()),
            "-lfar",
            &format!("-Wl,-rpath,{}", far_dir.display()),
        ],
    );
    let source = "#include <stdio.h>\nint near(void); int far(void);\nint main(void) { printf(\"%d\\n\", near() + far()); return 0; }\n";
    let two = build.gcc(
        "out/bin/two",
        source,
        &[
            &format!("-L{}", build.path("near/lib").display()),
            &format!("-L{}", far_dir.display()),
            "-lnear",
            "-lfar",
        ],
    );
    let near = build.path("near/lib");
    let without = build
        .relink()
        .arg("--library-path")
        .arg(&near)
        .arg(build.path("out/bin/two"))
        .output()
        .unwrap();
    assert_eq!(without.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&without.stderr).contains("libfar.so not found"));
    run_ok(
        build
            .relink()
            .arg("--follow-run-paths")
            .arg("--library-path")
            .arg(&near)
            .arg(build.path("out/bin/two")),
    );
    assert_eq!(
        run_path(&two).0,
        Some(format!("{}:{}", text(&near), text(far_dir)))
    );
    assert_eq!(stdout_of(&two), "49\n");
}

/// `DT_RPATH` as the hook leaves it: every file that gets a run path ends with `DT_RUNPATH`, as
/// after `patchelf --set-rpath` (a run path that is already right only changes its tag, in
/// place); `--force-rpath` among the patchelf flags writes `DT_RPATH`; a file that needs only
/// libc gets no patchelf call and keeps its `DT_RPATH` byte for byte.
#[test]
fn dt_rpath_becomes_runpath_as_after_patchelf_set_rpath() {
    let build = Build::new();
    let foo = build.library("deps/foo/lib", "foo", 42, &[]);
    let foo_dir = foo.parent().unwrap();
    let link = format!("-L{}", foo_dir.display());
    let old_tags = "-Wl,--disable-new-dtags";
    let stale = build.gcc(
        "out/bin/stale",
        MAIN_FOO,
        &[&link, "-lfoo", old_tags, "-Wl,-rpath,/opt/vendor/lib"],
    );
    let right = build.gcc(
        "out/lib/libright.so",
        "int foo(void);\nint right(void) { return foo(); }\n",
        &[
            "-shared",
            "-fPIC",
            &link,
            "-lfoo",
            old_tags,
            &format!("-Wl,-rpath,{}", foo_dir.display()),
        ],
    );
    let only_libc = build.library(
        "out/lib",
        "onlylibc",
        1,
        &[old_tags, "-Wl,-rpath,/opt/vendor/lib"],
    );
    for path in [&stale, &right, &only_libc] {
        assert_eq!(run_path(path).1, "RPATH", "{}", path.display());
    }
    let right_size = fs_err::metadata(&right).unwrap().len();
    let only_libc_before = fs_err::read(&only_libc).unwrap();
    let forced = build.path("forced");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(build.path("out"))
        .arg(&forced)
        .status()
        .unwrap();
    assert!(copied.success());

    let relink = |tree: &Path, extra: &[&str]| {
        let output = run_ok(
            build
                .relink()
                .arg("--json")
                .arg("--library-path")
                .arg(foo_dir)
                .args(extra)
                .arg(tree),
        );
        json_lines(&output.stdout).pop().unwrap()["patched"].clone()
    };
    assert_eq!(relink(&build.path("out"), &[]), 2);
    assert_eq!(run_path(&stale), (Some(text(foo_dir)), "RUNPATH"));
    assert_eq!(run_path(&right), (Some(text(foo_dir)), "RUNPATH"));
    assert_eq!(fs_err::metadata(&right).unwrap().len(), right_size);
    assert_eq!(fs_err::read(&only_libc).unwrap(), only_libc_before);
    assert_eq!(stdout_of(&stale), "42\n");
    assert_eq!(relink(&build.path("out"), &[]), 0);

    assert_eq!(relink(&forced, &["--patchelf-flag=--force-rpath"]), 1);
    assert_eq!(
        run_path(&forced.join("bin/stale")),
        (Some(text(foo_dir)), "RPATH")
    );
    assert_eq!(
        run_path(&forced.join("lib/libright.so")),
        (Some(text(foo_dir)), "RPATH")
    );
    assert_eq!(
        fs_err::read(forced.join("lib/libonlylibc.so")).unwrap(),
        only_libc_before
    );
    assert_eq!(stdout_of(&forced.join("bin/stale")), "42\n");
}

/// nixpkgs' `auto-patchelf-structured-log` test, with storepatch's `--json` records in place
/// of auto-patchelf.py's `--structured-logs` events (which storepatch does not write: the flag is
/// refused as unknown): one program given as a single file, its library directory with `--libs`,
/// two missing libraries ignored by glob. One interpreter is set, the program has three
/// dependencies besides libc, two of them missing and ignored, and its run path is the
/// library's directory; the program then runs with the ignored two supplied at run time.
#[test]
fn structured_log_scenario_as_json_records() {
    let build = Build::new();
    let versioned = |path: &str, name: &str, value: i32| {
        let soname = path.rsplit('/').next().unwrap();
        build.gcc(
            path,
            &format!("int {name}(void) {{ return {value}; }}\n"),
            &["-shared", "-fPIC", &format!("-Wl,-soname,{soname}")],
        )
    };
    let freetype = versioned("deps/freetype/lib/libfreetype.so.6", "freetype", 40);
    let gl = versioned("system/lib/libGL.so.1", "GL", 1);
    let asound = versioned("system/lib/libasound.so.2", "asound", 1);
    let source = "#include <stdio.h>\nint freetype(void); int GL(void); int asound(void);\nint main(void) { printf(\"%d\\n\", freetype() + GL() + asound()); return 0; }\n";
    // Linked by path: the NEEDED entries are the sonames.
    let program = build.gcc(
        "out/usr/bin/ToneLib-Jam",
        source,
        &[
            "-Wl,--no-as-needed",
            &text(&freetype),
            &text(&gl),
            &text(&asound),
        ],
    );
    let output = build
        .relink()
        .arg("--json")
        .arg("--paths")
        .arg(&program)
        .arg("--libs")
        .arg(freetype.parent().unwrap())
        .args(["--ignore-missing", "libasound.so.*", "libGL.so.*"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let records = json_lines(&output.stdout);
    let relinked: Vec<_> = records
        .iter()
        .filter(|record| record["type"] == "relink")
        .collect();
    assert_eq!(relinked.len(), 1, "{records:?}");
    let record = relinked[0];
    assert_ne!(record["interpreter_new"], record["interpreter_old"]);
    let dependencies: Vec<_> = record["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|dependency| dependency["resolution"] != "libc")
        .collect();
    assert_eq!(dependencies.len(), 3, "{record}");
    let missing: Vec<_> = records
        .iter()
        .filter(|record| record["type"] == "missing")
        .collect();
    assert_eq!(missing.len(), 2, "{records:?}");
    let summary = records.last().unwrap();
    assert_eq!(summary["ignored"], 2, "{summary}");
    assert_eq!(
        record["run_path_new"]["text"],
        text(freetype.parent().unwrap()).as_str()
    );
    let ran = Command::new(&program)
        .env("LD_LIBRARY_PATH", build.path("system/lib"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "42\n");

    let refused = build
        .relink()
        .args(["--structured-logs", "--paths"])
        .arg(&program)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--structured-logs"));
}

/// `--keep-libc` (an `autoPatchelfFlags` entry): libc's own libraries are looked up like any
/// other, so a program gets the directory of an indexed libc in its run path (and runs with
/// it); without the flag libc is left to the dynamic linker and the program gets none.
#[test]
fn keep_libc_looks_libc_up_in_the_index() {
    let build = Build::new();
    let libc_dir = build.host_library(
        "deps/libc/lib",
        &[
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/usr/lib64/libc.so.6",
            "/lib64/libc.so.6",
        ],
    );
    let source = "#include <stdio.h>\nint main(void) { puts(\"ok\"); return 0; }\n";
    let app = build.gcc("out/bin/app", source, &[]);
    run_ok(
        build
            .relink()
            .arg("--libs")
            .arg(&libc_dir)
            .arg("--paths")
            .arg(build.path("out")),
    );
    assert_eq!(run_path(&app).0, None);
    run_ok(
        build
            .relink()
            .arg("--keep-libc")
            .arg("--libs")
            .arg(&libc_dir)
            .arg("--paths")
            .arg(build.path("out")),
    );
    assert_eq!(run_path(&app), (Some(text(&libc_dir)), "RUNPATH"));
    assert_eq!(stdout_of(&app), "ok\n");
}

/// A library found through a symlink of the same name (a `buildEnv`-style directory) puts the
/// target's directory into the run path, as autoPatchelfHook does; one found through a link of
/// another name (`libbar.so -> libbar.so.1`) keeps the link's directory. Side by side with
/// `auto-patchelf.py` when `$STOREPATCH_AUTO_PATCHELF` names it.
#[test]
fn symlinked_library_directories_as_auto_patchelf() {
    let build = Build::new();
    let real = build.library("real/lib", "foo", 40, &["-Wl,-soname,libfoo.so"]);
    build.gcc(
        "real/lib/libbar.so.1",
        "int bar(void) { return 2; }\n",
        &["-shared", "-fPIC", "-Wl,-soname,libbar.so"],
    );
    let env = build.path("env/lib");
    fs_err::create_dir_all(&env).unwrap();
    std::os::unix::fs::symlink(&real, env.join("libfoo.so")).unwrap();
    std::os::unix::fs::symlink(build.path("real/lib/libbar.so.1"), env.join("libbar.so")).unwrap();
    let source = "#include <stdio.h>\nint foo(void); int bar(void);\nint main(void) { printf(\"%d\\n\", foo() + bar()); return 0; }\n";
    build.gcc(
        "out/bin/app",
        source,
        &[&format!("-L{}", env.display()), "-lfoo", "-lbar"],
    );
    let hook_tree = build.path("hook-out");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(build.path("out"))
        .arg(&hook_tree)
        .status()
        .unwrap();
    assert!(copied.success());
    run_ok(
        build
            .relink()
            .arg("--libs")
            .arg(&env)
            .arg("--paths")
            .arg(build.path("out")),
    );
    let expected = format!("{}:{}", text(real.parent().unwrap()), text(&env));
    assert_eq!(
        run_path(&build.path("out/bin/app")),
        (Some(expected.clone()), "RUNPATH")
    );
    assert_eq!(stdout_of(&build.path("out/bin/app")), "42\n");
    if let Some(script) = std::env::var_os("STOREPATCH_AUTO_PATCHELF") {
        let python =
            std::env::var_os("STOREPATCH_AUTO_PATCHELF_PYTHON").unwrap_or("python3".into());
        let theirs = Command::new(&python)
            .arg(&script)
            .arg("--paths")
            .arg(&hook_tree)
            .arg("--libs")
            .arg(&env)
            .env("NIX_BINTOOLS", build.path("bintools"))
            .output()
            .unwrap();
        assert!(
            theirs.status.success(),
            "{}",
            String::from_utf8_lossy(&theirs.stderr)
        );
        assert_eq!(
            run_path(&hook_tree.join("bin/app")),
            (Some(expected), "RUNPATH")
        );
    }
}

/// Flags of auto-patchelf.py that storepatch cannot honour do not exist; an unknown one is a
/// usage error naming it, and a command line without paths says what is missing.
#[test]
fn unknown_flags_and_no_paths_are_clear_errors() {
    let build = Build::new();
    let output = build.relink().args(["--paths"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no paths to relink"), "{stderr}");
    let output = build
        .relink()
        .args(["--relative-rpaths", "--paths", "/nonexistent"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--relative-rpaths"), "{stderr}");
}

/// Runtime dependencies that do not exist, one with a space, as in nixpkgs' own test of the
/// hook (`pkgs/test/auto-patchelf-hook`): they still go into the run path, in order.
const MISSING_RUNTIME_DEPENDENCIES: [&str; 3] = [
    "/some/dep/lib",
    "/some/other/dep/lib",
    "/some/dep with space/lib",
];

/// Side by side with nixpkgs' real `auto-patchelf.py` (run with `patchelf` and `pyelftools`) on
/// one tree of gcc-built files covering runtime dependencies (existing or not), appended run
/// paths, `.note.dlopen` groups, `libgcc_s.so.1` outside libc's directory, `DT_RPATH`, the search
/// order of `--libs` and the output's own libraries: every file gets the very same run path
/// string and tag, and the programs run.
///
/// Needs a copy of `pkgs/by-name/au/auto-patchelf/source/auto-patchelf.py` outside the
/// repository, named by `$STOREPATCH_AUTO_PATCHELF` (the test is skipped without it), and
/// `$STOREPATCH_AUTO_PATCHELF_PYTHON` (default `python3`).
#[test]
fn same_run_paths_as_auto_patchelf_py() {
    let Some(script) = std::env::var_os("STOREPATCH_AUTO_PATCHELF") else {
        let _ = writeln!(
            std::io::stderr(),
            "skipping autopatchelf::same_run_paths_as_auto_patchelf_py: set STOREPATCH_AUTO_PATCHELF to a copy of nixpkgs' auto-patchelf.py"
        );
        return;
    };
    let python = std::env::var_os("STOREPATCH_AUTO_PATCHELF_PYTHON").unwrap_or("python3".into());
    let build = Build::new();
    let foo = build.library("deps/foo/lib", "foo", 41, &[]);
    build.library("deps/foo2/lib", "foo", 99, &[]);
    build.library("deps/rt/lib", "plugin", 1, &[]);
    build.library("deps/second/lib", "second", 2, &[]);
    let gcc_lib = build.host_library("deps/gcc/lib", &LIBGCC_S);
    let link = format!("-L{}", foo.parent().unwrap().display());
    build.gcc(
        "out/bin/app",
        MAIN_FOO_PLUGIN,
        &[&link, "-lfoo", "-ldl", "-Wl,--no-as-needed", "-lgcc_s"],
    );
    build.library("out/lib", "own", 5, &[]);
    let own_link = format!("-L{}", build.path("out/lib").display());
    build.gcc(
        "out/lib/libuse.so",
        "int foo(void); int own(void);\nint use(void) { return foo() + own(); }\n",
        &["-shared", "-fPIC", &link, &own_link, "-lfoo", "-lown"],
    );
    build.gcc(
        "out/lib/libmodule.so",
        &dlopen_note_library(
            r#"[{"soname":["libabsent.so.9","libsecond.so"]},{"soname":["libnothere.so.1"]}]"#,
        ),
        &["-shared", "-fPIC"],
    );
    // DT_RPATH: a program whose run path is replaced, a library that needs only libc.
    build.gcc(
        "out/bin/oldtags",
        MAIN_FOO,
        &[
            &link,
            "-lfoo",
            "-Wl,--disable-new-dtags,-rpath,/opt/vendor/lib",
        ],
    );
    build.library(
        "out/lib",
        "onlylibc",
        3,
        &["-Wl,--disable-new-dtags,-rpath,/opt/vendor/lib"],
    );
    let libs = [
        foo.parent().unwrap().to_path_buf(),
        build.path("deps/foo2/lib"),
        build.path("deps/second/lib"),
        gcc_lib.clone(),
    ];
    let hook_tree = build.path("hook-out");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(build.path("out"))
        .arg(&hook_tree)
        .status()
        .unwrap();
    assert!(copied.success());
    let runtime = build.path("deps/rt/lib");
    let theirs = Command::new(&python)
        .arg(&script)
        .args(["--ignore-missing", "libnothere.so.1", "--paths"])
        .arg(&hook_tree)
        .arg("--libs")
        .args(&libs)
        .arg("--runtime-dependencies")
        .arg(&runtime)
        .args(MISSING_RUNTIME_DEPENDENCIES)
        .args(["--append-rpaths", "/opt/extra/lib", "--extra-args"])
        .env("NIX_BINTOOLS", build.path("bintools"))
        .output()
        .unwrap();
    assert!(
        theirs.status.success(),
        "auto-patchelf.py: {}{}",
        String::from_utf8_lossy(&theirs.stdout),
        String::from_utf8_lossy(&theirs.stderr)
    );
    run_ok(
        build
            .relink()
            .args([
                "--follow-run-paths",
                "--ignore-missing",
                "libnothere.so.1",
                "--paths",
            ])
            .arg(build.path("out"))
            .arg("--libs")
            .args(&libs)
            .arg("--runtime-dependencies")
            .arg(&runtime)
            .args(MISSING_RUNTIME_DEPENDENCIES)
            .args(["--append-rpaths", "/opt/extra/lib", "--extra-args"]),
    );
    let out = text(&build.path("out"));
    let hook_out = text(&hook_tree);
    for file in [
        "bin/app",
        "bin/oldtags",
        "lib/libuse.so",
        "lib/libmodule.so",
        "lib/libown.so",
        "lib/libonlylibc.so",
    ] {
        let ours = run_path(&build.path("out").join(file));
        let theirs = run_path(&hook_tree.join(file));
        let theirs = (theirs.0.map(|path| path.replace(&hook_out, &out)), theirs.1);
        assert_eq!(ours, theirs, "{file}");
    }
    assert_eq!(
        run_path(&build.path("out/bin/app")).0,
        Some(format!(
            "{}:{}:{}:{}:/opt/extra/lib",
            text(&runtime),
            MISSING_RUNTIME_DEPENDENCIES.join(":"),
            text(foo.parent().unwrap()),
            text(&gcc_lib)
        ))
    );
    assert_eq!(stdout_of(&build.path("out/bin/app")), "41 1\n");
    assert_eq!(stdout_of(&hook_tree.join("bin/app")), "41 1\n");
    assert_eq!(
        run_path(&build.path("out/bin/oldtags")).1,
        "RUNPATH",
        "patchelf --set-rpath writes DT_RUNPATH"
    );
    // Only the appended run path: set with patchelf, so DT_RUNPATH as well.
    assert_eq!(
        run_path(&build.path("out/lib/libonlylibc.so")),
        (Some("/opt/extra/lib".to_owned()), "RUNPATH")
    );
    assert_eq!(stdout_of(&build.path("out/bin/oldtags")), "41\n");
}

/// A `.note.dlopen` group of alternatives none of which is found, side by side with nixpkgs'
/// `auto-patchelf.py`: without ignore patterns both fail and name the group `any(a, b)`; with
/// any pattern (even `*`) auto-patchelf.py stops with a Python `AttributeError`, so nixpkgs can
/// never ignore such a group, while storepatch ignores it when a pattern matches an
/// alternative. Skipped without `$STOREPATCH_AUTO_PATCHELF` (see above).
#[test]
fn missing_dlopen_group_side_by_side_with_auto_patchelf_py() {
    let Some(script) = std::env::var_os("STOREPATCH_AUTO_PATCHELF") else {
        let _ = writeln!(
            std::io::stderr(),
            "skipping autopatchelf::missing_dlopen_group_side_by_side_with_auto_patchelf_py: set STOREPATCH_AUTO_PATCHELF to a copy of nixpkgs' auto-patchelf.py"
        );
        return;
    };
    let python = std::env::var_os("STOREPATCH_AUTO_PATCHELF_PYTHON").unwrap_or("python3".into());
    let build = Build::new();
    build.gcc(
        "out/lib/libmodule.so",
        &dlopen_note_library(r#"[{"soname":["libnothere.so.1","libnothere.so"]}]"#),
        &["-shared", "-fPIC"],
    );
    let theirs = |patterns: &[&str]| {
        Command::new(&python)
            .arg(&script)
            .arg("--ignore-missing")
            .args(patterns)
            .arg("--paths")
            .arg(build.path("out"))
            .env("NIX_BINTOOLS", build.path("bintools"))
            .output()
            .unwrap()
    };
    let ours = |patterns: &[&str]| {
        let mut command = build.relink();
        for pattern in patterns {
            command.args(["--ignore-missing", pattern]);
        }
        command.arg(build.path("out")).output().unwrap()
    };
    let failed = theirs(&[]);
    assert!(!failed.status.success());
    assert!(
        String::from_utf8_lossy(&failed.stdout)
            .contains("could not satisfy dependency any(libnothere.so.1, libnothere.so)"),
        "{}",
        String::from_utf8_lossy(&failed.stdout)
    );
    let failed = ours(&[]);
    assert_eq!(failed.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&failed.stderr)
            .contains("any(libnothere.so.1, libnothere.so) not found"),
        "{}",
        String::from_utf8_lossy(&failed.stderr)
    );
    for pattern in ["*", "libnothere.so"] {
        let crashed = theirs(&[pattern]);
        assert!(!crashed.status.success());
        assert!(
            String::from_utf8_lossy(&crashed.stderr).contains("AttributeError"),
            "{}",
            String::from_utf8_lossy(&crashed.stderr)
        );
        let passed = ours(&[pattern]);
        assert!(
            passed.status.success(),
            "{}",
            String::from_utf8_lossy(&passed.stderr)
        );
    }
}
