//! `storepatch restore`: scrub's inverse by name, relocation of a venv's location, real uv venvs.
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use storepatch_test::cmd_snapshot;
use storepatch_test::fixture_store::{host_python, write_python_package};
use storepatch_test::nix::NixJudge;

use crate::common::{
    PYTHON_HASH, TestTree, ZLIB_HASH, identity, json_lines, run_ok, storepatch, uv_or_skip, uv_sync,
};

const SCRUBBED: &str = "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee";

/// Every entry below `root`: relative path -> (kind, contents or target, mode).
fn snapshot_tree(root: &Path) -> BTreeMap<PathBuf, (String, Vec<u8>, u32)> {
    walkdir::WalkDir::new(root)
        .sort_by_file_name()
        .into_iter()
        .map(|entry| {
            let entry = entry.unwrap();
            let metadata = fs_err::symlink_metadata(entry.path()).unwrap();
            let (kind, bytes) = if metadata.file_type().is_symlink() {
                (
                    "symlink",
                    fs_err::read_link(entry.path())
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                )
            } else if metadata.is_dir() {
                ("dir", Vec::new())
            } else {
                ("file", fs_err::read(entry.path()).unwrap())
            };
            (
                entry.path().strip_prefix(root).unwrap().to_path_buf(),
                (kind.to_owned(), bytes, metadata.mode()),
            )
        })
        .collect()
}

fn python() -> String {
    format!("/nix/store/{PYTHON_HASH}-python3-3.12.8")
}

fn zlib() -> String {
    format!("/nix/store/{ZLIB_HASH}-zlib-1.3.1")
}

#[test]
fn restores_what_scrub_took() {
    let tree = TestTree::small_venv();
    let original = snapshot_tree(&tree.root);
    run_ok(storepatch().arg("scrub").arg(&tree.root));
    let candidates = tree.dir.path().join("inputs");
    fs_err::write(
        &candidates,
        format!(
            "# the build's inputs\n{}\n{}\n{}-source\n",
            python(),
            zlib(),
            python()
        ),
    )
    .unwrap();
    cmd_snapshot!(tree.filters(), storepatch().arg("restore").arg("--candidates").arg(&candidates).arg("--store-path").arg(python()).arg(&tree.root), @"
    success: false
    exit_code: 1
    ----- stdout -----
    restored [TMP]/tree/bin/python: 1 reference to /nix/store/0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1-python3-3.12.8 (symlink)
    restored [TMP]/tree/bin/tool: 1 reference to /nix/store/0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1-python3-3.12.8 (content)
    restored [TMP]/tree/lib/python3.12/site-packages/ext/_speedups.so: 1 reference to /nix/store/1ix8vrm5f9r5l2v7mwnlbjjzvl0ai3gz-zlib-1.3.1 (content)
    restored [TMP]/tree/lib/python3.12/site-packages/ext-1.0.dist-info/direct_url.json: 1 reference to /nix/store/0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1-python3-3.12.8-source (content)
    restored [TMP]/tree/pyvenv.cfg: 1 reference to /nix/store/0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1-python3-3.12.8 (content)

    ----- stderr -----
    warning: /nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-patch.txt left scrubbed: no supplied store path has this name; in [TMP]/tree/share/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-patch.txt (name)
    restored 5 references and relocated 0: 4 files, 1 symlinks, 0 names (17 entries scanned, 3 store paths supplied, 1 places with 1 names left scrubbed, 0 binary files left, 0 errors)
    ");
    let restored = snapshot_tree(&tree.root);
    // Everything is back but the bare hash in notes.txt: scrubbing it kept no name to go by.
    let differences: Vec<&PathBuf> = original
        .keys()
        .filter(|path| original.get(*path) != restored.get(*path))
        .collect();
    assert_eq!(
        differences,
        [
            Path::new(&format!("share/{PYTHON_HASH}-patch.txt")),
            Path::new("share/notes.txt"),
        ],
        "entries that differ from before the scrub"
    );
    assert_eq!(
        fs_err::read_to_string(tree.path("share/notes.txt")).unwrap(),
        format!("built against {SCRUBBED}\n")
    );
    // The file named after a bare hash keeps `eeee…-patch.txt`: no supplied path is named
    // `patch.txt` (it is reported, exit 1).
    assert!(tree.path(&format!("share/{SCRUBBED}-patch.txt")).exists());
}

#[test]
fn second_run_changes_nothing_and_dry_run_writes_nothing() {
    let tree = TestTree::small_venv();
    run_ok(storepatch().arg("scrub").arg(&tree.root));
    let source = format!("{}-source", python());
    let args = |command: &mut Command| {
        command
            .arg("restore")
            .args(["--store-path", &python(), "--store-path", &zlib()])
            .args(["--store-path", &source])
            .arg(&tree.root);
    };
    let before = snapshot_tree(&tree.root);
    let identities: Vec<_> = before
        .keys()
        .map(|path| identity(&tree.root.join(path)))
        .collect();
    let mut dry = storepatch();
    args(&mut dry);
    let output = dry.arg("--dry-run").output().unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).contains("would restore"));
    assert_eq!(snapshot_tree(&tree.root), before);
    assert_eq!(
        before
            .keys()
            .map(|path| identity(&tree.root.join(path)))
            .collect::<Vec<_>>(),
        identities
    );

    let mut first = storepatch();
    args(&mut first);
    // Exit 1: the file named after a bare hash has no store path name to go by.
    assert_eq!(first.status().unwrap().code(), Some(1));
    let after = snapshot_tree(&tree.root);
    let identities: Vec<_> = after
        .keys()
        .map(|path| identity(&tree.root.join(path)))
        .collect();
    let mut second = storepatch();
    args(&mut second);
    cmd_snapshot!(tree.filters(), second, @"
    success: false
    exit_code: 1
    ----- stdout -----

    ----- stderr -----
    warning: /nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-patch.txt left scrubbed: no supplied store path has this name; in [TMP]/tree/share/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-patch.txt (name)
    restored 0 references and relocated 0: 0 files, 0 symlinks, 0 names (17 entries scanned, 3 store paths supplied, 1 places with 1 names left scrubbed, 0 binary files left, 0 errors)
    ");
    assert_eq!(snapshot_tree(&tree.root), after);
    assert_eq!(
        after
            .keys()
            .map(|path| identity(&tree.root.join(path)))
            .collect::<Vec<_>>(),
        identities
    );
}

