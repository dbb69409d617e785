//! Every `console` block of README.md, run against the bundled example and compared.
//!
//! A block is a sequence of `$ command` lines, each followed by the output it prints (stdout
//! and stderr, as a terminal shows them). The blocks run in order in one `bash` session that starts at the repository
//! root with the binary under test first on `PATH`, so `cd` and `export` carry over from one
//! block to the next. `/tmp/demo` in a command stands for a fresh temporary directory, and that
//! directory is shown as `/tmp/demo` again in the output. Before comparing, both sides go through
//! the same filters: the Python version and platform tag (the example uses the host's Python),
//! an ELF file's byte offsets (they depend on the compiler), and runs of spaces (column widths
//! follow the path lengths). A line `...` in the README stands for any number of lines. Every
//! command must exit with status 0 as written (README shows a status with `; echo "exit
//! status $?"`).
//!
//! A block preceded by the line `<!-- needs: restore -->` shows the main derivation's side of
//! the round trip, which starts with `storepatch restore`. [`readme_examples`] runs every other
//! block (none of which uses what those blocks make); [`readme_examples_with_restore`] runs them
//! all.
//!
//! With `STOREPATCH_README_UPDATE=1`, the README's outputs are rewritten from what the commands
//! printed instead (review the diff).
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use storepatch_test::snapshot::Filters;

const NEEDS_RESTORE: &str = "<!-- needs: restore -->";
const DEMO_DIR: &str = "/tmp/demo";

/// One `$ command` of a block and the output README shows for it.
struct Step {
    command: String,
    /// README line numbers (0-based) of the expected output, `output_lines.0..output_lines.1`.
    output_lines: (usize, usize),
    expected: Vec<String>,
}

struct Block {
    needs_restore: bool,
    steps: Vec<Step>,
}

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn parse(readme: &str) -> Vec<Block> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut blocks = Vec::new();
    let mut index = 0;
    while index < lines.len() {
        if lines[index].trim_end() != "```console" {
            index += 1;
            continue;
        }
        let needs_restore = lines[..index]
            .iter()
            .rev()
            .find(|line| !line.trim().is_empty())
            .is_some_and(|line| line.trim() == NEEDS_RESTORE);
        let mut steps: Vec<Step> = Vec::new();
        index += 1;
        while index < lines.len() && lines[index].trim_end() != "```" {
            let line = lines[index];
            if let Some(command) = line.strip_prefix("$ ") {
                steps.push(Step {
                    command: command.to_owned(),
                    output_lines: (index + 1, index + 1),
                    expected: Vec::new(),
                });
            } else {
                let step = steps.last_mut().unwrap_or_else(|| {
                    panic!("README.md:{}: output before any `$ ` command", index + 1)
                });
                step.expected.push(line.to_owned());
                step.output_lines.1 = index + 1;
            }
            index += 1;
        }
        assert!(index < lines.len(), "README.md: unterminated console block");
        blocks.push(Block {
            needs_restore,
            steps,
        });
        index += 1;
    }
    blocks
}

/// What varies between machines, applied to both the README and the actual output.
fn normalize(text: &str) -> String {
    Filters::new()
        .regex(r"python3-3\.[0-9]+\.[0-9]+", "python3-3.X.Y")
        .regex(r"version_info = 3\.[0-9]+\.[0-9]+", "version_info = 3.X.Y")
        .regex(r"python3\.[0-9]+", "python3.X")
        .regex(
            r"cpython-3[0-9]+-[a-z0-9_]+-linux-gnu",
            "cpython-3X-PLATFORM",
        )
        .regex(r"(\.so):[0-9]+:", "$1:OFFSET:")
        .regex(r" {2,}", " ")
        .apply(text)
}

/// Whether `actual` matches `expected`, where an expected line `...` matches any lines.
fn matches(expected: &[String], actual: &[String]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((first, rest)) if first.trim() == "..." => {
            (0..=actual.len()).any(|skip| matches(rest, &actual[skip..]))
        }
        Some((first, rest)) => actual.split_first().is_some_and(|(line, others)| {
            normalize(first) == normalize(line) && matches(rest, others)
        }),
    }
}

