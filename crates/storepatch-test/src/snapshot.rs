//! Running the `storepatch` binary and rendering what it did for `insta` snapshots.
//!
//! [`cmd_snapshot!`](crate::cmd_snapshot) renders the exit code, stdout and stderr of a command in
//! one block, after filters have replaced what varies between runs (temporary directories, timing)
//! with stable placeholders.
use std::path::Path;
use std::process::{Command, Output};

/// Regex filters, applied in order: `(pattern, replacement)`.
#[derive(Clone, Debug, Default)]
pub struct Filters(Vec<(String, String)>);

impl Filters {
    /// No filters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces every occurrence of the literal `path` (and its canonical form) with `placeholder`.
    #[must_use]
    pub fn path(mut self, path: &Path, placeholder: &str) -> Self {
        let mut variants = vec![path.display().to_string()];
        if let Ok(canonical) = fs_err::canonicalize(path) {
            variants.push(canonical.display().to_string());
        }
        // Longest first so that a canonical path containing the other is replaced whole.
        variants.sort_by_key(|variant| std::cmp::Reverse(variant.len()));
        variants.dedup();
        for variant in variants {
            self = self.literal(&variant, placeholder);
        }
        self
    }

    /// Replaces every occurrence of the literal `text` with `placeholder`.
    #[must_use]
    pub fn literal(mut self, text: &str, placeholder: &str) -> Self {
        self.0.push((regex::escape(text), placeholder.to_owned()));
        self
    }

    /// Adds a regex filter.
    #[must_use]
    pub fn regex(mut self, pattern: &str, replacement: &str) -> Self {
        self.0.push((pattern.to_owned(), replacement.to_owned()));
        self
    }

    /// Applies the filters to `text`.
    pub fn apply(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for (pattern, replacement) in &self.0 {
            match regex::Regex::new(pattern) {
                Ok(regex) => text = regex.replace_all(&text, replacement.as_str()).into_owned(),
                Err(err) => panic!("bad snapshot filter `{pattern}`: {err}"),
            }
        }
        text
    }
}

/// Runs `command` and renders its outcome for a snapshot.
pub fn run_and_format(command: &mut Command, filters: &Filters) -> (String, Output) {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("cannot run {command:?}: {err}"));
    let rendered = format!(
        "success: {}\nexit_code: {}\n----- stdout -----\n{}\n----- stderr -----\n{}",
        output.status.success(),
        output.status.code().unwrap_or(-1),
        filters.apply(&String::from_utf8_lossy(&output.stdout)),
        filters.apply(&String::from_utf8_lossy(&output.stderr)),
    );
    (rendered, output)
}

/// Runs a command and compares its rendered outcome with an inline snapshot; returns the output.
///
/// ```ignore
/// cmd_snapshot!(filters, command, @r"
/// success: true
/// exit_code: 0
/// ----- stdout -----
/// ...
/// ");
/// ```
#[macro_export]
macro_rules! cmd_snapshot {
    ($filters:expr, $command:expr, @$snapshot:literal) => {{
        let (rendered, output) = $crate::snapshot::run_and_format(&mut $command, &$filters);
        ::insta::assert_snapshot!(rendered, @$snapshot);
        output
    }};
}