#[test]
fn unknown_and_ambiguous_names_are_reported_and_left() {
    let tree = TestTree::new();
    tree.write(
        "pyvenv.cfg",
        format!("home = /nix/store/{SCRUBBED}-python3-3.12.8/bin\n"),
    );
    tree.write(
        "bin/tool",
        format!("#!/nix/store/{SCRUBBED}-python3-3.12.8/bin/python3.12\n"),
    );
    tree.symlink(
        "lib/libz.so.1",
        format!("/nix/store/{SCRUBBED}-zlib-1.3.1/lib/libz.so.1"),
    );
    tree.write(
        "share/doc",
        format!("see /nix/store/{SCRUBBED}-openssl-3.0.15/share\n"),
    );
    let before = snapshot_tree(&tree.root);
    let other_python = "/nix/store/2c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1-python3-3.12.8";
    let mut command = storepatch();
    command
        .arg("restore")
        .args(["--store-path", &python(), "--store-path", other_python])
        .args(["--store-path", &zlib()])
        .arg(&tree.root);
    cmd_snapshot!(tree.filters(), command, @"
    success: false
    exit_code: 1
    ----- stdout -----
    restored [TMP]/tree/lib/libz.so.1: 1 reference to /nix/store/1ix8vrm5f9r5l2v7mwnlbjjzvl0ai3gz-zlib-1.3.1 (symlink)

    ----- stderr -----
    warning: /nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-openssl-3.0.15 left scrubbed: no supplied store path has this name; in [TMP]/tree/share/doc (content)
    warning: /nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-python3-3.12.8 left scrubbed: several supplied store paths have this name (/nix/store/0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1-python3-3.12.8, /nix/store/2c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1-python3-3.12.8); in [TMP]/tree/bin/tool (content), [TMP]/tree/pyvenv.cfg (content)
    restored 1 references and relocated 0: 0 files, 1 symlinks, 0 names (8 entries scanned, 3 store paths supplied, 3 places with 2 names left scrubbed, 0 binary files left, 0 errors)
    ");
    let after = snapshot_tree(&tree.root);
    // Only the symlink changed; the ambiguous and unknown names were left exactly as they were.
    for (path, entry) in &before {
        if path == Path::new("lib/libz.so.1") {
            assert_eq!(
                entry.1,
                format!("/nix/store/{SCRUBBED}-zlib-1.3.1/lib/libz.so.1").as_bytes()
            );
            assert_eq!(
                after[path].1,
                format!("{}/lib/libz.so.1", zlib()).as_bytes()
            );
        } else {
            assert_eq!(&after[path], entry, "{}", path.display());
        }
    }

    let output = storepatch()
        .args([
            "--json",
            "restore",
            "--store-path",
            &python(),
            "--store-path",
            other_python,
        ])
        .arg("--dry-run")
        .arg(&tree.root)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let lines = json_lines(&output.stdout);
    let unresolved: Vec<_> = lines
        .iter()
        .filter(|line| line["type"] == "unresolved")
        .map(|line| {
            (
                line["name"]["text"].clone(),
                line["reason"].clone(),
                line["places"].as_array().unwrap().len(),
            )
        })
        .collect();
    assert_eq!(
        unresolved,
        [
            ("openssl-3.0.15".into(), "unknown".into(), 1),
            ("python3-3.12.8".into(), "ambiguous".into(), 2),
        ]
    );
}

/// The files a venv records its own location in, as uv and pip write them (see DESIGN.md §8).
fn relocatable_tree(tree: &TestTree, old: &str) {
    tree.write(
        "bin/tool",
        format!("#!{old}/bin/python\n# -*- coding: utf-8 -*-\nimport sys\nfrom tool import main\n"),
    );
    tree.write(
        "bin/activate",
        format!("VIRTUAL_ENV='{old}'\nexport VIRTUAL_ENV\n"),
    );
    tree.write(
        "bin/activate.fish",
        format!("set -gx VIRTUAL_ENV '{old}'\n"),
    );
    tree.write(
        "pyvenv.cfg",
        format!("home = /nix/store/{SCRUBBED}-python3-3.12.8/bin\nprompt = demo\n"),
    );
    tree.symlink(
        "bin/python",
        format!("/nix/store/{SCRUBBED}-python3-3.12.8/bin/python3.12"),
    );
    tree.write(
        "lib/python3.12/site-packages/demo-1.0.dist-info/RECORD",
        format!("{old}/bin/tool,sha256=abc,80\ndemo/__init__.py,,\n"),
    );
    tree.write(
        "lib/python3.12/site-packages/demo-1.0.dist-info/direct_url.json",
        format!("{{\"url\": \"file://{old}/src\", \"dir_info\": {{\"editable\": true}}}}\n"),
    );
    tree.write(
        "lib/python3.12/site-packages/demo.pth",
        format!("{old}/src\n"),
    );
    let mut pyc = b"\xa7\x0d\x0d\x0a\0\0\0\0".to_vec();
    pyc.extend_from_slice(format!("\x10{old}/src/demo/__init__.py").as_bytes());
    tree.write(
        "lib/python3.12/site-packages/demo/__pycache__/__init__.cpython-312.pyc",
        pyc,
    );
    let mut elf = b"\x7fELF\x02\x01\x01\0".to_vec();
    elf.extend_from_slice(format!("{old}/lib\0").as_bytes());
    tree.write("lib/python3.12/site-packages/demo/_speedups.so", elf);
}

#[test]
fn relocates_every_text_kind_and_reports_binaries() {
    let tree = TestTree::new();
    let old = "/build/source/.venv";
    relocatable_tree(&tree, old);
    let new = format!("/nix/store/{ZLIB_HASH}-demo-env");
    let mut command = storepatch();
    command
        .arg("restore")
        .args(["--store-path", &python()])
        .arg("--relocate")
        .arg(format!("{old}={new}"))
        .arg(&tree.root);
    cmd_snapshot!(tree.filters(), command, @"
    success: false
    exit_code: 1
    ----- stdout -----
    restored [TMP]/tree/bin/activate: relocated 1 occurrence of /build/source/.venv (content)
    restored [TMP]/tree/bin/activate.fish: relocated 1 occurrence of /build/source/.venv (content)
    restored [TMP]/tree/bin/python: 1 reference to /nix/store/0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1-python3-3.12.8 (symlink)
    restored [TMP]/tree/bin/tool: relocated 1 occurrence of /build/source/.venv (content)
    restored [TMP]/tree/lib/python3.12/site-packages/demo-1.0.dist-info/RECORD: relocated 1 occurrence of /build/source/.venv (content)
    restored [TMP]/tree/lib/python3.12/site-packages/demo-1.0.dist-info/direct_url.json: relocated 1 occurrence of /build/source/.venv (content)
    restored [TMP]/tree/lib/python3.12/site-packages/demo.pth: relocated 1 occurrence of /build/source/.venv (content)
    restored [TMP]/tree/pyvenv.cfg: 1 reference to /nix/store/0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1-python3-3.12.8 (content)

    ----- stderr -----
    warning: [TMP]/tree/lib/python3.12/site-packages/demo/__pycache__/__init__.cpython-312.pyc: 1 occurrence of /build/source/.venv left as it is: it is Python bytecode that cannot be read (size 1668445551 out of range at offset 17)
    warning: [TMP]/tree/lib/python3.12/site-packages/demo/_speedups.so: 1 occurrence of /build/source/.venv left as it is: the length of an ELF file cannot change
    restored 2 references and relocated 6: 7 files, 1 symlinks, 0 names (18 entries scanned, 1 store paths supplied, 0 places with 0 names left scrubbed, 2 binary files left, 0 errors)
    ");
    let read = |relative: &str| fs_err::read_to_string(tree.path(relative)).unwrap();
    assert!(read("bin/tool").starts_with(&format!("#!{new}/bin/python\n")));
    assert_eq!(
        read("bin/activate"),
        format!("VIRTUAL_ENV='{new}'\nexport VIRTUAL_ENV\n")
    );
    assert_eq!(
        read("bin/activate.fish"),
        format!("set -gx VIRTUAL_ENV '{new}'\n")
    );
    assert_eq!(
        read("pyvenv.cfg"),
        format!("home = {}/bin\nprompt = demo\n", python())
    );
    assert_eq!(
        read("lib/python3.12/site-packages/demo-1.0.dist-info/RECORD"),
        format!("{new}/bin/tool,sha256=abc,80\ndemo/__init__.py,,\n")
    );
    assert!(
        read("lib/python3.12/site-packages/demo-1.0.dist-info/direct_url.json")
            .contains(&format!("file://{new}/src"))
    );
    assert_eq!(
        read("lib/python3.12/site-packages/demo.pth"),
        format!("{new}/src\n")
    );
    // Binary files keep their bytes.
    let pyc = fs_err::read(
        tree.path("lib/python3.12/site-packages/demo/__pycache__/__init__.cpython-312.pyc"),
    )
    .unwrap();
    assert!(
        pyc.windows(old.len())
            .any(|window| window == old.as_bytes())
    );
    // The tool keeps its mode.
    assert_eq!(
        fs_err::metadata(tree.path("bin/tool")).unwrap().mode() & 0o777,
        0o644
    );
}

#[test]
fn a_scrubbed_old_location_is_relocated_not_restored() {
    // The FOD's own `$out`, scrubbed, is also a supplied input of the main derivation: it must
    // become the new `$out`, never the FOD's path.
    let tree = TestTree::new();
    let fod = "/nix/store/3c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1-python-deps";
    let old = format!("/nix/store/{SCRUBBED}-python-deps");
    let new = format!("/nix/store/{ZLIB_HASH}-app");
    tree.write("bin/tool", format!("#!{old}/bin/python\n"));
    let output = run_ok(
        storepatch()
            .args(["restore", "--store-path", fod, "--relocate"])
            .arg(format!("{old}={new}"))
            .arg(&tree.root),
    );
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        fs_err::read_to_string(tree.path("bin/tool")).unwrap(),
        format!("#!{new}/bin/python\n")
    );
}

#[test]
fn bad_relocation_is_a_usage_error() {
    let tree = TestTree::new();
    let mut command = storepatch();
    command
        .args(["restore", "--relocate", "=/x"])
        .arg(&tree.root);
    cmd_snapshot!(tree.filters(), command, @"
    success: false
    exit_code: 2
    ----- stdout -----

    ----- stderr -----
    error: `--relocate =/x`: expected OLD=NEW with a non-empty OLD
    ");
}

/// A real venv made by `uv sync` in `<dir>/build/.venv` with a Python that lives in the real
/// store, byte-compiled the way `UV_COMPILE_BYTECODE=1` does. Returns the interpreter's store path.
fn real_uv_venv(nix: &NixJudge, uv: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
    let host = host_python()?;
    let staged = dir.join(host.package_name());
    write_python_package(host, &staged)?;
    let python = nix.add(&staged)?;
    uv_sync(
        uv,
        &python.join(format!("bin/python{}", host.version)),
        &dir.join("build"),
    )?;
    Ok(python)
}

fn import_everything(venv: &Path) -> std::process::Output {
    Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import sys, lxml.etree, cryptography.hazmat.bindings._rust, pydantic_core, \
             psycopg, psycopg_binary, yaml, markdown, pygments\n\
             assert yaml.__with_libyaml__ or True\n\
             print(sys.prefix)",
        ])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap()
}

