//! One wording for every message about a file: ``cannot ACTION `PATH`: CAUSE``.
//!
//! `fs_err` words its errors as ``failed to OPERATION `PATH`: CAUSE`` (``failed to open file``,
//! ``failed to query raw metadata``, …), and keeps the original error only in that text. Errors
//! from it reach the user through every crate, so rather than wrapping each call, messages are
//! put into the one form where they are rendered: [`crate::error_chain`] for per-file errors and
//! the binary for errors that end a run.

/// `fs_err`'s operations (as its messages word them, up to the opening backtick) and the action
/// the message names instead. Two-path operations (``from `A` to `B` ``) keep both paths.
const OPERATIONS: &[(&str, &str)] = &[
    ("open file", "open"),
    ("create file", "create"),
    ("create directory", "create directory"),
    ("sync file", "write"),
    ("set length of file", "write"),
    ("query resolved metadata", "read"),
    ("query raw metadata", "read"),
    ("query metadata of file", "read"),
    ("query metadata of symlink", "read"),
    ("clone handle for file", "open"),
    ("set permissions for file", "change the mode of"),
    ("set times for file", "set the times of"),
    ("set modified time for file", "set the times of"),
    ("read from file", "read"),
    ("seek in file", "read"),
    ("write to file", "write"),
    ("flush file", "write"),
    ("read directory", "read"),
    ("remove file", "remove"),
    ("remove directory", "remove"),
    ("canonicalize path", "resolve"),
    ("read symbolic link", "read"),
    ("check file existence", "read"),
    ("lock", "lock"),
    ("unlock", "unlock"),
    ("read with offset from", "read"),
    ("read exactly with offset from", "read"),
    ("write with offset to", "write"),
    ("write all with offset to", "write"),
    ("chown", "change the owner of"),
    ("lchown", "change the owner of"),
    ("copy file from", "copy"),
    ("hardlink file from", "hard-link"),
    ("rename file from", "rename"),
    ("softlink file from", "symlink"),
    ("symlink file from", "symlink"),
    ("symlink dir from", "symlink"),
];

/// `message` with every ``failed to OPERATION `PATH` `` of `fs_err` worded as
/// ``cannot ACTION `PATH` ``; a `PATH: ` just before it, which would name the path twice, is
/// dropped. Other text is returned as it is.
///
/// ```
/// let message = "failed to open file `lib/a.so`: Permission denied (os error 13)";
/// assert_eq!(
///     storepatch_tree::in_one_voice(message),
///     "cannot open `lib/a.so`: Permission denied (os error 13)"
/// );
/// ```
#[must_use]
pub fn in_one_voice(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find("failed to ") {
        let (before, from_here) = rest.split_at(start);
        let after_prefix = &from_here["failed to ".len()..];
        let Some((operation, action)) = OPERATIONS
            .iter()
            .filter(|(operation, _)| {
                after_prefix
                    .strip_prefix(operation)
                    .is_some_and(|tail| tail.starts_with(" `"))
            })
            .max_by_key(|(operation, _)| operation.len())
        else {
            out.push_str(before);
            out.push_str("failed to ");
            rest = after_prefix;
            continue;
        };
        let tail = &after_prefix[operation.len()..];
        out.push_str(without_repeated_path(before, tail));
        out.push_str("cannot ");
        out.push_str(action);
        // "from `A` to `B`" reads "`A` to `B`" after a verb.
        rest = tail;
    }
    out.push_str(rest);
    without_repeated_action(out)
}

/// `text` without an outer ``cannot ACTION `PATH`: `` directly followed by another
/// ``cannot ACTION `PATH`…`` about the same path (a wrapper's message followed by the one of the
/// operation it wrapped): the inner one says more, such as where a rename went.
fn without_repeated_action(mut text: String) -> String {
    let mut from = 0;
    while let Some(found) = text[from..].find("cannot ") {
        let start = from + found;
        if let Some(end) = repeated_action_end(&text[start..]) {
            text.replace_range(start..start + end, "");
        } else {
            from = start + "cannot ".len();
        }
    }
    text
}

