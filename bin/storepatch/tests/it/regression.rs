//! Regression tests, one per bug, each with the issue it was found under.
use std::os::unix::fs::FileTypeExt as _;
use std::process::Command;

use crate::common::{TestTree, ZLIB_HASH, json_lines, run_ok, storepatch};

/// Relinking a tree given as a relative path wrote relative run paths (`tree/lib`), which the
/// loader resolves against its working directory.
// See: #4
#[test]
fn relink_of_a_relative_tree_writes_absolute_run_paths() {
    let tree = TestTree::new();
    let lib_dir = tree.path("libs");
    fs_err::create_dir_all(&lib_dir).unwrap();
    let library = tree.write("src/answer.c", "int answer(void) { return 42; }\n");
    let extension = tree.write(
        "src/ext.c",
        "int answer(void);\nint twice(void) { return 2 * answer(); }\n",
    );
    let gcc = |args: &[&std::ffi::OsStr]| {
        let status = Command::new("gcc").args(args).status().unwrap();
        assert!(status.success());
    };
    gcc(&[
        "-shared".as_ref(),
        "-fPIC".as_ref(),
        "-Wl,-soname,libanswer.so.1".as_ref(),
        "-o".as_ref(),
        lib_dir.join("libanswer.so.1").as_os_str(),
        library.as_os_str(),
    ]);
    let module = tree.path("pkg/ext.so");
    fs_err::create_dir_all(module.parent().unwrap()).unwrap();
    gcc(&[
        "-shared".as_ref(),
        "-fPIC".as_ref(),
        "-o".as_ref(),
        module.as_os_str(),
        extension.as_os_str(),
        lib_dir.join("libanswer.so.1").as_os_str(),
    ]);
    run_ok(
        storepatch()
            .current_dir(&tree.root)
            .args(["relink", "--library-path", "libs", "pkg"]),
    );
    let run_path = run_ok(storepatch().args(["elf", "--print-rpath"]).arg(&module));
    let run_path = String::from_utf8(run_path.stdout).unwrap();
    assert_eq!(
        run_path.trim(),
        fs_err::canonicalize(&lib_dir)
            .unwrap()
            .display()
            .to_string()
    );
}

/// A file named like a library that is not ELF got a "skipping" note but counted "0 skipped".
// See: #16
#[test]
fn relink_counts_the_files_it_notes_as_skipped() {
    let tree = TestTree::new();
    tree.write("lib/libfake.so", "not an ELF file\n");
    let output = storepatch().arg("relink").arg(&tree.root).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("note: skipping"), "{stderr}");
    assert!(stderr.contains(", 1 skipped,"), "{stderr}");
}

/// A 4-byte file holding only the ELF magic was "missing ELF magic".
// See: #16
#[test]
fn four_bytes_of_elf_magic_are_a_truncated_elf() {
    let tree = TestTree::new();
    let file = tree.write("stub", b"\x7fELF");
    let output = storepatch()
        .args(["elf", "--print-rpath"])
        .arg(&file)
        .output()
        .unwrap();
    // `storepatch elf` fails with 1, as patchelf does.
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("truncated ELF"), "{stderr}");
}

/// scan counted store paths by hash and scrub by rendered name (a name running on into junk).
// See: #16
#[test]
fn scan_and_scrub_count_store_paths_the_same_way() {
    let tree = TestTree::new();
    tree.write(
        "direct_url.json",
        format!("/nix/store/{ZLIB_HASH}-source\", \"dir_info\"\n/nix/store/{ZLIB_HASH}-source/x\n"),
    );
    let scan = storepatch()
        .args(["scan", "--json"])
        .arg(&tree.root)
        .output()
        .unwrap();
    let scrub = storepatch()
        .args(["scrub", "--json"])
        .arg(&tree.root)
        .output()
        .unwrap();
    let scan_summary = json_lines(&scan.stdout).pop().unwrap();
    let scrub_summary = json_lines(&scrub.stdout).pop().unwrap();
    assert_eq!(scan_summary["store_paths"], 1);
    assert_eq!(scrub_summary["store_paths"], 1);
}

/// `<hash>-.hidden` was taken as a store path named `.hidden`, a name Nix rejects.
// See: #16
#[test]
fn names_starting_with_a_dot_are_not_store_path_names() {
    let tree = TestTree::new();
    tree.write("a", format!("/nix/store/{ZLIB_HASH}-.hidden\n"));
    let scan = storepatch()
        .args(["scan", "--json"])
        .arg(&tree.root)
        .output()
        .unwrap();
    let lines = json_lines(&scan.stdout);
    assert_eq!(
        lines[0]["store_path"]["text"],
        format!("/nix/store/{ZLIB_HASH}")
    );
}