#[test]
fn real_uv_venv_scrubbed_then_restored_and_relocated() -> anyhow::Result<()> {
    let Some(nix) = NixJudge::new_or_skip("real_uv_venv_scrubbed_then_restored_and_relocated")?
    else {
        return Ok(());
    };
    let Some(uv) = uv_or_skip("real_uv_venv_scrubbed_then_restored_and_relocated") else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let python = real_uv_venv(&nix, &uv, dir.path())?;
    let built = dir.path().join("build/.venv");
    // What uv wrote: the shebangs and activate scripts name the build directory.
    let shebang = fs_err::read_to_string(built.join("bin/markdown_py"))?;
    assert!(shebang.starts_with(&format!("#!{}/bin/python\n", built.display())));

    // The FOD: copy out and scrub.
    let fod = dir.path().join("fod");
    run_ok(Command::new("cp").arg("-a").arg(&built).arg(&fod));
    run_ok(storepatch().arg("scrub").arg("-q").arg(&fod));

    // The main derivation: copy the FOD's output to `$out`, restore, relocate.
    let out = dir.path().join("out");
    let restore = |threads: &str, target: &Path| {
        run_ok(Command::new("cp").arg("-a").arg(&fod).arg(target));
        storepatch()
            .args(["--json", "--threads", threads, "restore", "--store-path"])
            .arg(&python)
            .arg("--relocate")
            .arg(format!("{}={}", built.display(), target.display()))
            .arg(target)
            .output()
            .unwrap()
    };
    // Every byte-compiled file parses and is written back byte for byte.
    let pycs = files_named(&fod, ".pyc");
    assert!(pycs.len() > 500, "{} .pyc files", pycs.len());
    for pyc in &pycs {
        let data = fs_err::read(pyc)?;
        let bytecode = storepatch_rewrite::pyc::Bytecode::parse(&data)
            .map_err(|err| anyhow::anyhow!("{}: {err}", pyc.display()))?;
        assert_eq!(
            format!("3.{}", bytecode.python_version().1),
            host_python()?.version
        );
        assert!(
            bytecode
                .filenames()
                .iter()
                .all(|name| name.starts_with(built.as_os_str().as_encoded_bytes())),
            "{}",
            pyc.display()
        );
        assert!(
            bytecode.write(&BTreeMap::new()) == data,
            "{} is not written back as it was",
            pyc.display()
        );
    }

    let output = restore("1", &out);
    // Everything is relocated, the code objects' file names in the bytecode too: exit 0.
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines = json_lines(&output.stdout);
    assert!(lines.iter().all(|line| line["type"] != "left"), "{lines:?}");
    let relocated_pycs = lines
        .iter()
        .filter(|line| {
            line["type"] == "restore"
                && line["path"]["text"]
                    .as_str()
                    .is_some_and(|path| Path::new(path).extension() == Some(OsStr::new("pyc")))
        })
        .count();
    assert_eq!(relocated_pycs, pycs.len());
    let summary = lines.last().unwrap();
    assert_eq!(summary["unresolved_names"], 0, "{summary}");
    assert_eq!(summary["errors"], 0, "{summary}");

    // Every package imports, sys.prefix is the output, every console script runs.
    let imported = import_everything(&out);
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&imported.stdout).trim(),
        out.display().to_string()
    );
    let markdown = Command::new(out.join("bin/markdown_py"))
        .arg(out.join("pyvenv.cfg"))
        .env_clear()
        .output()?;
    assert!(
        markdown.status.success(),
        "{}",
        String::from_utf8_lossy(&markdown.stderr)
    );
    let pygmentize = Command::new(out.join("bin/pygmentize"))
        .args(["-L", "lexers"])
        .env_clear()
        .output()?;
    assert!(
        pygmentize.status.success(),
        "{}",
        String::from_utf8_lossy(&pygmentize.stderr)
    );
    assert_eq!(
        fs_err::read_to_string(out.join("pyvenv.cfg"))?
            .lines()
            .next(),
        Some(format!("home = {}/bin", python.display()).as_str())
    );
    // The audit finds the venv healthy (and, before the restore, it did not).
    let audit = storepatch().arg("audit").arg(&out).output()?;
    assert_eq!(
        audit.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&audit.stdout)
    );
    let audit = storepatch().args(["--json", "audit"]).arg(&fod).output()?;
    assert_eq!(audit.status.code(), Some(1));
    let kinds: std::collections::BTreeSet<String> = json_lines(&audit.stdout)
        .iter()
        .filter(|line| line["type"] == "problem")
        .map(|line| line["kind"].as_str().unwrap().to_owned())
        .collect();
    // (The shebangs still resolve: the build directory is still there.)
    assert!(
        kinds.contains("missing_venv_home") && kinds.contains("dangling_symlink"),
        "{kinds:?}"
    );
    // Nothing names the build directory any more.
    let grep = Command::new("grep")
        .arg("-rlF")
        .arg(built.as_os_str())
        .arg(&out)
        .output()?;
    assert_eq!(String::from_utf8_lossy(&grep.stdout), "");
    // The real interpreter reads every relocated file and finds the output's paths in every code
    // object; importing uses the bytecode as it is (its header still matches the source).
    assert_code_filenames(&out.join("bin/python"), &out, &out)?;
    let version = &host_python()?.version;
    let markdown_pyc = out.join(format!(
        "lib/python{version}/site-packages/markdown/__pycache__/__init__.cpython-{}.pyc",
        version.replace('.', "")
    ));
    assert_imports_from_bytecode(&out.join("bin/python"), "markdown", &markdown_pyc)?;

    // Every RECORD line's hash and size match the file, by Python's own hashlib and csv: the
    // console scripts' lines were updated for their new shebangs.
    assert_eq!(assert_records_match(&out.join("bin/python"), &out)?, 0);
    assert_eq!(summary["record_lines"], 3, "{summary}");
    // Only those lines changed; every other line (and every other RECORD) is as uv wrote it.
    let mut changed_lines = Vec::new();
    for record in files_named(&fod, "RECORD") {
        let relative = record.strip_prefix(&fod)?;
        let before = fs_err::read_to_string(&record)?;
        let after = fs_err::read_to_string(out.join(relative))?;
        assert_eq!(before.lines().count(), after.lines().count());
        for (old, new) in before.lines().zip(after.lines()) {
            if old != new {
                assert_eq!(old.split(',').next(), new.split(',').next());
                changed_lines.push(new.split(',').next().unwrap_or_default().to_owned());
            }
        }
    }
    changed_lines.sort();
    assert_eq!(
        changed_lines,
        [
            "../../../bin/cffi-gen-src",
            "../../../bin/markdown_py",
            "../../../bin/pygmentize"
        ]
    );

    // The same result for any thread count (into the same place), and a second run changes
    // nothing.
    let first = snapshot_tree(&out);
    fs_err::rename(&out, dir.path().join("out-one-thread"))?;
    let output = restore("4", &out);
    assert_eq!(output.status.code(), Some(0));
    let second = snapshot_tree(&out);
    let differing: Vec<&PathBuf> = first
        .keys()
        .chain(second.keys())
        .filter(|path| first.get(*path) != second.get(*path))
        .collect();
    assert!(
        differing.is_empty(),
        "differ between thread counts: {differing:?}"
    );
    let before = snapshot_tree(&out);
    let again = storepatch()
        .args(["--json", "restore", "--store-path"])
        .arg(&python)
        .arg("--relocate")
        .arg(format!("{}={}", built.display(), out.display()))
        .arg(&out)
        .output()?;
    let again_lines = json_lines(&again.stdout);
    assert!(
        again_lines.iter().all(|line| line["type"] != "restore"),
        "{again_lines:?}"
    );
    assert_eq!(snapshot_tree(&out), before);
    Ok(())
}

