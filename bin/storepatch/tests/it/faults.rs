//! Faults and hostile trees: full disks, loops, huge sparse files, odd names, big trees, files that
//! change during a run, directories that cannot be read. Nothing may be lost in any of them.
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use storepatch_test::cmd_snapshot;

use crate::common::{
    PYTHON_HASH, TestTree, ZLIB_HASH, json_lines, run_ok, storepatch, storepatch_as_nobody,
};

fn scrubbed() -> String {
    "e".repeat(32)
}

/// Temporary files scrub may have left behind.
fn leftovers(root: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
        .map(walkdir::DirEntry::into_path)
        .filter(|path| {
            path.file_name()
                .is_some_and(|name| name.as_bytes().starts_with(b".storepatch-"))
        })
        .collect()
}

/// A small tmpfs, unmounted on drop. `None` (with a message) where mounting is not allowed.
pub(crate) struct SmallFilesystem {
    pub(crate) mount_point: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallFilesystem {
    #[expect(clippy::print_stderr, reason = "a skipped test says so")]
    pub(crate) fn new(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let mount_point = dir.path().join("fs");
        fs_err::create_dir(&mount_point).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mount_point)
            .status();
        if status.is_ok_and(|status| status.success()) {
            Some(Self {
                mount_point,
                _dir: dir,
            })
        } else {
            eprintln!("skipping: cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)");
            None
        }
    }
}

impl Drop for SmallFilesystem {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount_point).status();
    }
}

/// The temporary copy cannot be written: the original stays intact, nothing is left behind, and
/// the error names the file.
#[test]
fn disk_full_on_the_temporary_file_keeps_the_original() {
    let Some(filesystem) = SmallFilesystem::new("512k") else {
        return;
    };
    let root = filesystem.mount_point.join("tree");
    fs_err::create_dir(&root).unwrap();
    let mut contents = format!("/nix/store/{ZLIB_HASH}-zlib-1.3.1/lib\n").into_bytes();
    contents.resize(300 * 1024, b'x');
    let victim = root.join("big.txt");
    fs_err::write(&victim, &contents).unwrap();
    // Fill the rest of the filesystem.
    let filler = filesystem.mount_point.join("filler");
    let mut file = fs_err::File::create(&filler).unwrap();
    let block = vec![1u8; 4096];
    while std::io::Write::write_all(&mut file, &block).is_ok() {}
    drop(file);
    let output = storepatch().arg("scrub").arg(&root).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("big.txt") || stderr.contains(&root.display().to_string()),
        "{stderr}"
    );
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert_eq!(fs_err::read(&victim).unwrap(), contents);
    assert_eq!(leftovers(&root), Vec::<PathBuf>::new());
}

