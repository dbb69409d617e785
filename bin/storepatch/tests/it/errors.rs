//! Every subcommand words a failure about a file one way, ``cannot ACTION `PATH`: CAUSE``, with
//! the cause the system gave. The failures are real: a filesystem mounted read-only (which stops
//! root too), a device or FIFO where a file is expected, a file that is not there. `scan`, `scrub`
//! and `audit` on files `nobody` may not read are in their own modules, `relink`'s in `relink.rs`.
use std::path::{Path, PathBuf};
use std::process::Command;

use storepatch_test::cmd_snapshot;
use storepatch_test::snapshot::Filters;

use crate::common::{ZLIB_HASH, storepatch};
use crate::faults::SmallFilesystem;

/// A small tmpfs holding what `fill` writes into it, then remounted read-only.
struct ReadOnly {
    filesystem: SmallFilesystem,
}

impl ReadOnly {
    fn new(fill: impl FnOnce(&Path)) -> Option<Self> {
        let filesystem = SmallFilesystem::new("4m")?;
        fill(&filesystem.mount_point);
        let remounted = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&filesystem.mount_point)
            .status()
            .unwrap();
        assert!(remounted.success());
        Some(Self { filesystem })
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.filesystem.mount_point.join(relative)
    }

    fn filters(&self) -> Filters {
        Filters::new().path(&self.filesystem.mount_point, "[RO]")
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        // Writable again, so that the tmpfs can be unmounted and its directory removed.
        let _ = Command::new("mount")
            .args(["-o", "remount,rw"])
            .arg(&self.filesystem.mount_point)
            .status();
    }
}