/// Runs the steps in one bash session; returns each step's exit status and output lines.
fn run_steps(steps: &[&Step], demo: &Path) -> Vec<(i32, Vec<String>)> {
    let scratch = tempfile::tempdir().expect("tempdir");
    let out = scratch.path().join("out");
    let mut script = String::from("set -u\n");
    for (number, step) in steps.iter().enumerate() {
        let command = step.command.replace(DEMO_DIR, &demo.display().to_string());
        writeln!(
            script,
            "{{ {command}\n}} >'{out}' 2>&1 </dev/null; status=$?\n\
             printf '\\n@@step {number} %s@@\\n' \"$status\"; cat '{out}'",
            out = out.display(),
        )
        .unwrap();
    }
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_storepatch"))
        .parent()
        .unwrap();
    let path = std::env::join_paths(std::iter::once(bin_dir.to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .unwrap();
    let output = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(repository())
        .env("PATH", path)
        .env_remove("NIX_STORE")
        .env_remove("NIX_BINTOOLS")
        .env("STOREPATCH_NO_PROGRESS", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("bash runs");
    let text = String::from_utf8_lossy(&output.stdout);
    let text = Filters::new().path(demo, DEMO_DIR).apply(&text);
    let mut results: Vec<(i32, Vec<String>)> = Vec::new();
    for line in text.lines() {
        if let Some(marker) = line
            .strip_prefix("@@step ")
            .and_then(|rest| rest.strip_suffix("@@"))
        {
            let status = marker
                .split(' ')
                .nth(1)
                .and_then(|status| status.parse().ok());
            results.push((status.unwrap_or(-1), Vec::new()));
            continue;
        }
        if let Some((_, lines)) = results.last_mut() {
            lines.push(line.to_owned());
        }
    }
    // Each step's output starts after the marker's leading newline; drop the empty line that
    // `printf '\n…'` leaves at the end of the previous step's output.
    for (_, lines) in &mut results {
        if lines.last().is_some_and(String::is_empty) {
            lines.pop();
        }
    }
    assert_eq!(
        results.len(),
        steps.len(),
        "the session stopped early:\n{text}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    results
}

fn check_readme(with_restore: bool) {
    let readme_path = repository().join("README.md");
    let readme = fs_err::read_to_string(&readme_path).unwrap();
    let blocks = parse(&readme);
    let steps: Vec<&Step> = blocks
        .iter()
        .filter(|block| with_restore || !block.needs_restore)
        .flat_map(|block| &block.steps)
        .collect();
    assert!(
        steps.len() > 10,
        "README.md has only {} commands",
        steps.len()
    );
    let demo_parent = tempfile::tempdir().expect("tempdir");
    let demo = demo_parent.path().join("demo");
    let results = run_steps(&steps, &demo);
    if std::env::var_os("STOREPATCH_README_UPDATE").is_some() {
        let mut lines: Vec<String> = readme.lines().map(str::to_owned).collect();
        for (step, (_, actual)) in steps.iter().zip(&results).rev() {
            let (start, end) = step.output_lines;
            lines.splice(start..end, actual.iter().cloned());
        }
        fs_err::write(&readme_path, lines.join("\n") + "\n").unwrap();
    }
    let mut failures = String::new();
    for (step, (status, actual)) in steps.iter().zip(&results) {
        if *status != 0 {
            writeln!(
                failures,
                "$ {}\nexited with status {status}:\n{}\n",
                step.command,
                actual.join("\n")
            )
            .unwrap();
        } else if !matches(&step.expected, actual) {
            writeln!(
                failures,
                "$ {}\nREADME.md:{} shows:\n{}\nbut it printed:\n{}\n",
                step.command,
                step.output_lines.0 + 1,
                step.expected.join("\n"),
                actual.join("\n")
            )
            .unwrap();
        }
    }
    assert!(
        failures.is_empty(),
        "README.md is out of date:\n\n{failures}"
    );
}

#[test]
fn readme_examples() {
    check_readme(false);
}

#[test]
fn readme_examples_with_restore() {
    check_readme(true);
}

#[test]
fn an_ellipsis_matches_any_lines() {
    let lines = |text: &str| text.lines().map(str::to_owned).collect::<Vec<_>>();
    assert!(matches(&lines("a\n...\nd"), &lines("a\nb\nc\nd")));
    assert!(matches(&lines("a\n...\nd"), &lines("a\nd")));
    assert!(!matches(&lines("a\n...\nd"), &lines("a\nb")));
    assert!(!matches(&lines("a\nb"), &lines("a\nb\nc")));
    assert!(matches(
        &lines("x lib/python3.11/y  2"),
        &lines("x lib/python3.13/y 2")
    ));
}

/// `testdata/demo.sh`, the README's first command, runs the whole round trip to the end.
#[test]
fn demo_script_runs_the_round_trip() {
    let output = Command::new("bash")
        .arg("testdata/demo.sh")
        .current_dir(repository())
        .env("STOREPATCH", env!("CARGO_BIN_EXE_storepatch"))
        .env("STOREPATCH_NO_PROGRESS", "1")
        .env_remove("NIX_STORE")
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "testdata/demo.sh failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut last = stdout.lines().rev().filter(|line| !line.trim().is_empty());
    assert!(
        last.next()
            .is_some_and(|line| line.contains("bash testdata/demo.sh DIR keeps it"))
            && last.next() == Some("The round trip worked."),
        "{stdout}"
    );
    assert!(stdout.contains("hello from libdemo 1.0 ("), "{stdout}");
}