/// Runs `nix/hooks/storepatch-restore-hook.sh` the way stdenv's fixupPhase does for one output
/// (`prefix` set, `fixupOutputHooks` run in order), with the real binary substituted for
/// `@storepatch@` and the inputs in the environment as a Nix build has them.
fn run_restore_hook(output: &Path, variables: &[(&str, &str)]) -> std::process::Output {
    let hook = fs_err::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../nix/hooks/storepatch-restore-hook.sh"),
    )
    .unwrap()
    .replace("@storepatch@", env!("CARGO_BIN_EXE_storepatch"));
    let script = output.with_extension("hook.sh");
    fs_err::write(
        &script,
        format!(
            "set -euo pipefail\ndeclare -a fixupOutputHooks=()\n{hook}\n\
             for hook in \"${{fixupOutputHooks[@]}}\"; do \"$hook\"; done\n"
        ),
    )
    .unwrap();
    let mut command = Command::new("bash");
    command
        .arg(&script)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("STOREPATCH_NO_PROGRESS", "1")
        .env("prefix", output)
        .env("out", output)
        .env("buildInputs", format!("{} {}", python(), zlib()));
    for (name, value) in variables {
        command.env(name, value);
    }
    command.output().unwrap()
}

#[test]
fn restore_hook_restores_from_the_inputs_and_relocates_the_venv() {
    let tree = TestTree::new();
    relocatable_tree(&tree, "/build/source/.venv");
    // Not a venv file, but a location only the knob knows about.
    tree.write("share/notes.txt", "built in /build/source\n");
    let before = snapshot_tree(&tree.root);
    let skipped = run_restore_hook(&tree.root, &[("dontStorepatchRestore", "1")]);
    assert!(skipped.status.success());
    assert_eq!(snapshot_tree(&tree.root), before);

    let output = run_restore_hook(&tree.root, &[("storepatchRelocate", "/build/source=/src")]);
    // The bytecode and the ELF file still name the build directory: reported, not fatal.
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot change"), "{stderr}");
    let read = |relative: &str| fs_err::read_to_string(tree.path(relative)).unwrap();
    let root = tree.root.display().to_string();
    assert_eq!(
        read("bin/activate"),
        format!("VIRTUAL_ENV='{root}'\nexport VIRTUAL_ENV\n")
    );
    assert!(read("bin/tool").starts_with(&format!("#!{root}/bin/python\n")));
    assert_eq!(
        read("pyvenv.cfg"),
        format!("home = {}/bin\nprompt = demo\n", python())
    );
    assert_eq!(
        fs_err::read_link(tree.path("bin/python")).unwrap(),
        Path::new(&format!("{}/bin/python3.12", python()))
    );
    assert_eq!(read("share/notes.txt"), "built in /src\n");
}