/// For `text` starting ``cannot ACTION `PATH`: cannot ACTION2 `PATH` ``, the length of the first
/// part (up to the second `cannot`).
fn repeated_action_end(text: &str) -> Option<usize> {
    let (action, quoted) = text.strip_prefix("cannot ")?.split_once('`')?;
    let (path, after) = quoted.split_once('`')?;
    if action.contains(':') || path.is_empty() {
        return None;
    }
    let inner = after.strip_prefix(": ")?;
    let (inner_action, inner_quoted) = inner.strip_prefix("cannot ")?.split_once('`')?;
    let same_path = inner_quoted
        .strip_prefix(path)
        .is_some_and(|tail| tail.starts_with('`'));
    (same_path && !inner_action.contains(':')).then(|| text.len() - inner.len())
}

/// `before` without a trailing ``PATH: `` when `tail` (`` `PATH`…``) names the same path.
fn without_repeated_path<'a>(before: &'a str, tail: &str) -> &'a str {
    let Some(quoted) = tail
        .strip_prefix(" `")
        .and_then(|quoted| quoted.split_once('`'))
        .map(|(path, _)| path)
    else {
        return before;
    };
    before
        .strip_suffix(": ")
        .and_then(|head| head.strip_suffix(quoted))
        .unwrap_or(before)
}

#[cfg(test)]
mod tests {
    use super::in_one_voice;

    /// The real `fs_err` messages, not copies of them.
    fn fs_err_message(result: std::io::Result<impl Sized>) -> String {
        match result {
            Ok(_) => panic!("the operation was expected to fail"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn fs_err_operations_are_worded_as_cannot() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let shown = missing.display();
        let cases = [
            (
                fs_err_message(fs_err::File::open(&missing)),
                format!("cannot open `{shown}`: No such file or directory (os error 2)"),
            ),
            (
                fs_err_message(fs_err::symlink_metadata(&missing)),
                format!("cannot read `{shown}`: No such file or directory (os error 2)"),
            ),
            (
                fs_err_message(fs_err::metadata(&missing)),
                format!("cannot read `{shown}`: No such file or directory (os error 2)"),
            ),
            (
                fs_err_message(fs_err::read_dir(&missing)),
                format!("cannot read `{shown}`: No such file or directory (os error 2)"),
            ),
            (
                fs_err_message(fs_err::create_dir(missing.join("sub"))),
                format!(
                    "cannot create directory `{}`: No such file or directory (os error 2)",
                    missing.join("sub").display()
                ),
            ),
            (
                fs_err_message(fs_err::File::create(missing.join("file"))),
                format!(
                    "cannot create `{}`: No such file or directory (os error 2)",
                    missing.join("file").display()
                ),
            ),
            (
                fs_err_message(fs_err::rename(&missing, dir.path().join("other"))),
                format!(
                    "cannot rename `{shown}` to `{}`: No such file or directory (os error 2)",
                    dir.path().join("other").display()
                ),
            ),
        ];
        for (message, expected) in cases {
            assert_eq!(in_one_voice(&message), expected, "from {message:?}");
        }
    }

    #[test]
    fn a_path_named_twice_is_named_once() {
        assert_eq!(
            in_one_voice("lib/a.so: failed to open file `lib/a.so`: Read-only file system"),
            "cannot open `lib/a.so`: Read-only file system"
        );
        assert_eq!(
            in_one_voice("interpreter x: failed to open file `y`: gone"),
            "interpreter x: cannot open `y`: gone"
        );
    }

    #[test]
    fn a_wrapper_naming_the_same_path_gives_way_to_the_operation() {
        assert_eq!(
            in_one_voice(
                "cannot rename `a/x`: failed to rename file from `a/x` to `a/y`: Permission denied"
            ),
            "cannot rename `a/x` to `a/y`: Permission denied"
        );
        assert_eq!(
            in_one_voice("cannot read `a`: cannot open `a`: gone"),
            "cannot open `a`: gone"
        );
        // Different paths are both kept.
        assert_eq!(
            in_one_voice("cannot link `a` to `b` again: cannot rename `c`: busy"),
            "cannot link `a` to `b` again: cannot rename `c`: busy"
        );
    }

    #[test]
    fn other_text_is_kept() {
        for message in [
            "cannot read `a`: Permission denied (os error 13)",
            "failed to parse: nothing",
            "failed to ",
            "",
        ] {
            assert_eq!(in_one_voice(message), message);
        }
    }
}
