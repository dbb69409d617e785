//! The committed man pages and completions match what the CLI definition generates.
//!
//! After changing a flag or its help, regenerate them with:
//! `cargo run -q -- generate man --out-dir bin/storepatch/doc/man` and
//! `for sh in bash zsh fish; do cargo run -q -- generate complete-$sh > bin/storepatch/doc/storepatch.$sh; done`.
use std::path::Path;

use crate::common::storepatch;

fn doc_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/doc"))
}

#[test]
fn man_pages_are_current() {
    let out = tempfile::tempdir().unwrap();
    let status = storepatch()
        .args(["generate", "man", "--out-dir"])
        .arg(out.path())
        .status()
        .unwrap();
    assert!(status.success());
    let mut generated: Vec<_> = fs_err::read_dir(out.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    generated.sort();
    let mut committed: Vec<_> = fs_err::read_dir(doc_dir().join("man"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    committed.sort();
    assert_eq!(
        generated, committed,
        "regenerate the man pages (see this file's header)"
    );
    for name in &generated {
        assert_eq!(
            fs_err::read_to_string(out.path().join(name)).unwrap(),
            fs_err::read_to_string(doc_dir().join("man").join(name)).unwrap(),
            "{name:?} is out of date: regenerate the man pages (see this file's header)"
        );
    }
    // Every subcommand has a page, and the exit codes are documented.
    for page in [
        "storepatch-scan.1",
        "storepatch-scrub.1",
        "storepatch-restore.1",
        "storepatch-relink.1",
        "storepatch-audit.1",
        "storepatch-elf.1",
    ] {
        assert!(generated.iter().any(|name| name == page), "{page}");
    }
    assert!(
        fs_err::read_to_string(doc_dir().join("man/storepatch-scan.1"))
            .unwrap()
            .contains("Exit status")
    );
}

#[test]
fn completions_are_current() {
    for shell in ["bash", "zsh", "fish"] {
        let output = storepatch()
            .args(["generate", &format!("complete-{shell}")])
            .output()
            .unwrap();
        assert!(output.status.success());
        let committed = fs_err::read(doc_dir().join(format!("storepatch.{shell}"))).unwrap();
        assert!(
            output.stdout == committed,
            "storepatch.{shell} is out of date: regenerate it (see this file's header)"
        );
    }
}