/// The regular files below `root` whose names end with `suffix`, sorted.
fn files_named(root: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|entry| {
            entry.file_type().is_file() && entry.file_name().to_string_lossy().ends_with(suffix)
        })
        .map(walkdir::DirEntry::into_path)
        .collect();
    found.sort();
    found
}

/// Loads every `.pyc` below a directory that `python` can read (its own cache tag) with the
/// interpreter's own marshal, and prints the file names of code objects (nested ones included)
/// that do not start with the prefix, then the number of files and code objects.
const CODE_FILENAMES: &str = r#"
import marshal, pathlib, sys
root, prefix = pathlib.Path(sys.argv[1]), sys.argv[2]
def walk(code):
    yield code
    for const in code.co_consts:
        if hasattr(const, "co_filename"):
            yield from walk(const)
files = codes = 0
for path in sorted(root.rglob("*." + sys.implementation.cache_tag + "*.pyc")):
    files += 1
    for code in walk(marshal.loads(path.read_bytes()[16:])):
        codes += 1
        if not code.co_filename.startswith(prefix):
            print(path, code.co_filename)
print(files, codes)
"#;

/// [`CODE_FILENAMES`] with `python` over `root`: every code object names a file below `prefix`.
/// Returns the number of files checked.
pub(crate) fn assert_code_filenames(
    python: &Path,
    root: &Path,
    prefix: &Path,
) -> anyhow::Result<usize> {
    let output = run_ok(
        Command::new(python)
            .args(["-c", CODE_FILENAMES])
            .arg(root)
            .arg(format!("{}/", prefix.display()))
            .env_clear()
            .env("PATH", "/usr/bin:/bin"),
    );
    let stdout = String::from_utf8(output.stdout)?;
    let lines: Vec<&str> = stdout.lines().collect();
    let [counts] = lines[..] else {
        anyhow::bail!("code objects naming other files:\n{stdout}");
    };
    let (files, codes) = counts
        .split_once(' ')
        .ok_or_else(|| anyhow::anyhow!("unexpected output {stdout:?}"))?;
    let files: usize = files.parse()?;
    anyhow::ensure!(files > 0 && codes.parse::<usize>()? >= files, "{stdout}");
    Ok(files)
}

/// `python -v -c 'import MODULE'` loads the module from `pyc`, as it is: the bytecode matched
/// its source and was not written again.
pub(crate) fn assert_imports_from_bytecode(
    python: &Path,
    module: &str,
    pyc: &Path,
) -> anyhow::Result<()> {
    assert_imports_from_bytecode_with(&mut Command::new(python), module, pyc)
}