/// A newline in a file name split one entry over two lines of human output.
// See: #16
#[test]
fn human_output_escapes_control_characters_in_names() {
    let tree = TestTree::new();
    tree.write("a\nb", format!("/nix/store/{ZLIB_HASH}-zlib\n"));
    let output = storepatch().arg("scrub").arg(&tree.root).output().unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.contains("a\\nb"), "{stdout}");
}

/// An error before the walk (a missing root) was only text on stderr under `--json`.
// See: #16
#[test]
fn errors_before_the_walk_are_json_under_json() {
    let tree = TestTree::new();
    let output = storepatch()
        .args(["scan", "--json"])
        .arg(tree.path("missing"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let lines = json_lines(&output.stdout);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["type"], "error");
    assert!(lines[0]["message"].as_str().unwrap().contains("missing"));
}

/// `--output` onto a character device, a FIFO or a directory is refused; none of them is
/// replaced or written.
// See: #16
#[test]
fn elf_output_onto_special_files_is_refused() {
    let tree = TestTree::new();
    let source = tree.write("src/main.c", "int main(void) { return 0; }\n");
    let binary = tree.path("main");
    assert!(
        Command::new("gcc")
            .arg("-o")
            .arg(&binary)
            .arg(&source)
            .status()
            .unwrap()
            .success()
    );
    let fifo = tree.path("fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let directory = tree.path("dir");
    fs_err::create_dir(&directory).unwrap();
    for target in [std::path::Path::new("/dev/null"), &fifo, &directory] {
        let output = storepatch()
            .args(["elf", "--set-rpath", "/opt/lib", "--output"])
            .arg(target)
            .arg(&binary)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        if target.starts_with("/dev") {
            // A character device is written into, as patchelf does, never renamed over.
            assert_eq!(
                output.status.code(),
                Some(0),
                "{}: {stderr}",
                target.display()
            );
        } else {
            assert_eq!(output.status.code(), Some(1), "{}", target.display());
            assert!(
                stderr.contains("cannot replace `") && stderr.contains("not a regular file"),
                "{stderr}"
            );
        }
    }
    assert!(
        fs_err::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert!(fs_err::metadata(&directory).unwrap().is_dir());
    assert!(
        fs_err::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device()
    );
    let names: Vec<_> = fs_err::read_dir(&tree.root).unwrap().collect();
    assert_eq!(names.len(), 4, "no temporary file is left");
}

/// A library with no NEEDED kept a scrubbed RUNPATH entry that no supplied store path gave back:
/// it names no directory, so relink drops it (and the whole run path when nothing else is left),
/// keeping `$ORIGIN` entries.
// See: #16
#[test]
fn relink_drops_dead_scrubbed_run_path_entries_of_a_library_with_no_needed() {
    let tree = TestTree::new();
    let source = tree.write("src/x.c", "int answer(void) { return 42; }\n");
    let scrubbed = "/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-libfoo-1.0/lib";
    let only_scrubbed = tree.path("lib/libonly.so");
    let with_origin = tree.path("lib/libmixed.so");
    fs_err::create_dir_all(tree.path("lib")).unwrap();
    for (library, run_path) in [
        (&only_scrubbed, scrubbed.to_owned()),
        (&with_origin, format!("{scrubbed}:$ORIGIN/../share")),
    ] {
        run_ok(
            Command::new("gcc")
                .args(["-shared", "-fPIC", "-nostdlib", "-Wl,--enable-new-dtags"])
                .arg(format!("-Wl,-rpath,{run_path}"))
                .arg("-o")
                .arg(library)
                .arg(&source),
        );
    }
    let print_rpath = |library: &std::path::Path| {
        let output = run_ok(storepatch().args(["elf", "--print-rpath"]).arg(library));
        String::from_utf8(output.stdout).unwrap()
    };
    assert_eq!(print_rpath(&only_scrubbed), format!("{scrubbed}\n"));
    run_ok(storepatch().arg("relink").arg(&tree.root));
    assert_eq!(print_rpath(&only_scrubbed), "\n");
    assert_eq!(print_rpath(&with_origin), "$ORIGIN/../share\n");
    let readelf = run_ok(Command::new("readelf").args(["-dW"]).arg(&only_scrubbed));
    let dynamic = String::from_utf8_lossy(&readelf.stdout);
    assert!(!dynamic.contains("RUNPATH"), "{dynamic}");
    assert!(readelf.stderr.is_empty());
    // A second run has nothing left to do.
    let again = run_ok(storepatch().args(["relink", "--json"]).arg(&tree.root));
    let summary = json_lines(&again.stdout).pop().unwrap();
    assert_eq!(summary["patched"], 0, "{summary}");
}
