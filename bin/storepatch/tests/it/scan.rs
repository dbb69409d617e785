//! `storepatch scan`: discovery, output formats, exit codes, errors.
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use base64::Engine as _;

use storepatch_test::cmd_snapshot;

use crate::common::{
    OUT_HASH, PYTHON_HASH, TestTree, ZLIB_HASH, json_lines, storepatch, storepatch_as_nobody,
};

#[test]
fn summary_per_store_path() {
    let tree = TestTree::small_venv();
    cmd_snapshot!(tree.filters(), storepatch().arg("scan").arg(&tree.root), @"
    success: true
    exit_code: 0
    ----- stdout -----
    /nix/store/0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1-python3-3.12.8       5 entries        5 references
    /nix/store/1ix8vrm5f9r5l2v7mwnlbjjzvl0ai3gz-zlib-1.3.1           2 entries        2 references

    ----- stderr -----
    7 live references to 2 store paths in 7 of 17 entries; 0 scrubbed references
    ");
}

#[test]
fn files_lists_every_reference() {
    let tree = TestTree::small_venv();
    cmd_snapshot!(tree.filters(), storepatch().args(["scan", "--files"]).arg(&tree.root), @"
    success: true
    exit_code: 0
    ----- stdout -----
    [TMP]/tree/bin/python:0: symlink /nix/store/0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1-python3-3.12.8
    [TMP]/tree/bin/tool:2: content /nix/store/0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1-python3-3.12.8
    [TMP]/tree/lib/python3.12/site-packages/ext/_speedups.so:8: content /nix/store/1ix8vrm5f9r5l2v7mwnlbjjzvl0ai3gz-zlib-1.3.1
    [TMP]/tree/lib/python3.12/site-packages/ext-1.0.dist-info/direct_url.json:16: content /nix/store/0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1-python3-3.12.8-source
    [TMP]/tree/pyvenv.cfg:7: content /nix/store/0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1-python3-3.12.8
    [TMP]/tree/share/0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1-patch.txt:0: name /nix/store/0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1-python3-3.12.8 (bare hash)
    [TMP]/tree/share/notes.txt:14: content /nix/store/1ix8vrm5f9r5l2v7mwnlbjjzvl0ai3gz-zlib-1.3.1 (bare hash)

    ----- stderr -----
    7 live references to 2 store paths in 7 of 17 entries; 0 scrubbed references
    ");
}

#[test]
fn json_lines_report() {
    let tree = TestTree::new();
    tree.write(
        "pyvenv.cfg",
        format!("home = /nix/store/{PYTHON_HASH}-python3-3.12.8/bin\n"),
    );
    tree.symlink(
        "python",
        format!("/nix/store/{PYTHON_HASH}-python3-3.12.8/bin/python3"),
    );
    cmd_snapshot!(tree.filters(), storepatch().args(["scan", "--json"]).arg(&tree.root), @r#"
    success: true
    exit_code: 0
    ----- stdout -----
    {"context":{"text":"/nix/store/0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1-python3-3.12.8/bin/python3"},"form":"path","hash":"0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1","kind":"symlink","offset":0,"path":{"text":"[TMP]/tree/python"},"scrubbed":false,"store_path":{"text":"/nix/store/0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1-python3-3.12.8"},"type":"reference"}
    {"context":{"text":"home = /nix/store/0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1-python3-3.12.8/bin\n"},"form":"path","hash":"0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1","kind":"content","offset":7,"path":{"text":"[TMP]/tree/pyvenv.cfg"},"scrubbed":false,"store_path":{"text":"/nix/store/0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1-python3-3.12.8"},"type":"reference"}
    {"entries":3,"entries_with_references":2,"errors":0,"references":2,"scrubbed_references":0,"store_paths":1,"type":"summary"}

    ----- stderr -----
    "#);
}

#[test]
fn no_references_exits_one() {
    let tree = TestTree::new();
    tree.write("a.txt", "nothing to see\n");
    tree.write("b.txt", format!("/nix/store/{}-scrubbed\n", "e".repeat(32)));
    cmd_snapshot!(tree.filters(), storepatch().arg("scan").arg(&tree.root), @"
    success: false
    exit_code: 1
    ----- stdout -----
    /nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-scrubbed       1 entries        1 references  (scrubbed)

    ----- stderr -----
    0 live references to 0 store paths in 0 of 3 entries; 1 scrubbed references
    ");
}

#[test]
fn candidates_file_finds_bare_hashes() {
    let tree = TestTree::new();
    tree.write("bare.txt", format!("{OUT_HASH} only as a bare hash\n"));
    let candidates = tree.dir.path().join("candidates");
    fs_err::write(
        &candidates,
        format!("# inputs\n/nix/store/{OUT_HASH}-authentik-2025.6\n\n/nix/store/{ZLIB_HASH}-zlib-1.3.1/lib\n"),
    )
    .unwrap();
    // Without candidates, a bare hash means nothing.
    let without = storepatch().arg("scan").arg(&tree.root).output().unwrap();
    assert_eq!(without.status.code(), Some(1));
    cmd_snapshot!(tree.filters(), storepatch().args(["scan", "--files", "--candidates"]).arg(&candidates).arg(&tree.root), @"
    success: true
    exit_code: 0
    ----- stdout -----
    [TMP]/tree/bare.txt:0: content /nix/store/9zkcv1ijs7wy2n2w9vvfhbpp5gyzrfwa-authentik-2025.6 (bare hash)

    ----- stderr -----
    1 live references to 1 store paths in 1 of 2 entries; 0 scrubbed references
    ");
}

#[test]
fn bad_candidates_file_names_the_line() {
    let tree = TestTree::new();
    let candidates = tree.dir.path().join("candidates");
    fs_err::write(&candidates, format!("/nix/store/{OUT_HASH}-ok\n/usr/lib\n")).unwrap();
    cmd_snapshot!(tree.filters(), storepatch().args(["scan", "--candidates"]).arg(&candidates).arg(&tree.root), @"
    success: false
    exit_code: 2
    ----- stdout -----

    ----- stderr -----
    error: [TMP]/candidates:2: not a store path: `/usr/lib` is not inside the store directory `/nix/store`
    ");
}

#[test]
fn candidates_from_env() {
    let tree = TestTree::new();
    tree.write("bare.txt", format!("{OUT_HASH}\n"));
    let output = storepatch()
        .args(["scan", "--json", "--candidates-from-env"])
        .arg(&tree.root)
        .env("out", format!("/nix/store/{OUT_HASH}-authentik-2025.6"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let lines = json_lines(&output.stdout);
    assert_eq!(lines[0]["form"], "bare");
    assert_eq!(
        lines[0]["store_path"]["text"],
        format!("/nix/store/{OUT_HASH}-authentik-2025.6")
    );
}

#[test]
fn store_dir_from_flag_and_environment() {
    let tree = TestTree::new();
    tree.write(
        "a.txt",
        format!("/gnu/store/{ZLIB_HASH}-zlib /nix/store/{PYTHON_HASH}-python\n"),
    );
    let count = |command: &mut std::process::Command| {
        let output = command.arg(&tree.root).output().unwrap();
        json_lines(&output.stdout)
            .iter()
            .filter(|line| line["type"] == "reference")
            .map(|line| line["store_path"]["text"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        count(storepatch().args(["scan", "--json", "--store-dir", "/gnu/store/"])),
        vec![format!("/gnu/store/{ZLIB_HASH}-zlib")]
    );
    assert_eq!(
        count(
            storepatch()
                .args(["scan", "--json"])
                .env("NIX_STORE", "/gnu/store")
        ),
        vec![format!("/gnu/store/{ZLIB_HASH}-zlib")]
    );
    assert_eq!(
        count(storepatch().args(["scan", "--json"])),
        vec![format!("/nix/store/{PYTHON_HASH}-python")]
    );
}

#[test]
fn relative_store_dir_is_a_usage_error() {
    let tree = TestTree::new();
    cmd_snapshot!(tree.filters(), storepatch().args(["scan", "--store-dir", "nix/store"]).arg(&tree.root), @"
    success: false
    exit_code: 2
    ----- stdout -----

    ----- stderr -----
    error: store directory `nix/store` is not an absolute path
    ");
}

#[test]
fn missing_root_is_an_error() {
    let tree = TestTree::new();
    cmd_snapshot!(tree.filters(), storepatch().arg("scan").arg(tree.path("missing")), @"
    success: false
    exit_code: 2
    ----- stdout -----

    ----- stderr -----
    error: cannot read `[TMP]/tree/missing`: No such file or directory (os error 2)
    ");
}

#[test]
fn unreadable_file_is_reported_and_the_run_goes_on() {
    let tree = TestTree::small_venv();
    tree.write("secret.txt", format!("/nix/store/{OUT_HASH}-secret\n"));
    tree.chmod("secret.txt", 0o000);
    let Some(mut command) = storepatch_as_nobody() else {
        return;
    };
    cmd_snapshot!(tree.filters(), command.arg("scan").arg(&tree.root), @"
    success: false
    exit_code: 2
    ----- stdout -----
    /nix/store/0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1-python3-3.12.8       5 entries        5 references
    /nix/store/1ix8vrm5f9r5l2v7mwnlbjjzvl0ai3gz-zlib-1.3.1           2 entries        2 references

    ----- stderr -----
    error: cannot read `[TMP]/tree/secret.txt`: Permission denied (os error 13)
    7 live references to 2 store paths in 7 of 18 entries; 0 scrubbed references
    ");
}

#[test]
fn names_that_are_not_utf8_are_kept_as_bytes() {
    let tree = TestTree::new();
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9");
    fs_err::write(
        tree.root.join(name),
        format!("/nix/store/{ZLIB_HASH}-zlib\n"),
    )
    .unwrap();
    let output = storepatch()
        .args(["scan", "--json"])
        .arg(&tree.root)
        .output()
        .unwrap();
    let lines = json_lines(&output.stdout);
    let encoded = lines[0]["path"]["bytes"]
        .as_str()
        .expect("path as base64 bytes");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    assert!(decoded.ends_with(b"/tree/caf\xe9"), "{decoded:?}");
}

/// Text over several of the pieces a file is read in without mmap (256 KiB): references in
/// path form and bare hashes of a path found elsewhere (`big.bin`), some across each piece edge,
/// one at the very end, and a 300 KB run of `0` with nowhere to cut.
pub(crate) fn big_text() -> Vec<u8> {
    let mut text = Vec::new();
    let mut line = 0;
    while text.len() < 1_100_000 {
        let edge = (text.len() / (256 << 10) + 1) * (256 << 10);
        if edge - text.len() < 100 {
            // Across the edge: a path, then a bare hash, each starting a few bytes before it.
            text.resize(edge - 20, b' ');
            text.extend_from_slice(format!("/nix/store/{ZLIB_HASH}-zlib-1.3.1/lib ").as_bytes());
            text.resize(edge + (256 << 10) - 10, b'\n');
            text.extend_from_slice(ZLIB_HASH.as_bytes());
        }
        if line == 2000 {
            text.extend(std::iter::repeat_n(b'0', 300_000));
        }
        text.extend_from_slice(
            format!("{line:08} rpath /nix/store/{ZLIB_HASH}-zlib-1.3.1/lib and {ZLIB_HASH}\n")
                .as_bytes(),
        );
        line += 1;
    }
    text.extend_from_slice(ZLIB_HASH.as_bytes());
    text
}

/// The same tree through every code path gives the same report: 1 or 4 threads, mmap or read.
#[test]
fn output_does_not_depend_on_threads_or_reading() {
    let tree = TestTree::small_venv();
    // Big enough to be mapped.
    let mut big = vec![b'.'; 3 << 20];
    let path = format!("/nix/store/{ZLIB_HASH}-zlib-1.3.1");
    for position in [0, 1 << 20, (3 << 20) - path.len()] {
        big[position..position + path.len()].copy_from_slice(path.as_bytes());
    }
    tree.write("lib/big.bin", &big);
    tree.write("lib/big.txt", big_text());
    // Nowhere to cut for 5 MiB (digits and `/` only around the paths): mapped whole by a scan
    // that reads in pieces, read whole in pieces with `--no-mmap`.
    let mut uncut = vec![b'0'; 5 << 20];
    let path = format!("/nix/store/{ZLIB_HASH}-zlib/");
    for position in [0, 3 << 20, (5 << 20) - path.len()] {
        uncut[position..position + path.len()].copy_from_slice(path.as_bytes());
    }
    tree.write("lib/uncut.txt", &uncut);
    let run = |args: &[&str]| {
        storepatch()
            .arg("scan")
            .args(args)
            .arg(&tree.root)
            .output()
            .unwrap()
            .stdout
    };
    let reference = run(&["--json", "--threads", "1"]);
    assert!(json_lines(&reference).len() > 10);
    let uncut_offsets: Vec<u64> = json_lines(&reference)
        .iter()
        .filter(|line| {
            line["type"] == "reference"
                && line["path"]["text"]
                    .as_str()
                    .is_some_and(|path| path.ends_with("lib/uncut.txt"))
        })
        .filter_map(|line| line["offset"].as_u64())
        .collect();
    assert_eq!(
        uncut_offsets,
        [0, 3 << 20, (5 << 20) - path.len() as u64],
        "{}",
        String::from_utf8_lossy(&reference)
    );
    for args in [
        &["--json", "--threads", "4"][..],
        &["--json", "--no-mmap"],
        &["--json", "--threads", "3", "--no-mmap"],
    ] {
        assert_eq!(run(args), reference, "{args:?}");
    }
}

#[test]
fn a_pipe_on_stdout_is_made_to_hold_more_never_less_and_gets_the_whole_report() {
    let tree = TestTree::new();
    // 20 000 references: a report of several megabytes, many pipe-fulls of a pipe's default
    // 64 KiB and more than the 1 MiB the pipe is grown to.
    let path = format!("/nix/store/{ZLIB_HASH}-zlib-1.3.1/lib\n");
    tree.write("lib/many.txt", path.repeat(20_000));
    let report = tree.dir.path().join("report.json");
    let status = storepatch()
        .args(["scan", "--json"])
        .arg(&tree.root)
        .stdout(fs_err::File::create(&report).unwrap().into_file())
        .status()
        .unwrap();
    assert!(status.success());
    let expected = fs_err::read(&report).unwrap();
    assert_eq!(json_lines(&expected).len(), 20_001);
    // Run with stdout a pipe of `size` bytes (unless the system refuses it); returns the report
    // and what the pipe holds once the run is over.
    let through_pipe = |size: Option<usize>| {
        let (reader, writer) = rustix::pipe::pipe().unwrap();
        let asked = size.and_then(|size| rustix::pipe::fcntl_setpipe_size(&writer, size).ok());
        let mut child = storepatch()
            .args(["scan", "--json"])
            .arg(&tree.root)
            .stdout(writer)
            .spawn()
            .unwrap();
        let mut reader = std::fs::File::from(reader);
        let mut report = Vec::new();
        std::io::Read::read_to_end(&mut reader, &mut report).unwrap();
        assert!(child.wait().unwrap().success());
        let held = rustix::pipe::fcntl_getpipe_size(&reader).unwrap();
        (report, asked, held)
    };
    let (report, _, held) = through_pipe(None);
    assert_eq!(report, expected);
    assert_eq!(held, 1 << 20);
    // A pipe that holds more already is left as it is (growing one beyond 1 MiB takes
    // `CAP_SYS_RESOURCE`, as root has).
    let (report, asked, held) = through_pipe(Some(4 << 20));
    assert_eq!(report, expected);
    match asked {
        Some(asked) => assert_eq!(held, asked),
        None => assert_eq!(held, 1 << 20),
    }
}

#[test]
fn quiet_answers_by_exit_status_alone() {
    // Exit status, and how much went to stdout and stderr.
    let quiet = |flag: &str, root: &Path| {
        let output = storepatch()
            .args(["scan", flag])
            .arg(root)
            .output()
            .unwrap();
        (
            output.status.code(),
            output.stdout.len(),
            output.stderr.len(),
        )
    };
    let tree = TestTree::small_venv();
    assert_eq!(quiet("--quiet", &tree.root), (Some(0), 0, 0));
    let clean = TestTree::new();
    clean.write("a.txt", "nothing\n");
    assert_eq!(quiet("-q", &clean.root), (Some(1), 0, 0));
}

#[test]
fn progress_lines_in_a_build_log_unless_quiet() {
    let tree = TestTree::new();
    for index in 0..600 {
        tree.write(&format!("file{index}"), "no references here\n");
    }
    let scan = |quiet: bool| {
        let mut command = storepatch();
        command
            .env_remove("STOREPATCH_NO_PROGRESS")
            .env("STOREPATCH_PROGRESS_INTERVAL_MS", "0")
            .args(["scan", "--threads", "1"]);
        if quiet {
            command.arg("--quiet");
        }
        command.arg(&tree.root).output().unwrap()
    };
    // stderr is a pipe here, as in a Nix build log. With a zero interval the first line is due
    // at once, after the first entry; later ones as the clock says (at most one a millisecond).
    let output = scan(false);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let progress = storepatch_test::snapshot::Filters::new()
        .regex(
            r"scanning: [0-9,]+ entries so far \([0-9,]+/s\)",
            "scanning: N entries so far (RATE/s)",
        )
        .apply(&lines[1..lines.len() - 1].join("\n"));
    assert!(
        progress
            .lines()
            .all(|line| line == "scanning: N entries so far (RATE/s)"),
        "{stderr}"
    );
    let first = storepatch_test::snapshot::Filters::new()
        .regex(r"\([0-9,]+/s\)", "(RATE/s)")
        .apply(lines[0]);
    insta::assert_snapshot!(first, @"scanning: 1 entries so far (RATE/s)");
    assert!(
        lines
            .iter()
            .all(|line| !line.contains("entries so far") || !line.contains('.')),
        "rates are whole numbers: {stderr}"
    );
    let quiet = scan(true);
    assert!(
        quiet.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&quiet.stderr)
    );
}

#[test]
fn each_subcommand_help_lists_its_own_exit_status() {
    let help = |command: &str| {
        let output = storepatch().args([command, "--help"]).output().unwrap();
        assert!(output.status.success());
        let text = String::from_utf8(output.stdout).unwrap();
        text[text.find("Exit status").unwrap()..].to_owned()
    };
    insta::assert_snapshot!(help("scrub"), @"
    Exit status:
      0  success (also when there was nothing to scrub)
      2  an error occurred (usage, or an entry that could not be read or written; the others are
         still scrubbed)
    ");
    insta::assert_snapshot!(help("relink"), @"
    Exit status:
      0  success
      1  missing dependencies (each is listed; see --ignore-missing)
      2  an error occurred (usage, or a file that could not be read or written)

    auto-patchelf.py's command line (autoPatchelfFlags) is accepted too: --paths, --libs,
    --runtime-dependencies, --append-rpaths and (with --paths) --ignore-missing take every following
    value up to the next option; --extra-args takes the rest of the line as patchelf flags.
    ");
    insta::assert_snapshot!(help("audit"), @"
    Exit status:
      0  healthy
      1  problems found (each is listed)
      2  an error occurred (usage, or a file that could not be read)
    ");
    insta::assert_snapshot!(help("scan"), @"
    Exit status (with -q the answer is the exit status alone):
      0  store references were found
      1  no store references were found
      2  an error occurred (usage, or a file that could not be read)
    ");
}

#[test]
fn every_command_names_the_path_and_the_cause_in_one_form() {
    let tree = TestTree::new();
    let missing = tree.path("missing");
    let not_elf = tree.write("not-elf", "text\n");
    let mut messages = Vec::new();
    for args in [
        vec!["scan".as_ref(), missing.as_os_str()],
        vec!["scrub".as_ref(), missing.as_os_str()],
        vec!["relink".as_ref(), missing.as_os_str()],
        vec!["audit".as_ref(), missing.as_os_str()],
        vec![
            "scan".as_ref(),
            "--candidates".as_ref(),
            missing.as_os_str(),
            tree.root.as_os_str(),
        ],
        vec![
            "elf".as_ref(),
            "--print-rpath".as_ref(),
            missing.as_os_str(),
        ],
        vec![
            "elf".as_ref(),
            "--print-rpath".as_ref(),
            not_elf.as_os_str(),
        ],
        vec![
            "relink".as_ref(),
            "--interpreter".as_ref(),
            not_elf.as_os_str(),
            tree.root.as_os_str(),
        ],
    ] {
        let output = storepatch().args(&args).output().unwrap();
        assert!(!output.status.success());
        messages.push(
            tree.filters()
                .apply(&String::from_utf8_lossy(&output.stderr)),
        );
    }
    insta::assert_snapshot!(messages.concat(), @"
    error: cannot read `[TMP]/tree/missing`: No such file or directory (os error 2)
    error: cannot read `[TMP]/tree/missing`: No such file or directory (os error 2)
    error: cannot read `[TMP]/tree/missing`: No such file or directory (os error 2)
    error: cannot read `[TMP]/tree/missing`: No such file or directory (os error 2)
    error: cannot read `[TMP]/tree/missing`: No such file or directory (os error 2)
    error: cannot read `[TMP]/tree/missing`: No such file or directory (os error 2)
    error: cannot read `[TMP]/tree/not-elf`: not an ELF file: missing ELF magic
    error: cannot use `[TMP]/tree/not-elf` as the interpreter: not an ELF file: missing ELF magic
    ");
}