#[test]
fn symlink_loops_are_not_followed() {
    let tree = TestTree::new();
    tree.symlink("a", "b");
    tree.symlink("b", "a");
    tree.symlink("dir/self", ".");
    tree.symlink("dir/up", "..");
    tree.symlink(
        "dir/store",
        format!("/nix/store/{ZLIB_HASH}-zlib-1.3.1/lib"),
    );
    cmd_snapshot!(tree.filters(), storepatch().args(["scrub", "--threads", "2"]).arg(&tree.root), @"
    success: true
    exit_code: 0
    ----- stdout -----
    scrubbed [TMP]/tree/dir/store: 1 reference to /nix/store/1ix8vrm5f9r5l2v7mwnlbjjzvl0ai3gz-zlib-1.3.1 (symlink)

    ----- stderr -----
    scrubbed 1 references to 1 store paths: 0 files, 1 symlinks, 0 names (7 entries scanned, 0 references kept, 0 errors)
    ");
    assert_eq!(
        fs_err::read_link(tree.path("dir/store")).unwrap(),
        Path::new(&format!("/nix/store/{}-zlib-1.3.1/lib", scrubbed()))
    );
    assert_eq!(
        fs_err::read_link(tree.path("dir/self")).unwrap(),
        Path::new(".")
    );
}

/// A 5 GB sparse file with a reference near its end is found at the right offset, scrubbed, and
/// still sparse afterwards.
#[test]
fn huge_sparse_file() {
    let tree = TestTree::new();
    let path = tree.path("huge.img");
    let size: u64 = 5 << 30;
    let offset: u64 = (4 << 30) + 12345;
    {
        let file = fs_err::File::create(&path).unwrap();
        file.set_len(size).unwrap();
        file.file()
            .write_all_at(format!("/nix/store/{ZLIB_HASH}-zlib").as_bytes(), offset)
            .unwrap();
    }
    let output = storepatch()
        .args(["scan", "--json"])
        .arg(&tree.root)
        .output()
        .unwrap();
    let lines = json_lines(&output.stdout);
    assert_eq!(lines[0]["offset"], offset);
    assert!(
        storepatch()
            .arg("scrub")
            .arg(&tree.root)
            .status()
            .unwrap()
            .success()
    );
    let metadata = fs_err::metadata(&path).unwrap();
    assert_eq!(metadata.len(), size);
    assert!(
        metadata.blocks() * 512 < 16 << 20,
        "{} bytes allocated",
        metadata.blocks() * 512
    );
    let mut found = vec![0u8; 11 + 32];
    fs_err::File::open(&path)
        .unwrap()
        .file()
        .read_exact_at(&mut found, offset)
        .unwrap();
    assert_eq!(found, format!("/nix/store/{}", scrubbed()).into_bytes());
}

#[test]
fn names_that_are_not_utf8_are_renamed() {
    let tree = TestTree::new();
    let mut name = ZLIB_HASH.as_bytes().to_vec();
    name.extend_from_slice(b"-caf\xe9");
    fs_err::write(
        tree.root.join(std::ffi::OsStr::from_bytes(&name)),
        format!("/nix/store/{ZLIB_HASH}-zlib\n"),
    )
    .unwrap();
    let output = storepatch()
        .args(["scrub", "--json"])
        .arg(&tree.root)
        .output()
        .unwrap();
    assert!(output.status.success());
    let mut expected = scrubbed().into_bytes();
    expected.extend_from_slice(b"-caf\xe9");
    let path = tree.root.join(std::ffi::OsStr::from_bytes(&expected));
    assert!(fs_err::read_to_string(&path).unwrap().contains(&scrubbed()));
    let rewrites = json_lines(&output.stdout);
    assert!(
        rewrites
            .iter()
            .any(|line| line["kind"] == "name" && line["new_path"]["bytes"].is_string())
    );
}

/// 100k files, one in ten with a reference: everything is found and scrubbed, in one run.
#[test]
fn hundred_thousand_files() {
    let tree = TestTree::new();
    for directory in 0..100 {
        let dir = tree.path(&format!("d{directory:03}"));
        fs_err::create_dir(&dir).unwrap();
        for file in 0..1000 {
            let contents = if file % 10 == 0 {
                format!("/nix/store/{PYTHON_HASH}-python3/bin {directory} {file}\n")
            } else {
                format!("plain {directory} {file}\n")
            };
            fs_err::write(dir.join(format!("f{file:04}")), contents).unwrap();
        }
    }
    let output = storepatch()
        .args(["scrub", "--json"])
        .arg(&tree.root)
        .output()
        .unwrap();
    assert!(output.status.success());
    let summary = json_lines(&output.stdout).pop().unwrap();
    assert_eq!(summary["files"], 10_000);
    assert_eq!(summary["entries"], 100_000 + 100 + 1);
    let again = storepatch().arg("scan").arg(&tree.root).output().unwrap();
    assert_eq!(again.status.code(), Some(1));
}

/// Files deleted and truncated while a scrub runs: the run ends, every file that is left is either
/// untouched or fully scrubbed, nothing temporary is left, and problems are reported by path.
#[test]
fn files_changing_during_the_run() {
    let tree = TestTree::new();
    let reference = format!("/nix/store/{ZLIB_HASH}-zlib-1.3.1/lib\n");
    let mut paths = Vec::new();
    for index in 0..20_000 {
        paths.push(tree.write(&format!("d{}/f{index:05}", index % 50), reference.repeat(3)));
    }
    let child = storepatch()
        .arg("scrub")
        .arg(&tree.root)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Meanwhile: delete every 7th file, truncate every 11th.
    for (index, path) in paths.iter().enumerate().rev() {
        if index % 7 == 0 {
            let _ = fs_err::remove_file(path);
        } else if index % 11 == 0 {
            let _ = fs_err::OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|file| file.set_len(5));
        }
    }
    let output = child.wait_with_output().unwrap();
    assert!(matches!(output.status.code(), Some(0 | 2)), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    for line in stderr.lines().filter(|line| line.starts_with("error:")) {
        assert!(
            line.contains(&tree.root.display().to_string()),
            "error without a path: {line}"
        );
    }
    let scrubbed_contents = reference.replace(ZLIB_HASH, &scrubbed()).repeat(3);
    let truncated = &reference.as_bytes()[..5];
    for path in &paths {
        if let Ok(contents) = fs_err::read(path) {
            assert!(
                contents == reference.repeat(3).as_bytes()
                    || contents == scrubbed_contents.as_bytes()
                    || contents == truncated,
                "{}: {:?}",
                path.display(),
                String::from_utf8_lossy(&contents)
            );
        }
    }
    assert_eq!(leftovers(&tree.root), Vec::<PathBuf>::new());
}

#[test]
fn unreadable_directory_is_reported_and_the_rest_is_scrubbed() {
    let tree = TestTree::new();
    tree.write("closed/inner", format!("/nix/store/{ZLIB_HASH}-zlib\n"));
    tree.write("open/file", format!("/nix/store/{ZLIB_HASH}-zlib\n"));
    tree.chmod("closed", 0o000);
    let Some(mut command) = storepatch_as_nobody() else {
        return;
    };
    tree.give_to_nobody(&["open", "open/file"]);
    cmd_snapshot!(tree.filters(), command.arg("scrub").arg(&tree.root), @"
    success: false
    exit_code: 2
    ----- stdout -----
    scrubbed [TMP]/tree/open/file: 1 reference to /nix/store/1ix8vrm5f9r5l2v7mwnlbjjzvl0ai3gz-zlib (content)

    ----- stderr -----
    error: cannot read `[TMP]/tree/closed`: Permission denied (os error 13)
    scrubbed 1 references to 1 store paths: 1 files, 0 symlinks, 0 names (4 entries scanned, 0 references kept, 1 errors)
    ");
    assert!(
        fs_err::read_to_string(tree.path("open/file"))
            .unwrap()
            .contains(&scrubbed())
    );
    tree.chmod("closed", 0o755);
    assert!(
        fs_err::read_to_string(tree.path("closed/inner"))
            .unwrap()
            .contains(ZLIB_HASH)
    );
}

/// Starts `storepatch ARGS` with SIGINT and SIGTERM ignored, as a background job of a
/// non-interactive shell starts: the binary must still stop cleanly on either signal.
fn spawn_with_signals_ignored(args: &[&std::ffi::OsStr]) -> std::process::Child {
    let binary = storepatch().get_program().to_os_string();
    Command::new("sh")
        .arg("-c")
        .arg("trap '' INT TERM; exec \"$0\" \"$@\"")
        .arg(binary)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until one of `watched` differs from `original`, then sends `signal` to `child`.
fn signal_once_changed(
    child: &std::process::Child,
    watched: &[&Path],
    original: &[u8],
    signal: &str,
) {
    let start = std::time::Instant::now();
    while watched
        .iter()
        .all(|path| fs_err::read(path).is_ok_and(|bytes| bytes == original))
    {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(120),
            "nothing was written"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// How an interrupted run reports the files it did not get to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unreached {
    /// Each has a record saying `interrupted` (discovery had finished before anything was written).
    Recorded,
    /// Some may have none (files are written while discovery still reads others, and a signal
    /// stops it reading): they must be unchanged.
    Unrecorded,
}

/// Checks an interrupted run's JSON report against the files: each record (of `record_type`)
/// says `done` or `interrupted`, some are done, the file holds `new` or `old` accordingly (and
/// `old` without a record), and the summary counts exactly the done ones.
fn check_outcomes(
    stdout: &[u8],
    record_type: &str,
    paths: &[PathBuf],
    (new, old): (&str, &str),
    unreached: Unreached,
) {
    let lines = json_lines(stdout);
    let summary = lines.last().unwrap();
    assert_eq!(summary["type"], "summary");
    let mut outcomes = std::collections::BTreeMap::new();
    for line in lines.iter().filter(|line| line["type"] == record_type) {
        let path = PathBuf::from(line["path"]["text"].as_str().unwrap());
        outcomes.insert(path, line["outcome"].as_str().unwrap().to_owned());
    }
    if unreached == Unreached::Recorded {
        assert_eq!(outcomes.len(), paths.len());
    }
    let done = outcomes
        .values()
        .filter(|outcome| *outcome == "done")
        .count();
    let interrupted = outcomes
        .values()
        .filter(|outcome| *outcome == "interrupted")
        .count();
    assert!(
        done > 0 && done < paths.len(),
        "{done} done, {interrupted} interrupted"
    );
    if unreached == Unreached::Recorded {
        assert!(interrupted > 0, "{done} done, {interrupted} interrupted");
    }
    assert_eq!(done + interrupted, outcomes.len());
    assert_eq!(summary["files"], done);
    assert_eq!(summary["interrupted"], interrupted);
    for path in paths {
        let contents = fs_err::read_to_string(path).unwrap();
        let expected = if outcomes.get(path).is_some_and(|outcome| outcome == "done") {
            new
        } else {
            old
        };
        assert_eq!(contents, expected, "{}", path.display());
    }
}

/// 20 000 files holding `contents` in 40 directories, and the two to watch for the first
/// rewrite: the first and the middle one by inode, as rewrites after discovery go in inode order,
/// split between the threads (scrub, and restore without `--relocate`, write most files as
/// discovery reads them, the first of them soon).
fn many_files(tree: &TestTree, contents: &str) -> (Vec<PathBuf>, [PathBuf; 2]) {
    let paths: Vec<PathBuf> = (0..20_000)
        .map(|index| tree.write(&format!("d{:02}/f{index:05}", index % 40), contents))
        .collect();
    let mut by_inode: Vec<&PathBuf> = paths.iter().collect();
    by_inode.sort_by_key(|path| fs_err::metadata(path).unwrap().ino());
    let watched = [by_inode[0].clone(), by_inode[by_inode.len() / 2].clone()];
    (paths, watched)
}

/// A signal mid-run: the run stops between files, every file is old or new (exactly as its record
/// says; a file discovery did not get to has no record and is old), no temporary file is left, the
/// report lists what was changed, and the exit code is 128 + the signal. A second scrub finishes
/// the job.
fn scrub_interrupted_by(signal: &str, code: i32) {
    let tree = TestTree::new();
    let reference = format!("/nix/store/{ZLIB_HASH}-zlib-1.3.1/lib\n").repeat(4);
    let scrubbed_contents = reference.replace(ZLIB_HASH, &scrubbed());
    let (paths, watched) = many_files(&tree, &reference);
    let watched = [watched[0].as_path(), watched[1].as_path()];
    let child = spawn_with_signals_ignored(&[
        "scrub".as_ref(),
        "--json".as_ref(),
        "--threads".as_ref(),
        "2".as_ref(),
        tree.root.as_os_str(),
    ]);
    signal_once_changed(&child, &watched, reference.as_bytes(), signal);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "{stderr}");
    assert!(
        stderr.contains(&format!("stopped by SIG{signal}")),
        "{stderr}"
    );
    check_outcomes(
        &output.stdout,
        "rewrite",
        &paths,
        (&scrubbed_contents, &reference),
        Unreached::Unrecorded,
    );
    assert_eq!(leftovers(&tree.root), Vec::<PathBuf>::new());
    let again = storepatch().arg("scrub").arg(&tree.root).output().unwrap();
    assert_eq!(again.status.code(), Some(0));
    assert!(
        paths
            .iter()
            .all(|path| fs_err::read_to_string(path).unwrap() == scrubbed_contents)
    );
}

// See: #16
#[test]
fn scrub_stops_cleanly_on_sigint() {
    scrub_interrupted_by("INT", 130);
}

// See: #16
#[test]
fn scrub_stops_cleanly_on_sigterm() {
    scrub_interrupted_by("TERM", 143);
}

/// restore under SIGINT, as scrub above: every file is scrubbed or restored exactly as its record
/// says, no temporary file is left, the summary counts only what was written, exit code 130. With
/// `extra` (such as `--relocate`, which makes restore write nothing before discovery ends) and
/// `unreached`, as `check_outcomes` takes it. A second restore finishes the job.
fn restore_interrupted(extra: &[&str], unreached: Unreached) {
    let tree = TestTree::new();
    let store_path = format!("/nix/store/{ZLIB_HASH}-zlib-1.3.1");
    let restored = format!("{store_path}/lib\n").repeat(4);
    let scrubbed_contents = restored.replace(ZLIB_HASH, &scrubbed());
    let (paths, watched) = many_files(&tree, &scrubbed_contents);
    let watched = [watched[0].as_path(), watched[1].as_path()];
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "restore".as_ref(),
        "--json".as_ref(),
        "--threads".as_ref(),
        "2".as_ref(),
        "--store-path".as_ref(),
        store_path.as_ref(),
    ];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    args.push(tree.root.as_os_str());
    let child = spawn_with_signals_ignored(&args);
    signal_once_changed(&child, &watched, scrubbed_contents.as_bytes(), "INT");
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("stopped by SIGINT"), "{stderr}");
    check_outcomes(
        &output.stdout,
        "restore",
        &paths,
        (&restored, &scrubbed_contents),
        unreached,
    );
    assert_eq!(leftovers(&tree.root), Vec::<PathBuf>::new());
    let again = storepatch()
        .arg("restore")
        .arg("--store-path")
        .arg(&store_path)
        .args(extra)
        .arg(&tree.root)
        .output()
        .unwrap();
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(
        paths
            .iter()
            .all(|path| fs_err::read_to_string(path).unwrap() == restored)
    );
}

/// Without `--relocate`, files are restored as discovery reads them: files it did not get to
/// have no record and are unchanged.
// See: #16
#[test]
fn restore_stops_cleanly_on_sigint() {
    restore_interrupted(&[], Unreached::Unrecorded);
}

/// With `--relocate` (here of a location no file holds), every file is read before any is
/// written: each planned file has a record.
// See: #16
#[test]
fn restore_with_relocation_stops_cleanly_on_sigint() {
    restore_interrupted(
        &["--relocate", "/build/source/.venv=/opt/venv"],
        Unreached::Recorded,
    );
}

/// A signal between the files' restore and their `RECORD`'s update: the `RECORD`s, made for the
/// scrubbed files, are left as they were, and each line that no longer matches its file (because
/// the file was restored) is reported, counted in an error naming the `RECORD`, which is failed.
/// A `RECORD` whose files were all left scrubbed is interrupted, with no such error.
// See: #15
#[test]
fn restore_interrupted_reports_record_lines_it_left_stale() {
    use std::fmt::Write as _;
    let tree = TestTree::new();
    let store_path = format!("/nix/store/{ZLIB_HASH}-zlib-1.3.1");
    let restored = format!("{store_path}/lib\n").repeat(4);
    let scrubbed_contents = restored.replace(ZLIB_HASH, &scrubbed());
    let (paths, watched) = many_files(&tree, &scrubbed_contents);
    let watched = [watched[0].as_path(), watched[1].as_path()];
    let hash = |data: &str| -> String {
        let output = run_ok(Command::new("/usr/bin/python3").args([
            "-c",
            "import base64, hashlib, sys; data = sys.argv[1].encode(); \
             print(base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode())",
            data,
        ]));
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    };
    let fields = |contents: &str| format!("sha256={},{}", hash(contents), contents.len());
    let (scrubbed_fields, restored_fields) = (fields(&scrubbed_contents), fields(&restored));
    // One RECORD per directory, at the tree's root: `d07.dist-info/RECORD` lists `d07/…`.
    let records: Vec<(PathBuf, String)> = (0..40)
        .map(|dir| {
            let dir_path = tree.root.join(format!("d{dir:02}"));
            let mut record = String::new();
            for path in paths.iter().filter(|path| path.parent() == Some(&dir_path)) {
                let relative = path.strip_prefix(&tree.root).unwrap().display();
                writeln!(record, "{relative},{scrubbed_fields}").unwrap();
            }
            let path = tree.write(&format!("d{dir:02}.dist-info/RECORD"), &record);
            (path, record)
        })
        .collect();
    let child = spawn_with_signals_ignored(&[
        "restore".as_ref(),
        "--json".as_ref(),
        "--threads".as_ref(),
        "2".as_ref(),
        "--store-path".as_ref(),
        store_path.as_ref(),
        tree.root.as_os_str(),
    ]);
    signal_once_changed(&child, &watched, scrubbed_contents.as_bytes(), "INT");
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert_eq!(leftovers(&tree.root), Vec::<PathBuf>::new());
    let lines = json_lines(&output.stdout);
    let outcomes: std::collections::HashMap<PathBuf, String> = lines
        .iter()
        .filter(|line| line["type"] == "restore")
        .map(|line| {
            (
                PathBuf::from(line["path"]["text"].as_str().unwrap()),
                line["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let outcome = |path: &Path| outcomes.get(path).cloned();
    let errors = |path: &Path| -> Vec<String> {
        lines
            .iter()
            .filter(|line| {
                line["type"] == "error" && line["path"]["text"] == path.to_str().unwrap()
            })
            .map(|line| line["message"].as_str().unwrap().to_owned())
            .collect()
    };
    // Every file is scrubbed or restored, exactly as its record says.
    let mut done = 0;
    for path in &paths {
        let contents = fs_err::read_to_string(path).unwrap();
        if outcome(path).as_deref() == Some("done") {
            assert_eq!(contents, restored, "{}", path.display());
            done += 1;
        } else {
            assert_eq!(contents, scrubbed_contents, "{}", path.display());
        }
    }
    assert!(done > 0 && done < paths.len(), "{done} done");
    let mut stale_records = 0;
    for (record_path, record) in &records {
        let now = fs_err::read_to_string(record_path).unwrap();
        let stale = record
            .lines()
            .filter(|line| {
                let (file, fields) = line.split_once(',').unwrap();
                let contents = fs_err::read_to_string(tree.root.join(file)).unwrap();
                let true_fields = if contents == restored {
                    &restored_fields
                } else {
                    &scrubbed_fields
                };
                fields != true_fields.as_str()
            })
            .count();
        match outcome(record_path).as_deref() {
            // The whole run was over before the signal: every line is true.
            Some("done") => {
                assert_eq!(stale, 0, "{now}");
                assert!(errors(record_path).is_empty());
            }
            Some(outcome) => {
                assert_eq!(&now, record, "{}", record_path.display());
                let expected: Vec<String> = match stale {
                    0 => Vec::new(),
                    1 => vec![
                        "1 RECORD line keeps the old hash of a file this run changed: the run \
                         was stopped before the RECORD was updated"
                            .to_owned(),
                    ],
                    stale => vec![format!(
                        "{stale} RECORD lines keep the old hashes of files this run changed: \
                         the run was stopped before the RECORD was updated"
                    )],
                };
                let messages: Vec<String> = errors(record_path)
                    .into_iter()
                    .filter(|message| message.contains("RECORD line"))
                    .collect();
                assert_eq!(messages, expected, "{}", record_path.display());
                let expected_outcome = if stale > 0 { "failed" } else { "interrupted" };
                assert_eq!(outcome, expected_outcome, "{}", record_path.display());
                stale_records += usize::from(stale > 0);
            }
            // No file it lists was reached: nothing was planned for it.
            None => {
                assert_eq!(stale, 0, "{}", record_path.display());
                assert_eq!(&now, record);
            }
        }
    }
    assert!(stale_records > 0, "{stderr}");
}

/// A temporary file left by a killed run (its pid is gone): scan reports it rather than counting
/// it as an ordinary file, scrub removes it, and one of a live process is left alone.
// See: #16
#[test]
fn leftovers_of_a_killed_run_are_reported_then_removed() {
    let tree = TestTree::new();
    tree.write("lib/real.txt", format!("/nix/store/{ZLIB_HASH}-zlib\n"));
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let leftover = tree.write(
        &format!("lib/.storepatch-{dead}-7.tmp"),
        format!("/nix/store/{PYTHON_HASH}-python3\n"),
    );
    let scan = storepatch()
        .args(["scan", "--json"])
        .arg(&tree.root)
        .output()
        .unwrap();
    assert_eq!(scan.status.code(), Some(2));
    let lines = json_lines(&scan.stdout);
    assert!(
        lines
            .iter()
            .all(|line| line["path"]["text"].as_str() != leftover.to_str()
                || line["type"] == "error"),
        "{lines:?}"
    );
    assert!(lines.iter().any(|line| {
        line["type"] == "error"
            && line["message"]
                .as_str()
                .is_some_and(|message| message.contains("interrupted storepatch run"))
    }));
    let scrub = storepatch().arg("scrub").arg(&tree.root).output().unwrap();
    let stderr = String::from_utf8_lossy(&scrub.stderr);
    assert_eq!(scrub.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("note: removed"), "{stderr}");
    assert!(!leftover.exists());
    assert_eq!(leftovers(&tree.root), Vec::<PathBuf>::new());

    // A temporary file of a process that is still running is not ours to remove.
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    let busy = tree.write(&format!("lib/.storepatch-{}-0.tmp", sleeper.id()), "in use");
    let scrub = storepatch().arg("scrub").arg(&tree.root).output().unwrap();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert_eq!(scrub.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&scrub.stderr).contains("still going"));
    assert_eq!(fs_err::read_to_string(&busy).unwrap(), "in use");
}

/// On a read-only filesystem nothing can be written: every record says failed, the summary counts
/// no change, and the exit code is 2.
// See: #16
#[test]
fn read_only_filesystem_writes_are_reported_failed() {
    let Some(filesystem) = SmallFilesystem::new("4m") else {
        return;
    };
    let root = filesystem.mount_point.join("tree");
    fs_err::create_dir(&root).unwrap();
    fs_err::write(root.join("a.txt"), format!("/nix/store/{ZLIB_HASH}-zlib\n")).unwrap();
    std::os::unix::fs::symlink(
        format!("/nix/store/{ZLIB_HASH}-zlib/lib"),
        root.join("link"),
    )
    .unwrap();
    fs_err::write(root.join(format!("{ZLIB_HASH}-name")), "x").unwrap();
    let remounted = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&filesystem.mount_point)
        .status()
        .unwrap();
    assert!(remounted.success());
    let output = storepatch()
        .args(["scrub", "--json"])
        .arg(&root)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let lines = json_lines(&output.stdout);
    let rewrites: Vec<_> = lines
        .iter()
        .filter(|line| line["type"] == "rewrite")
        .collect();
    assert_eq!(rewrites.len(), 3);
    assert!(
        rewrites.iter().all(|line| line["outcome"] == "failed"),
        "{rewrites:?}"
    );
    let summary = lines.last().unwrap();
    assert_eq!(
        (
            &summary["files"],
            &summary["symlinks"],
            &summary["names"],
            &summary["failed"]
        ),
        (&0.into(), &0.into(), &0.into(), &3.into())
    );
    let human = storepatch().arg("scrub").arg(&root).output().unwrap();
    assert_eq!(human.status.code(), Some(2));
    assert!(
        human.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&human.stdout)
    );
    let stderr = String::from_utf8_lossy(&human.stderr);
    assert!(stderr.contains("Read-only file system"), "{stderr}");
    assert!(
        stderr.contains("0 files, 0 symlinks, 0 names") && stderr.contains("3 entries failed"),
        "{stderr}"
    );
    let _ = Command::new("mount")
        .args(["-o", "remount,rw"])
        .arg(&filesystem.mount_point)
        .status();
}

/// A full disk: the file that cannot be written is recorded as failed and not counted as scrubbed.
// See: #16
#[test]
fn full_disk_writes_are_reported_failed() {
    let Some(filesystem) = SmallFilesystem::new("512k") else {
        return;
    };
    let root = filesystem.mount_point.join("tree");
    fs_err::create_dir(&root).unwrap();
    let mut contents = format!("/nix/store/{ZLIB_HASH}-zlib-1.3.1/lib\n").into_bytes();
    contents.resize(300 * 1024, b'x');
    fs_err::write(root.join("big.txt"), &contents).unwrap();
    let filler = filesystem.mount_point.join("filler");
    let mut file = fs_err::File::create(&filler).unwrap();
    let block = vec![1u8; 4096];
    while std::io::Write::write_all(&mut file, &block).is_ok() {}
    drop(file);
    let output = storepatch()
        .args(["scrub", "--json"])
        .arg(&root)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let lines = json_lines(&output.stdout);
    let rewrite = lines.iter().find(|line| line["type"] == "rewrite").unwrap();
    assert_eq!(rewrite["outcome"], "failed");
    let summary = lines.last().unwrap();
    assert_eq!(
        (&summary["files"], &summary["failed"]),
        (&0.into(), &1.into())
    );
    assert_eq!(fs_err::read(root.join("big.txt")).unwrap(), contents);
    assert_eq!(leftovers(&root), Vec::<PathBuf>::new());
}

/// A signal in the middle of relinking 4000 extension modules: each is old or new (byte for byte
/// the result of relinking it alone), the summary counts what was patched, no temporary file is
/// left, exit code 130.
// See: #16
#[test]
fn relink_stops_cleanly_on_sigint() {
    let tree = TestTree::new();
    let libs = tree.path("libs");
    fs_err::create_dir_all(&libs).unwrap();
    let library = tree.write("src/answer.c", "int answer(void) { return 42; }\n");
    let extension = tree.write(
        "src/ext.c",
        "int answer(void);\nint twice(void) { return 2 * answer(); }\n",
    );
    let gcc = |args: &[&std::ffi::OsStr]| {
        assert!(Command::new("gcc").args(args).status().unwrap().success());
    };
    gcc(&[
        "-shared".as_ref(),
        "-fPIC".as_ref(),
        "-Wl,-soname,libanswer.so.1".as_ref(),
        "-o".as_ref(),
        libs.join("libanswer.so.1").as_os_str(),
        library.as_os_str(),
    ]);
    let single = tree.path("single/ext.so");
    fs_err::create_dir_all(single.parent().unwrap()).unwrap();
    gcc(&[
        "-shared".as_ref(),
        "-fPIC".as_ref(),
        "-o".as_ref(),
        single.as_os_str(),
        extension.as_os_str(),
        libs.join("libanswer.so.1").as_os_str(),
    ]);
    let original = fs_err::read(&single).unwrap();
    let pkg = tree.path("pkg");
    let mut paths = Vec::new();
    for index in 0..4000 {
        let path = pkg.join(format!("d{:02}/m{index:04}.so", index % 40));
        fs_err::create_dir_all(path.parent().unwrap()).unwrap();
        fs_err::write(&path, &original).unwrap();
        paths.push(path);
    }
    let relink_args = |target: &Path| -> Vec<std::ffi::OsString> {
        vec![
            "relink".into(),
            "--json".into(),
            "--threads".into(),
            "2".into(),
            "--library-path".into(),
            libs.clone().into(),
            target.into(),
        ]
    };
    run_ok(storepatch().args(relink_args(single.parent().unwrap())));
    let relinked = fs_err::read(&single).unwrap();
    assert_ne!(relinked, original);

    paths.sort();
    let watched: Vec<&Path> = [0, 1000, 2000, 3000]
        .iter()
        .map(|&index| paths[index].as_path())
        .collect();
    let args = relink_args(&pkg);
    let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsString::as_os_str).collect();
    let child = spawn_with_signals_ignored(&args);
    signal_once_changed(&child, &watched, &original, "INT");
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    let lines = json_lines(&output.stdout);
    let summary = lines.last().unwrap();
    assert_eq!(summary["type"], "summary");
    let patched: std::collections::BTreeSet<PathBuf> = lines
        .iter()
        .filter(|line| line["type"] == "relink" && line["action"] == "patched")
        .map(|line| PathBuf::from(line["path"]["text"].as_str().unwrap()))
        .collect();
    assert_eq!(summary["patched"], patched.len());
    assert_eq!(summary["interrupted"], paths.len() - patched.len());
    assert!(
        !patched.is_empty() && patched.len() < paths.len(),
        "{}",
        patched.len()
    );
    for path in &paths {
        let contents = fs_err::read(path).unwrap();
        let expected = if patched.contains(path) {
            &relinked
        } else {
            &original
        };
        assert!(
            contents == *expected,
            "{} is neither old nor new",
            path.display()
        );
    }
    assert_eq!(leftovers(&tree.root), Vec::<PathBuf>::new());
}
