//! `storepatch scrub`: rewriting contents, symlinks and names safely.
use std::fmt::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use storepatch_test::cmd_snapshot;
use storepatch_test::pipeline::{
    TreeDifference, compare_trees, copy_tree, describe_differences, run_old_pipeline,
};
use storepatch_test::venv::VenvFixture;

use crate::common::{
    NOBODY, OUT_HASH, PYTHON_HASH, TestTree, ZLIB_HASH, identity, json_lines, run_ok, storepatch,
    storepatch_as_nobody,
};

/// Live references left in `root`, as `scan --json` reports them.
fn live_references(root: &Path, store_dir: &Path) -> Vec<serde_json::Value> {
    let output = storepatch()
        .args(["scan", "--json", "--store-dir"])
        .arg(store_dir)
        .arg(root)
        .output()
        .unwrap();
    json_lines(&output.stdout)
        .into_iter()
        .filter(|line| line["type"] == "reference" && line["scrubbed"] == false)
        .collect()
}

#[test]
fn scrubs_contents_symlinks_and_names() {
    let tree = TestTree::small_venv();
    cmd_snapshot!(tree.filters(), storepatch().arg("scrub").arg(&tree.root), @"
    success: true
    exit_code: 0
    ----- stdout -----
    scrubbed [TMP]/tree/bin/python: 1 reference to /nix/store/0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1-python3-3.12.8 (symlink)
    scrubbed [TMP]/tree/bin/tool: 1 reference to /nix/store/0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1-python3-3.12.8 (content)
    scrubbed [TMP]/tree/lib/python3.12/site-packages/ext/_speedups.so: 1 reference to /nix/store/1ix8vrm5f9r5l2v7mwnlbjjzvl0ai3gz-zlib-1.3.1 (content)
    scrubbed [TMP]/tree/lib/python3.12/site-packages/ext-1.0.dist-info/direct_url.json: 1 reference to /nix/store/0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1-python3-3.12.8-source (content)
    scrubbed [TMP]/tree/pyvenv.cfg: 1 reference to /nix/store/0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1-python3-3.12.8 (content)
    scrubbed [TMP]/tree/share/0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1-patch.txt: 1 reference to /nix/store/0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1-python3-3.12.8 (name)
    scrubbed [TMP]/tree/share/notes.txt: 1 reference to /nix/store/1ix8vrm5f9r5l2v7mwnlbjjzvl0ai3gz-zlib-1.3.1 (content)

    ----- stderr -----
    scrubbed 7 references to 2 store paths: 5 files, 1 symlinks, 1 names (17 entries scanned, 0 references kept, 0 errors)
    ");
    assert!(live_references(&tree.root, Path::new("/nix/store")).is_empty());
    let scrubbed = "e".repeat(32);
    assert_eq!(
        fs_err::read_to_string(tree.path("pyvenv.cfg")).unwrap(),
        format!("home = /nix/store/{scrubbed}-python3-3.12.8/bin\nversion = 3.12.8\n")
    );
    assert_eq!(
        fs_err::read_link(tree.path("bin/python")).unwrap(),
        Path::new(&format!(
            "/nix/store/{scrubbed}-python3-3.12.8/bin/python3.12"
        ))
    );
    // The bare hash of a path found elsewhere is scrubbed too, as Nix would see it.
    assert_eq!(
        fs_err::read_to_string(tree.path("share/notes.txt")).unwrap(),
        format!("built against {scrubbed}\n")
    );
    assert!(tree.path(&format!("share/{scrubbed}-patch.txt")).exists());
}

#[test]
fn second_run_changes_nothing() {
    let tree = TestTree::small_venv();
    assert!(
        storepatch()
            .arg("scrub")
            .arg(&tree.root)
            .status()
            .unwrap()
            .success()
    );
    let before: Vec<_> = walk_identities(&tree.root);
    cmd_snapshot!(tree.filters(), storepatch().arg("scrub").arg(&tree.root), @"
    success: true
    exit_code: 0
    ----- stdout -----

    ----- stderr -----
    scrubbed 0 references to 0 store paths: 0 files, 0 symlinks, 0 names (17 entries scanned, 0 references kept, 0 errors)
    ");
    assert_eq!(walk_identities(&tree.root), before);
}

fn walk_identities(root: &Path) -> Vec<(std::path::PathBuf, (u64, u64, i64, i64))> {
    walkdir::WalkDir::new(root)
        .sort_by_file_name()
        .into_iter()
        .map(|entry| {
            let path = entry.unwrap().into_path();
            let id = identity(&path);
            (path, id)
        })
        .collect()
}

#[test]
fn files_without_references_are_not_written() {
    let tree = TestTree::small_venv();
    let clean = tree.path("share/clean.txt");
    let before = identity(&clean);
    assert!(
        storepatch()
            .arg("scrub")
            .arg(&tree.root)
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(identity(&clean), before);
}

#[test]
fn dry_run_writes_nothing() {
    let tree = TestTree::small_venv();
    let before = walk_identities(&tree.root);
    cmd_snapshot!(tree.filters(), storepatch().args(["scrub", "--dry-run"]).arg(&tree.root), @"
    success: true
    exit_code: 0
    ----- stdout -----
    would scrub [TMP]/tree/bin/python: 1 reference to /nix/store/0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1-python3-3.12.8 (symlink)
    would scrub [TMP]/tree/bin/tool: 1 reference to /nix/store/0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1-python3-3.12.8 (content)
    would scrub [TMP]/tree/lib/python3.12/site-packages/ext/_speedups.so: 1 reference to /nix/store/1ix8vrm5f9r5l2v7mwnlbjjzvl0ai3gz-zlib-1.3.1 (content)
    would scrub [TMP]/tree/lib/python3.12/site-packages/ext-1.0.dist-info/direct_url.json: 1 reference to /nix/store/0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1-python3-3.12.8-source (content)
    would scrub [TMP]/tree/pyvenv.cfg: 1 reference to /nix/store/0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1-python3-3.12.8 (content)
    would scrub [TMP]/tree/share/0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1-patch.txt: 1 reference to /nix/store/0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1-python3-3.12.8 (name)
    would scrub [TMP]/tree/share/notes.txt: 1 reference to /nix/store/1ix8vrm5f9r5l2v7mwnlbjjzvl0ai3gz-zlib-1.3.1 (content)

    ----- stderr -----
    would scrub 7 references to 2 store paths: 5 files, 1 symlinks, 1 names (17 entries scanned, 0 references kept, 0 errors)
    ");
    assert_eq!(walk_identities(&tree.root), before);
}

#[test]
fn keep_and_only() {
    let tree = TestTree::new();
    let out = format!("/nix/store/{OUT_HASH}-authentik-2025.6");
    let python = format!("/nix/store/{PYTHON_HASH}-python3-3.12.8");
    let zlib = format!("/nix/store/{ZLIB_HASH}-zlib-1.3.1");
    tree.write("refs.txt", format!("{out}/bin {python}/bin {zlib}/lib\n"));
    let scrubbed = "e".repeat(32);

    let output = storepatch()
        .args(["scrub", "--json", "--keep"])
        .arg(format!("{out}/lib/x"))
        .arg(&tree.root)
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        json_lines(&output.stdout).last().unwrap()["kept_references"],
        1
    );
    assert_eq!(
        fs_err::read_to_string(tree.path("refs.txt")).unwrap(),
        format!(
            "{out}/bin /nix/store/{scrubbed}-python3-3.12.8/bin /nix/store/{scrubbed}-zlib-1.3.1/lib\n"
        )
    );

    tree.write("only.txt", format!("{out}/bin {python}/bin\n"));
    assert!(
        storepatch()
            .args(["scrub", "--only", &python])
            .arg(&tree.root)
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(
        fs_err::read_to_string(tree.path("only.txt")).unwrap(),
        format!("{out}/bin /nix/store/{scrubbed}-python3-3.12.8/bin\n")
    );
}

/// Most files are written while discovery's first pass reads them. A bare hash that only counts
/// once its store path turns up elsewhere (in path form) is found after that, in a file already
/// written for its other references: it is scrubbed too, and the file is reported once with all
/// of them. So also for a file with more unresolved hash-alphabet runs than discovery keeps,
/// which is read again (after its first write) to find the late ones.
#[test]
fn late_bare_hashes_in_files_written_early() {
    let tree = TestTree::new();
    let early = format!("/nix/store/{ZLIB_HASH}-zlib-1.3.1/lib\nlinked with {PYTHON_HASH}\n");
    // 32-digit runs are all hash-alphabet bytes; 5000 of them are more than are kept.
    let runs = (0..5000).fold(String::new(), |mut runs, index| {
        writeln!(runs, "{index:032}").unwrap();
        runs
    });
    let written = tree.write("a/written.txt", &early);
    let read_again = tree.write("a/read-again.txt", format!("{early}{runs}"));
    tree.write(
        "z/python.txt",
        format!("/nix/store/{PYTHON_HASH}-python3-3.12.8/bin/python\n"),
    );
    let output = storepatch()
        .args(["scrub", "--json"])
        .arg(&tree.root)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let lines = json_lines(&output.stdout);
    for path in [&written, &read_again] {
        let records: Vec<_> = lines
            .iter()
            .filter(|line| {
                line["type"] == "rewrite" && line["path"]["text"] == path.to_str().unwrap()
            })
            .collect();
        assert_eq!(records.len(), 1, "{records:?}");
        assert_eq!(records[0]["outcome"], "done");
        assert_eq!(records[0]["references"], 2);
    }
    assert_eq!(lines.last().unwrap()["references"], 5);
    let scrubbed = "e".repeat(32);
    let expected = early
        .replace(ZLIB_HASH, &scrubbed)
        .replace(PYTHON_HASH, &scrubbed);
    assert_eq!(fs_err::read_to_string(&written).unwrap(), expected);
    assert_eq!(
        fs_err::read_to_string(&read_again).unwrap(),
        format!("{expected}{runs}")
    );
    assert!(live_references(&tree.root, Path::new("/nix/store")).is_empty());
}

#[test]
fn hard_links_inside_stay_linked_and_outside_links_keep_old_contents() {
    let tree = TestTree::new();
    let contents = format!("/nix/store/{ZLIB_HASH}-zlib-1.3.1/lib\n");
    let first = tree.write("a/first", &contents);
    let second = tree.path("b/second");
    fs_err::create_dir_all(second.parent().unwrap()).unwrap();
    fs_err::hard_link(&first, &second).unwrap();
    let outside = tree.dir.path().join("outside");
    fs_err::hard_link(&first, &outside).unwrap();
    assert!(
        storepatch()
            .arg("scrub")
            .arg(&tree.root)
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(
        fs_err::metadata(&first).unwrap().ino(),
        fs_err::metadata(&second).unwrap().ino()
    );
    assert_eq!(fs_err::metadata(&first).unwrap().nlink(), 2);
    assert!(
        fs_err::read_to_string(&second)
            .unwrap()
            .contains(&"e".repeat(32))
    );
    assert_eq!(fs_err::read_to_string(&outside).unwrap(), contents);
}

#[test]
fn read_only_files_and_directories_keep_their_modes() {
    let tree = TestTree::new();
    tree.write("ro/file", format!("/nix/store/{ZLIB_HASH}-zlib\n"));
    tree.write(&format!("ro/{ZLIB_HASH}-named"), "");
    tree.chmod("ro/file", 0o444);
    tree.chmod("ro", 0o555);
    let Some(mut command) = storepatch_as_nobody() else {
        return;
    };
    tree.give_to_nobody(&["**"]);
    run_ok(command.arg("scrub").arg(&tree.root));
    let mode = |relative: &str| {
        fs_err::metadata(tree.path(relative))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("ro"), 0o555);
    assert_eq!(mode("ro/file"), 0o444);
    assert_eq!(
        fs_err::metadata(tree.path("ro/file")).unwrap().uid(),
        NOBODY
    );
    assert!(tree.path(&format!("ro/{}-named", "e".repeat(32))).exists());
}

#[test]
fn symlinks_are_never_followed_out_of_the_tree() {
    let tree = TestTree::new();
    let outside = tree.dir.path().join("outside");
    fs_err::create_dir(&outside).unwrap();
    let outside_file = outside.join("victim");
    let contents = format!("/nix/store/{ZLIB_HASH}-zlib\n");
    fs_err::write(&outside_file, &contents).unwrap();
    tree.symlink("dir-link", &outside);
    tree.symlink("file-link", &outside_file);
    tree.write("inside", &contents);
    assert!(
        storepatch()
            .arg("scrub")
            .arg(&tree.root)
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(fs_err::read_to_string(&outside_file).unwrap(), contents);
    assert_eq!(
        fs_err::read_link(tree.path("file-link")).unwrap(),
        outside_file
    );
    // A root that is itself a symlink is refused rather than followed.
    cmd_snapshot!(tree.filters(), storepatch().arg("scrub").arg(tree.path("dir-link")), @"
    success: false
    exit_code: 2
    ----- stdout -----

    ----- stderr -----
    error: cannot scrub `[TMP]/tree/dir-link`: not a directory
    ");
    assert_eq!(fs_err::read_to_string(&outside_file).unwrap(), contents);
}

#[test]
fn bad_roots_and_store_dirs_are_errors() {
    let tree = TestTree::new();
    let file = tree.write("file", format!("/nix/store/{ZLIB_HASH}-zlib\n"));
    cmd_snapshot!(tree.filters(), storepatch().arg("scrub").arg(&file), @"
    success: false
    exit_code: 2
    ----- stdout -----

    ----- stderr -----
    error: cannot scrub `[TMP]/tree/file`: not a directory
    ");
    cmd_snapshot!(tree.filters(), storepatch().args(["scrub", "--store-dir", "relative"]).arg(&tree.root), @"
    success: false
    exit_code: 2
    ----- stdout -----

    ----- stderr -----
    error: store directory `relative` is not an absolute path
    ");
    cmd_snapshot!(tree.filters(), storepatch().args(["scrub", "--keep", "/usr/lib"]).arg(&tree.root), @"
    success: false
    exit_code: 2
    ----- stdout -----

    ----- stderr -----
    error: `/usr/lib` is not a store path: `/usr/lib` is not inside the store directory `/nix/store`
    ");
    assert_eq!(
        fs_err::read_to_string(&file).unwrap(),
        format!("/nix/store/{ZLIB_HASH}-zlib\n")
    );
}

#[test]
fn unreadable_file_is_reported_and_the_rest_is_scrubbed() {
    let tree = TestTree::new();
    tree.write("secret", format!("/nix/store/{ZLIB_HASH}-zlib\n"));
    tree.write("open", format!("/nix/store/{ZLIB_HASH}-zlib\n"));
    tree.chmod("secret", 0o000);
    let Some(mut command) = storepatch_as_nobody() else {
        return;
    };
    tree.give_to_nobody(&["open"]);
    cmd_snapshot!(tree.filters(), command.arg("scrub").arg(&tree.root), @"
    success: false
    exit_code: 2
    ----- stdout -----
    scrubbed [TMP]/tree/open: 1 reference to /nix/store/1ix8vrm5f9r5l2v7mwnlbjjzvl0ai3gz-zlib (content)

    ----- stderr -----
    error: cannot read `[TMP]/tree/secret`: Permission denied (os error 13)
    scrubbed 1 references to 1 store paths: 1 files, 0 symlinks, 0 names (3 entries scanned, 0 references kept, 1 errors)
    ");
    assert!(
        fs_err::read_to_string(tree.path("open"))
            .unwrap()
            .contains(&"e".repeat(32))
    );
    let leftovers: Vec<_> = fs_err::read_dir(&tree.root)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        2,
        "no temporary file left behind: {leftovers:?}"
    );
}

/// A realistic venv fixture (gcc-built extensions, a store beside it) in a fresh temporary
/// directory, which must outlive the fixture.
fn venv_fixture() -> (tempfile::TempDir, VenvFixture) {
    let dir = tempfile::tempdir().unwrap();
    let fixture = VenvFixture::builder(dir.path().join("venv"), dir.path().join("store"))
        .build()
        .unwrap();
    (dir, fixture)
}

/// A realistic venv: storepatch's output equals the old grep + remove-references-to pipeline on
/// every regular file, and it also fixes the symlinks and names that pipeline leaves behind.
#[test]
fn realistic_venv_matches_the_old_pipeline_and_goes_further() {
    let (dir, fixture) = venv_fixture();
    let store = fixture.store_dir.clone();
    let old = dir.path().join("old");
    copy_tree(&fixture.venv, &old).unwrap();
    let outcome = run_old_pipeline(&old, &store).unwrap();
    assert!(!outcome.hashes.is_empty());

    run_ok(
        storepatch()
            .args(["scrub", "--store-dir"])
            .arg(&store)
            .arg(&fixture.venv),
    );
    assert!(live_references(&fixture.venv, &store).is_empty());

    let differences = compare_trees(&old, &fixture.venv).unwrap();
    let unexpected: Vec<&TreeDifference> = differences
        .iter()
        .filter(|difference| {
            !matches!(
                difference,
                TreeDifference::OnlyInLeft(_)
                    | TreeDifference::OnlyInRight(_)
                    | TreeDifference::SymlinkTargetDiffers { .. }
            )
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "{}",
        describe_differences(&differences)
    );
    // What the old pipeline misses, storepatch fixed: names and symlink targets. Nix would look
    // for every store path of the build's closure, so the scan gets them all as candidates.
    let candidates = dir.path().join("candidates");
    let listing: Vec<String> = fixture
        .store_paths()
        .iter()
        .map(|path| path.display().to_string())
        .collect();
    fs_err::write(&candidates, listing.join("\n")).unwrap();
    let with_candidates = |root: &Path| -> Vec<serde_json::Value> {
        let output = storepatch()
            .args(["scan", "--json", "--store-dir"])
            .arg(&store)
            .arg("--candidates")
            .arg(&candidates)
            .arg(root)
            .output()
            .unwrap();
        json_lines(&output.stdout)
            .into_iter()
            .filter(|line| line["type"] == "reference" && line["scrubbed"] == false)
            .collect()
    };
    let missed = with_candidates(&old);
    // Hashes that only ever appear bare need candidates, as inside a Nix build; with them,
    // nothing Nix could see is left.
    run_ok(
        storepatch()
            .args(["scrub", "--store-dir"])
            .arg(&store)
            .arg("--candidates")
            .arg(&candidates)
            .arg(&fixture.venv),
    );
    assert_eq!(
        with_candidates(&fixture.venv),
        Vec::<serde_json::Value>::new()
    );
    assert!(
        missed.iter().any(|line| line["kind"] == "name"),
        "{missed:?}"
    );
    assert!(
        missed.iter().any(|line| line["kind"] == "symlink"),
        "{missed:?}"
    );
    assert!(
        differences
            .iter()
            .any(|difference| matches!(difference, TreeDifference::SymlinkTargetDiffers { .. }))
    );
}

/// Scrubbed C extensions are intact: they load once the libraries are supplied another way.
#[test]
fn scrubbed_extensions_still_load() {
    let (_dir, fixture) = venv_fixture();
    let store = fixture.store_dir.clone();
    let before = fixture.import_extensions(None).unwrap();
    assert!(before.success, "{}", before.stderr);
    run_ok(
        storepatch()
            .args(["scrub", "--store-dir"])
            .arg(&store)
            .arg(&fixture.venv),
    );
    // The RUNPATH now points nowhere, so without help the libraries are not found ...
    let without = fixture
        .import_extensions(Some(std::ffi::OsStr::new("")))
        .unwrap();
    assert!(!without.success, "{}", without.stdout);
    // ... and with LD_LIBRARY_PATH every module imports and works.
    let with = fixture
        .import_extensions(Some(&fixture.library_path()))
        .unwrap();
    assert!(with.success, "{}", with.stderr);
}

/// The same tree scrubbed with 1 and with 4 threads comes out byte-identical.
#[test]
fn output_is_identical_for_any_thread_count() {
    let (dir, fixture) = venv_fixture();
    let store = fixture.store_dir.clone();
    let copy = dir.path().join("copy");
    copy_tree(&fixture.venv, &copy).unwrap();
    for (root, threads) in [(&fixture.venv, "1"), (&copy, "4")] {
        let output = storepatch()
            .args(["scrub", "--json", "--threads", threads, "--store-dir"])
            .arg(&store)
            .arg(root)
            .output()
            .unwrap();
        assert!(output.status.success());
    }
    let differences = compare_trees(&fixture.venv, &copy).unwrap();
    assert!(
        differences.is_empty(),
        "{}",
        describe_differences(&differences)
    );
}

/// Scrubbing without mmap (large files scanned in pieces, and read again whole only to be
/// rewritten) reports and writes exactly what scrubbing with mmap does.
#[test]
fn scrub_without_mmap_is_the_same() {
    let tree = TestTree::small_venv();
    tree.write("lib/big.txt", crate::scan::big_text());
    // Large, with no references: scanned in pieces and never written.
    tree.write("lib/clean.txt", "no references here\n".repeat(30_000));
    let copy = tree.root.with_file_name("copy");
    copy_tree(&tree.root, &copy).unwrap();
    let outputs: Vec<Vec<u8>> = [(&tree.root, None), (&copy, Some("--no-mmap"))]
        .into_iter()
        .map(|(root, flag)| {
            let output = storepatch()
                .args(["scrub", "--json"])
                .args(flag)
                .arg(root)
                .output()
                .unwrap();
            assert_eq!(
                output.status.code(),
                Some(0),
                "{}",
                String::from_utf8_lossy(&output.stdout)
            );
            String::from_utf8(output.stdout)
                .unwrap()
                .replace(copy.to_str().unwrap(), tree.root.to_str().unwrap())
                .into_bytes()
        })
        .collect();
    assert_eq!(outputs[0], outputs[1]);
    let differences = compare_trees(&tree.root, &copy).unwrap();
    assert!(
        differences.is_empty(),
        "{}",
        describe_differences(&differences)
    );
    assert!(live_references(&copy, Path::new("/nix/store")).is_empty());
}