/// [`assert_imports_from_bytecode`] with the interpreter `command` (its working directory set,
/// say).
fn assert_imports_from_bytecode_with(
    command: &mut Command,
    module: &str,
    pyc: &Path,
) -> anyhow::Result<()> {
    let before = fs_err::read(pyc)?;
    let modified = fs_err::metadata(pyc)?.modified()?;
    let output = run_ok(
        command
            .args(["-v", "-c", &format!("import {module}")])
            .env_clear()
            .env("PATH", "/usr/bin:/bin"),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let loaded = format!("code object from '{}'", pyc.display());
    anyhow::ensure!(
        stderr.contains(&loaded),
        "{loaded:?} not in the verbose import log:\n{stderr}"
    );
    anyhow::ensure!(
        fs_err::read(pyc)? == before,
        "{} was rewritten",
        pyc.display()
    );
    anyhow::ensure!(
        fs_err::metadata(pyc)?.modified()? == modified,
        "{} was touched",
        pyc.display()
    );
    Ok(())
}

/// A Python interpreter of one version found on this machine.
struct FoundPython {
    executable: PathBuf,
    /// `sys.implementation.cache_tag`, e.g. `cpython-311`.
    cache_tag: String,
}

/// Every `CPython` from 3.8 to 3.14 found here, one per version: `python3.X` on `PATH` (that
/// runs: a pyenv shim of a version not selected does not), in `/usr/bin`, or under pyenv's
/// versions.
fn pythons() -> Vec<FoundPython> {
    let pyenv_root = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".pyenv")));
    let mut found = Vec::new();
    for minor in 8..=14 {
        let name = format!("python3.{minor}");
        let mut candidates: Vec<PathBuf> =
            vec![PathBuf::from(&name), Path::new("/usr/bin").join(&name)];
        if let Some(root) = &pyenv_root
            && let Ok(versions) = fs_err::read_dir(root.join("versions"))
        {
            let mut versions: Vec<PathBuf> = versions
                .filter_map(Result::ok)
                .filter(|entry| {
                    entry
                        .file_name()
                        .to_string_lossy()
                        .starts_with(&format!("3.{minor}."))
                })
                .map(|entry| entry.path().join("bin").join(&name))
                .collect();
            versions.sort();
            candidates.extend(versions);
        }
        let tag = candidates.into_iter().find_map(|candidate| {
            let output = Command::new(&candidate)
                .args([
                    "-c",
                    "import sys; print(sys.executable); print(sys.implementation.cache_tag)",
                ])
                .output()
                .ok()?;
            let stdout = String::from_utf8(output.stdout).ok()?;
            let (executable, tag) = stdout.trim().split_once('\n')?;
            (output.status.success() && tag == format!("cpython-3{minor}")).then(|| FoundPython {
                executable: PathBuf::from(executable),
                cache_tag: tag.to_owned(),
            })
        });
        found.extend(tag);
    }
    found
}

/// Byte-compiled modules of every Python found (3.8 to 3.13 here; 3.14 when installed),
/// timestamp-based and hash-based, relocated by `restore --relocate` to a longer path: the
/// interpreter reads every file and finds the new path in every code object, a traceback names
/// the new path, and importing uses the bytecode as it is. Before that, every file (and the
/// interpreter's own standard-library bytecode of a few packages) parses and is written back
/// byte for byte.
#[test]
fn relocates_bytecode_file_names_for_every_python_found() -> anyhow::Result<()> {
    let pythons = pythons();
    let versions: Vec<&str> = pythons
        .iter()
        .map(|python| python.cache_tag.as_str())
        .collect();
    // Straight to the process's stderr, so the versions tested show in the log.
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("bytecode of {versions:?}\n").as_bytes(),
    );
    anyhow::ensure!(!pythons.is_empty(), "no Python 3.8 to 3.14 found");
    let dir = tempfile::tempdir()?;
    let built = dir.path().join("build");
    let module = "def fail():\n    raise ValueError(\"boom\")\n\n\nclass Shape:\n    \
                  def area(self, sides=(1, 2.5, 3j, b\"x\", None, ...)):\n        \
                  return [side for side in sides if side] + [lambda: {1: frozenset({2})}]\n\n\n\
                  if __name__ == \"__main__\":\n    fail()\n";
    for package in ["timestamped", "hashed"] {
        fs_err::create_dir_all(built.join(package))?;
        fs_err::write(built.join(package).join("__init__.py"), "")?;
        fs_err::write(built.join(package).join("mod.py"), module)?;
    }
    for python in &pythons {
        run_ok(
            Command::new(&python.executable)
                .args(["-m", "compileall", "-q"])
                .arg(built.join("timestamped")),
        );
        run_ok(
            Command::new(&python.executable)
                .args([
                    "-m",
                    "compileall",
                    "-q",
                    "--invalidation-mode",
                    "checked-hash",
                ])
                .arg(built.join("hashed")),
        );
        let stdlib = String::from_utf8(
            run_ok(Command::new(&python.executable).args([
                "-c",
                "import asyncio, email, json, os; \
                 print('\\n'.join(os.path.dirname(m.__file__) for m in (asyncio, email, json)))",
            ]))
            .stdout,
        )?;
        for package in stdlib.lines() {
            for pyc in files_named(&Path::new(package).join("__pycache__"), ".pyc") {
                let data = fs_err::read(&pyc)?;
                let bytecode = storepatch_rewrite::pyc::Bytecode::parse(&data)
                    .map_err(|err| anyhow::anyhow!("{}: {err}", pyc.display()))?;
                anyhow::ensure!(
                    bytecode.write(&BTreeMap::new()) == data,
                    "{}",
                    pyc.display()
                );
            }
        }
    }
    let pycs = files_named(&built, ".pyc");
    assert_eq!(pycs.len(), pythons.len() * 4);
    for pyc in &pycs {
        let data = fs_err::read(pyc)?;
        let bytecode = storepatch_rewrite::pyc::Bytecode::parse(&data)
            .map_err(|err| anyhow::anyhow!("{}: {err}", pyc.display()))?;
        assert_eq!(bytecode.write(&BTreeMap::new()), data, "{}", pyc.display());
    }

    let out = dir.path().join("relocated-to-a-place-with-a-longer-name");
    run_ok(Command::new("cp").arg("-a").arg(&built).arg(&out));
    let output = storepatch()
        .args(["--json", "restore", "--relocate"])
        .arg(format!("{}={}", built.display(), out.display()))
        .arg(&out)
        .output()?;
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let restored = json_lines(&output.stdout)
        .into_iter()
        .filter(|line| line["type"] == "restore")
        .count();
    assert_eq!(restored, pycs.len());

    for python in &pythons {
        assert_eq!(assert_code_filenames(&python.executable, &out, &out)?, 4);
        // Run as a script, the bytecode's own file name is the one a traceback shows (an
        // import would put the source's path in instead).
        let script = out.join(format!(
            "timestamped/__pycache__/mod.{}.pyc",
            python.cache_tag
        ));
        let traceback = Command::new(&python.executable).arg(&script).output()?;
        let stderr = String::from_utf8_lossy(&traceback.stderr);
        assert!(
            stderr.contains(&format!(
                "File \"{}/timestamped/mod.py\", line 2, in fail",
                out.display()
            )),
            "{}: {stderr}",
            python.cache_tag
        );
        for package in ["timestamped", "hashed"] {
            let pyc = out.join(format!(
                "{package}/__pycache__/mod.{}.pyc",
                python.cache_tag
            ));
            let mut command = Command::new(&python.executable);
            command.current_dir(&out);
            assert_imports_from_bytecode_with(&mut command, &format!("{package}.mod"), &pyc)?;
        }
    }
    Ok(())
}

