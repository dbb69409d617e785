//! Progress: a bar on a terminal (a pseudo-terminal from `script`), short lines in a build log
//! (stderr a pipe), whole-number rates, nothing with `--quiet`. Only `scan`'s lines are in
//! `scan.rs`; `scrub`, `restore` and `audit` share its discovery and so its progress.
use std::path::Path;
use std::process::Command;

use crate::common::{TestTree, storepatch};

/// A tree of `count` small files without references.
fn many_small_files(count: usize) -> TestTree {
    let tree = TestTree::new();
    for dir in 0..10 {
        fs_err::create_dir(tree.path(&format!("d{dir}"))).unwrap();
    }
    for index in 0..count {
        fs_err::write(
            tree.path(&format!("d{}/file{index}", index % 10)),
            "no references here\n",
        )
        .unwrap();
    }
    tree
}

/// `storepatch ARGS` with progress allowed and a build log's interval shortened to `interval_ms`.
fn with_progress(args: &[&str], root: &Path, interval_ms: &str) -> std::process::Output {
    storepatch()
        .env_remove("STOREPATCH_NO_PROGRESS")
        .env("STOREPATCH_PROGRESS_INTERVAL_MS", interval_ms)
        .args(args)
        .arg(root)
        .output()
        .unwrap()
}

#[test]
fn relink_prints_lines_in_a_build_log_unless_quiet() {
    // relink counts the files it looks at after the walk: ELF files (and others it may report),
    // not the text files that are the bulk of a tree.
    let tree = many_small_files(600);
    for index in 0..3 {
        fs_err::copy("/bin/true", tree.path(&format!("d{index}/tool"))).unwrap();
    }
    // A zero interval: the first line is due at once, after the first file, however fast the
    // machine; later ones (at most one a millisecond) depend on its speed.
    let output = with_progress(&["relink", "--threads", "1"], &tree.root, "0");
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let progress = storepatch_test::snapshot::Filters::new()
        .regex(r"(?m)^relinking: [0-9,]+ files so far \([0-9,]+/s\)\n", "")
        .apply(&stderr);
    assert!(
        stderr.starts_with("relinking: 1 files so far ("),
        "{stderr}"
    );
    insta::assert_snapshot!(progress, @"patched 0 files (0 restored in place), 3 unchanged, 0 skipped, 0 missing dependencies (0 ignored), 0 errors");
    for flag in ["--quiet", "--no-progress", "--json"] {
        let output = with_progress(&["relink", "--threads", "1", flag], &tree.root, "0");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("so far"), "{flag}: {stderr}");
    }
}

/// With the interval of a build log (here 100 ms, not 5 s, to keep the suite fast), a tree large
/// enough to take longer prints a line per interval (the clock is read after every entry, so
/// none is late), and the counts grow.
#[test]
fn lines_come_at_the_interval_not_at_every_step() {
    let tree = many_small_files(10_000);
    let interval = std::time::Duration::from_millis(100);
    let start = std::time::Instant::now();
    let output = with_progress(&["scan", "--threads", "1"], &tree.root, "100");
    let elapsed = start.elapsed();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let counts: Vec<u64> = stderr
        .lines()
        .filter_map(|line| line.strip_prefix("scanning: "))
        .map(|rest| {
            let (count, rate) = rest.split_once(" entries so far (").expect(rest);
            assert!(
                rate.strip_suffix("/s)").is_some_and(|rate| rate
                    .bytes()
                    .all(|byte| byte.is_ascii_digit() || byte == b',')),
                "a whole-number rate: {rest}"
            );
            count.replace(',', "").parse().unwrap()
        })
        .collect();
    let intervals = u32::try_from(elapsed.as_millis() / interval.as_millis()).unwrap();
    assert!(
        counts.len() <= intervals as usize + 1,
        "at most one line per interval in {elapsed:?}: {stderr}"
    );
    if elapsed > interval * 3 {
        assert!(!counts.is_empty(), "a line in {elapsed:?}: {stderr}");
    }
    assert!(counts.windows(2).all(|pair| pair[0] < pair[1]), "{stderr}");
}

/// On a terminal, a bar redrawn in place (carriage return, clear line), with whole-number rates,
/// cleared at the end; the summary follows.
#[test]
#[expect(clippy::print_stderr, reason = "a skipped test says so")]
fn a_bar_on_a_terminal() {
    if !Path::new("/usr/bin/script").exists() {
        eprintln!("skipping: /usr/bin/script (util-linux) is not installed");
        return;
    }
    let tree = many_small_files(3_000);
    for (subcommand, message, unit) in [
        ("scan", "scanning", "entries"),
        ("relink", "relinking", "files"),
    ] {
        let command = format!(
            "{} {subcommand} {} >/dev/null",
            env!("CARGO_BIN_EXE_storepatch"),
            tree.root.display()
        );
        let output = Command::new("/usr/bin/script")
            .args(["-qec", &command, "/dev/null"])
            .env_remove("STOREPATCH_NO_PROGRESS")
            // A terminal that can redraw a line (under TERM=dumb no bar is drawn).
            .env("TERM", "xterm")
            .output()
            .unwrap();
        let shown = String::from_utf8_lossy(&output.stdout);
        assert!(shown.contains("\r\x1b[2K"), "{subcommand}: {shown:?}");
        let frames: Vec<&str> = shown
            .split("\r\x1b[2K")
            .filter(|frame| frame.trim_start().starts_with(message))
            .collect();
        assert!(!frames.is_empty(), "{subcommand}: {shown:?}");
        for frame in frames {
            assert!(
                frame.contains(&format!(" {unit} (")),
                "{subcommand}: {frame:?}"
            );
            let rate = frame
                .rsplit_once(" (")
                .and_then(|(_, rate)| rate.trim_end().strip_suffix("/s)"))
                .expect(frame);
            assert!(
                rate.bytes()
                    .all(|byte| byte.is_ascii_digit() || byte == b','),
                "{subcommand}: a whole-number rate: {frame:?}"
            );
        }
        // The bar is cleared before the summary, which is the last thing shown.
        let last = shown.rsplit("\r\x1b[2K").next().unwrap();
        assert!(
            last.contains("0 errors") || last.contains("entries;"),
            "{subcommand}: {last:?}"
        );
    }
}