/// `restore` cannot write its temporary file: the entry is reported with the directory and the
/// cause, the file stays as it was, and the exit status is 2.
#[test]
fn restore_on_a_read_only_filesystem() {
    let scrubbed = format!("/nix/store/{}-zlib-1.3.1/lib\n", "e".repeat(32));
    let Some(filesystem) = ReadOnly::new(|root| {
        fs_err::create_dir(root.join("tree")).unwrap();
        fs_err::write(root.join("tree/a.txt"), &scrubbed).unwrap();
    }) else {
        return;
    };
    let list = tempfile::NamedTempFile::new().unwrap();
    fs_err::write(list.path(), format!("/nix/store/{ZLIB_HASH}-zlib-1.3.1\n")).unwrap();
    cmd_snapshot!(
        filesystem.filters(),
        storepatch().args(["restore", "--candidates"]).arg(list.path()).arg(filesystem.path("tree")),
        @"
    success: false
    exit_code: 2
    ----- stdout -----

    ----- stderr -----
    error: cannot create a temporary file in `[RO]/tree`: Read-only file system (os error 30)
    restored 0 references and relocated 0: 0 files, 0 symlinks, 0 names (2 entries scanned, 1 store paths supplied, 0 places with 0 names left scrubbed, 0 binary files left, 1 errors); 1 entries failed and 0 were left unchanged by a signal
    ");
    assert_eq!(
        fs_err::read_to_string(filesystem.path("tree/a.txt")).unwrap(),
        scrubbed
    );
}

/// A shared library built by gcc with a run path of `rpath`.
fn library_with_run_path(dir: &Path, rpath: &str) -> PathBuf {
    let source = dir.join("lib.c");
    fs_err::write(&source, "int answer(void) { return 42; }\n").unwrap();
    let library = dir.join("libanswer.so");
    let status = Command::new("gcc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&library)
        .arg(&source)
        .arg(format!("-Wl,-rpath,{rpath},--enable-new-dtags"))
        .status()
        .expect("gcc");
    assert!(status.success());
    library
}

/// `elf` cannot write in place (a shorter run path) nor beside the file (a longer one, which
/// needs a relayout): both name the file or its directory and the cause, exit 1 as patchelf's
/// errors do, and the file stays as it was.
#[test]
fn elf_edits_on_a_read_only_filesystem() {
    let build = tempfile::tempdir().unwrap();
    let library = library_with_run_path(build.path(), "/opt/a-long-enough-run-path/lib");
    let before = fs_err::read(&library).unwrap();
    let Some(filesystem) = ReadOnly::new(|root| {
        fs_err::copy(&library, root.join("libanswer.so")).unwrap();
    }) else {
        return;
    };
    let target = filesystem.path("libanswer.so");
    cmd_snapshot!(filesystem.filters(), storepatch().args(["elf", "--set-rpath", "/opt/lib"]).arg(&target), @"
    success: false
    exit_code: 1
    ----- stdout -----

    ----- stderr -----
    error: cannot open `[RO]/libanswer.so`: Read-only file system (os error 30)
    ");
    let long = format!("/opt/{}/lib", "x".repeat(300));
    cmd_snapshot!(filesystem.filters(), storepatch().args(["elf", "--set-rpath", &long]).arg(&target), @"
    success: false
    exit_code: 1
    ----- stdout -----

    ----- stderr -----
    error: cannot create a temporary file in `[RO]`: Read-only file system (os error 30)
    ");
    assert_eq!(fs_err::read(&target).unwrap(), before);
}

/// `generate man` into a directory it cannot create, or whose files it cannot create.
#[test]
fn generate_on_a_read_only_filesystem() {
    let Some(filesystem) = ReadOnly::new(|root| {
        fs_err::create_dir(root.join("man")).unwrap();
    }) else {
        return;
    };
    cmd_snapshot!(filesystem.filters(), storepatch().args(["generate", "man", "--out-dir"]).arg(filesystem.path("new")), @"
    success: false
    exit_code: 2
    ----- stdout -----

    ----- stderr -----
    error: cannot create directory `[RO]/new`: Read-only file system (os error 30)
    ");
    cmd_snapshot!(filesystem.filters(), storepatch().args(["generate", "man", "--out-dir"]).arg(filesystem.path("man")), @"
    success: false
    exit_code: 2
    ----- stdout -----

    ----- stderr -----
    error: cannot create `[RO]/man/storepatch-scan.1`: Read-only file system (os error 30)
    ");
}

/// Lists and values read from files given on the command line are read only when they are
/// regular files: `/dev/zero` would never end and a FIFO would block.
#[test]
fn files_given_as_arguments_must_be_regular_files() {
    let tree = crate::common::TestTree::new();
    let fifo = tree.dir.path().join("fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    // Never the system's own: a copy, in case an edit went ahead.
    let program = tree.dir.path().join("true");
    fs_err::copy("/bin/true", &program).unwrap();
    let filters = tree.filters();
    cmd_snapshot!(filters.clone(), storepatch().args(["scan", "--candidates", "/dev/zero"]).arg(&tree.root), @"
    success: false
    exit_code: 2
    ----- stdout -----

    ----- stderr -----
    error: cannot read `/dev/zero`: a character device, not a regular file
    ");
    cmd_snapshot!(filters.clone(), storepatch().args(["restore", "--candidates"]).arg(&fifo).arg(&tree.root), @"
    success: false
    exit_code: 2
    ----- stdout -----

    ----- stderr -----
    error: cannot read `[TMP]/fifo`: a FIFO, not a regular file
    ");
    cmd_snapshot!(filters.clone(), storepatch().args(["relink", "--interpreter", "/dev/zero"]).arg(&tree.root), @"
    success: false
    exit_code: 2
    ----- stdout -----

    ----- stderr -----
    error: cannot read `/dev/zero`: a character device, not a regular file
    ");
    cmd_snapshot!(filters.clone(), storepatch().args(["elf", "--set-rpath"]).arg(format!("@{}", fifo.display())).arg(&program), @"
    success: false
    exit_code: 1
    ----- stdout -----

    ----- stderr -----
    error: getting info about '[TMP]/fifo' (the value of --set-rpath): cannot read `[TMP]/fifo`: a FIFO, not a regular file
    ");
    cmd_snapshot!(filters, storepatch().args(["elf", "--rename-dynamic-symbols", "/dev/zero"]).arg(&program), @"
    success: false
    exit_code: 1
    ----- stdout -----

    ----- stderr -----
    error: cannot read `/dev/zero`: a character device, not a regular file
    ");
}

/// `scrub` as a build user in a directory it does not own: neither the rename of a name nor the
/// temporary file for a content rewrite can be made; each says which, where, and why.
#[test]
fn scrub_in_a_directory_that_cannot_be_written() {
    let tree = crate::common::TestTree::new();
    tree.write(&format!("sub/{ZLIB_HASH}-name"), "x\n");
    tree.write("sub/file", format!("/nix/store/{ZLIB_HASH}-zlib\n"));
    // The root is nobody's, `sub` stays root's.
    tree.give_to_nobody(&[]);
    let Some(mut command) = crate::common::storepatch_as_nobody() else {
        return;
    };
    cmd_snapshot!(tree.filters(), command.arg("scrub").arg(&tree.root), @"
    success: false
    exit_code: 2
    ----- stdout -----

    ----- stderr -----
    error: cannot rename `[TMP]/tree/sub/1ix8vrm5f9r5l2v7mwnlbjjzvl0ai3gz-name` to `[TMP]/tree/sub/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-name`: Permission denied (os error 13)
    error: cannot create a temporary file in `[TMP]/tree/sub`: Permission denied (os error 13)
    scrubbed 0 references to 0 store paths: 0 files, 0 symlinks, 0 names (4 entries scanned, 0 references kept, 2 entries failed, 2 errors)
    ");
    assert!(tree.path(&format!("sub/{ZLIB_HASH}-name")).exists());
    assert_eq!(
        fs_err::read_to_string(tree.path("sub/file")).unwrap(),
        format!("/nix/store/{ZLIB_HASH}-zlib\n")
    );
}