/// Checks every hashed line of every `RECORD` below `root` against its file with Python's
/// `csv` and `hashlib` (URL-safe base64 without padding, as the wheel spec says) and prints the
/// mismatches, then the number of lines checked.
const RECORDS_MATCH: &str = r#"
import base64, csv, hashlib, pathlib, sys
checked = 0
for record in sorted(pathlib.Path(sys.argv[1]).rglob("*.dist-info/RECORD")):
    with open(record, newline="") as lines:
        for row in csv.reader(lines):
            if len(row) != 3 or not row[1]:
                continue
            algorithm, _, digest = row[1].partition("=")
            data = (record.parent.parent / row[0]).read_bytes()
            if sys.argv[2:] == ["--except-elf"] and data.startswith(b"\x7fELF"):
                continue
            actual = base64.urlsafe_b64encode(hashlib.new(algorithm, data).digest()).rstrip(b"=")
            checked += 1
            if actual.decode() != digest or int(row[2]) != len(data):
                print(record, row[0])
print(checked)
"#;

/// [`RECORDS_MATCH`] over `root`: an error naming the lines that do not match their files;
/// otherwise the number of mismatches (0).
pub(crate) fn assert_records_match(python: &Path, root: &Path) -> anyhow::Result<usize> {
    assert_records_match_at_least(python, root, 100)
}

/// [`assert_records_match`] for every file but ELF files, which strip, patchELF and relink
/// change after the restore in a Nix build (as they do with nixpkgs' autoPatchelfHook).
pub(crate) fn assert_records_match_except_elf(python: &Path, root: &Path) -> anyhow::Result<usize> {
    records_match(python, root, 100, &["--except-elf"])
}

/// [`assert_records_match`], with at least `minimum` lines checked.
fn assert_records_match_at_least(
    python: &Path,
    root: &Path,
    minimum: usize,
) -> anyhow::Result<usize> {
    records_match(python, root, minimum, &[])
}

fn records_match(
    python: &Path,
    root: &Path,
    minimum: usize,
    flags: &[&str],
) -> anyhow::Result<usize> {
    let output = run_ok(
        Command::new(python)
            .args(["-c", RECORDS_MATCH])
            .arg(root)
            .args(flags)
            .env_clear()
            .env("PATH", "/usr/bin:/bin"),
    );
    let stdout = String::from_utf8(output.stdout)?;
    let lines: Vec<&str> = stdout.lines().collect();
    let [checked] = lines[..] else {
        anyhow::bail!("RECORD lines that do not match their files:\n{stdout}");
    };
    anyhow::ensure!(checked.parse::<usize>()? >= minimum, "{stdout}");
    Ok(0)
}

/// `RECORD` lines of files the relocation changes get the new hash and size (`--dry-run` says
/// so and writes nothing); lines of other files, lines without a hash and the line endings stay
/// byte for byte; a second run changes nothing.
#[test]
fn record_lines_follow_relocated_files() -> anyhow::Result<()> {
    let tree = TestTree::new();
    let old = "/build/source/.venv";
    let new = tree.root.display().to_string();
    let script =
        format!("#!{old}/bin/python\nimport sys\nfrom demo import main\nsys.exit(main())\n");
    tree.write("bin/tool", &script);
    tree.write(
        "lib/python3.12/site-packages/demo/__init__.py",
        "def main():\n    return 0\n",
    );
    tree.write(
        "lib/python3.12/site-packages/demo.pth",
        format!("{old}/src\n"),
    );
    let hash = |python: &str, data: &str| -> anyhow::Result<String> {
        let output = run_ok(Command::new(python).args([
            "-c",
            "import base64, hashlib, sys; data = sys.argv[1].encode(); \
             print(base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode())",
            data,
        ]));
        Ok(String::from_utf8(output.stdout)?.trim().to_owned())
    };
    let python3 = "/usr/bin/python3";
    let record = format!(
        "../../../bin/tool,sha256={},{}\r\ndemo/__init__.py,sha256={},25\r\n\
         demo/__pycache__/__init__.cpython-312.pyc,,\r\ndemo.pth,sha256={},{}\r\n\
         demo-1.0.dist-info/RECORD,,\r\n",
        hash(python3, &script)?,
        script.len(),
        hash(python3, "def main():\n    return 0\n")?,
        hash(python3, &format!("{old}/src\n"))?,
        old.len() + 5,
    );
    tree.write(
        "lib/python3.12/site-packages/demo-1.0.dist-info/RECORD",
        &record,
    );
    let restore = |dry_run: bool| {
        let mut command = storepatch();
        command.arg("restore");
        if dry_run {
            command.arg("--dry-run");
        }
        command
            .arg("--relocate")
            .arg(format!("{old}={new}"))
            .arg(&tree.root);
        command
    };
    cmd_snapshot!(tree.filters(), restore(true), @"
    success: true
    exit_code: 0
    ----- stdout -----
    would restore [TMP]/tree/bin/tool: relocated 1 occurrence of /build/source/.venv (content)
    would restore [TMP]/tree/lib/python3.12/site-packages/demo-1.0.dist-info/RECORD: updated 2 RECORD lines (hash and size) (content)
    would restore [TMP]/tree/lib/python3.12/site-packages/demo.pth: relocated 1 occurrence of /build/source/.venv (content)

    ----- stderr -----
    would restore 0 references and relocated 2: 3 files, 0 symlinks, 0 names (11 entries scanned, 0 store paths supplied, 0 places with 0 names left scrubbed, 0 binary files left, 0 errors)
    ");
    assert_eq!(
        fs_err::read_to_string(
            tree.path("lib/python3.12/site-packages/demo-1.0.dist-info/RECORD")
        )?,
        record
    );
    cmd_snapshot!(tree.filters(), restore(false), @"
    success: true
    exit_code: 0
    ----- stdout -----
    restored [TMP]/tree/bin/tool: relocated 1 occurrence of /build/source/.venv (content)
    restored [TMP]/tree/lib/python3.12/site-packages/demo-1.0.dist-info/RECORD: updated 2 RECORD lines (hash and size) (content)
    restored [TMP]/tree/lib/python3.12/site-packages/demo.pth: relocated 1 occurrence of /build/source/.venv (content)

    ----- stderr -----
    restored 0 references and relocated 2: 3 files, 0 symlinks, 0 names (11 entries scanned, 0 store paths supplied, 0 places with 0 names left scrubbed, 0 binary files left, 0 errors)
    ");
    assert_eq!(
        assert_records_match_at_least(Path::new(python3), &tree.root, 3)?,
        0
    );
    let after = fs_err::read_to_string(
        tree.path("lib/python3.12/site-packages/demo-1.0.dist-info/RECORD"),
    )?;
    let changed: Vec<(&str, &str)> = record
        .split_inclusive('\n')
        .zip(after.split_inclusive('\n'))
        .filter(|(before, after)| before != after)
        .collect();
    assert_eq!(changed.len(), 2, "{after}");
    assert!(changed.iter().all(|(_, line)| line.ends_with("\r\n")));
    let before = snapshot_tree(&tree.root);
    cmd_snapshot!(tree.filters(), restore(false), @"
    success: true
    exit_code: 0
    ----- stdout -----

    ----- stderr -----
    restored 0 references and relocated 0: 0 files, 0 symlinks, 0 names (11 entries scanned, 0 store paths supplied, 0 places with 0 names left scrubbed, 0 binary files left, 0 errors)
    ");
    assert_eq!(snapshot_tree(&tree.root), before);
    Ok(())
}

/// When a file a `RECORD` lists cannot be written (the disk is full), its line keeps the old
/// hash, the `RECORD` is reported as failed for that reason, and the other lines are updated.
#[test]
fn record_line_of_a_file_that_could_not_be_written_keeps_its_hash() -> anyhow::Result<()> {
    let Some(filesystem) = crate::faults::SmallFilesystem::new("1m") else {
        return Ok(());
    };
    let root = filesystem.mount_point.join("venv");
    let old = "/build/source/.venv";
    let new = root.display().to_string();
    let big = format!("#!{old}/bin/python\n{}\n", "#".repeat(400 * 1024));
    let small = format!("#!{old}/bin/python\nprint()\n");
    let site = root.join("lib/python3.12/site-packages");
    fs_err::create_dir_all(root.join("bin"))?;
    fs_err::create_dir_all(site.join("demo-1.0.dist-info"))?;
    fs_err::write(root.join("bin/big"), &big)?;
    fs_err::write(root.join("bin/small"), &small)?;
    let hash = |data: &str| -> anyhow::Result<String> {
        let output = run_ok(Command::new("/usr/bin/python3").args([
            "-c",
            "import base64, hashlib, sys; data = open(sys.argv[1], 'rb').read(); \
             print(base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode())",
            data,
        ]));
        Ok(String::from_utf8(output.stdout)?.trim().to_owned())
    };
    let record = format!(
        "../../../bin/big,sha256={},{}\n../../../bin/small,sha256={},{}\n",
        hash(&root.join("bin/big").display().to_string())?,
        big.len(),
        hash(&root.join("bin/small").display().to_string())?,
        small.len()
    );
    let record_path = site.join("demo-1.0.dist-info/RECORD");
    fs_err::write(&record_path, &record)?;
    // Fill the filesystem, then free less than the big script needs for its temporary file.
    let filler = filesystem.mount_point.join("filler");
    let mut file = fs_err::File::create(&filler)?;
    let block = vec![1u8; 4096];
    while std::io::Write::write_all(&mut file, &block).is_ok() {}
    let full = file.metadata()?.len();
    file.set_len(full.saturating_sub(64 * 1024))?;
    drop(file);

    let output = storepatch()
        .arg("restore")
        .arg("--relocate")
        .arg(format!("{old}={new}"))
        .arg(&root)
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(
        stderr.contains("1 RECORD line keeps its old hash: the file it lists could not be written"),
        "{stderr}"
    );
    assert_eq!(fs_err::read_to_string(root.join("bin/big"))?, big);
    let relocated = fs_err::read_to_string(root.join("bin/small"))?;
    assert!(relocated.starts_with(&format!("#!{new}/bin/python\n")));
    let after = fs_err::read_to_string(&record_path)?;
    let lines: Vec<&str> = after.lines().collect();
    assert_eq!(lines[0], record.lines().next().unwrap_or_default());
    assert_eq!(
        lines[1],
        format!(
            "../../../bin/small,sha256={},{}",
            hash(&root.join("bin/small").display().to_string())?,
            relocated.len()
        )
    );
    Ok(())
}
