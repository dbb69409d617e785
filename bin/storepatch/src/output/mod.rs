//! Writing reports: human text and JSON Lines on stdout, messages on stderr.
//!
//! # JSON Lines schema
//!
//! With `--json`, every line on stdout is one JSON object with a `type` field:
//!
//! - `{"type":"reference", "path", "kind", "offset", "form", "store_path", "hash", "scrubbed",
//!   "context"}`: one reference. `kind` is `content`, `symlink` or `name`; `offset` is the byte
//!   offset of the match in the file, link target or name; `form` is `path`
//!   (`<storedir>/<hash>-<name>`) or `bare` (the hash part alone); `hash` is `null` when
//!   `scrubbed`; `context` (scan only) is a few bytes around the match.
//! - `{"type":"rewrite", "path", "kind", "outcome", "references", "store_paths", "new_path"}`:
//!   one entry `scrub` set out to change. `outcome` is `done` (written), `failed` (an `error`
//!   record says why; the entry is unchanged), `interrupted` (a signal stopped the run first; the
//!   entry is unchanged) or `planned` (`--dry-run`).
//! - `{"type":"restore", "path", "kind", "outcome", "references", "store_paths", "relocated",
//!   "record_lines", "new_path"}`: one entry `restore` set out to change. `references` scrubbed
//!   references get the hash of `store_paths` back; `relocated` occurrences of an OLD of
//!   `--relocate` are replaced (in a `.pyc`: code objects' file names); `record_lines` lines of a
//!   `RECORD` get the new hash and size of files the run changes. `outcome` as for `rewrite`.
//! - `{"type":"unresolved", "name", "reason", "matches", "places"}`: a scrubbed name `restore`
//!   left alone: `reason` is `unknown` (no supplied store path has it) or `ambiguous` (`matches`
//!   have it); `places` are the entries holding it, each with `path` and `kind`.
//! - `{"type":"left", "path", "reason", "occurrences", "old"}`: a binary file in which `restore`
//!   left `occurrences` of the OLDs `old` as they were; `reason` says why, as a clause.
//! - `{"type":"relink", "path", "action", "write", "restored_entries", "run_path_old",
//!   "run_path_new", "interpreter_old", "interpreter_new", "dependencies"}`: `relink` looked at one
//!   ELF file. `action` is `patched`, `would_patch` or `unchanged`; `write` is `in_place`,
//!   `relayout` or `none`; each dependency has `name`, `kind` (`needed` or `dlopen`), `resolution`
//!   (`absolute`, `libc`, `origin`, `library` or `missing`) and `dir`; a `dlopen` one (a
//!   `.note.dlopen` group) also has `alternatives`, every soname of the group, and its `name` is
//!   the alternative found (the first when none was).
//! - `{"type":"missing", "path", "name", "kind", "ignored"}`: a dependency `relink` did not find.
//! - `{"type":"skip", "path", "reason"}`: a file `relink` left alone, and why.
//! - `{"type":"hard_link", "path", "first", "relinked"}`: another name of a file `relink` handled
//!   under the name `first`; `relinked` when it was linked to the rewritten file again.
//! - `{"type":"problem", "kind", "path", ...}` and `{"type":"store_path", "store_path", "live",
//!   "scrubbed"}`: what `audit` found, with the fields each kind of problem needs.
//! - `{"type":"error", "path", "message"}`: a per-entry problem; the run went on. An error that
//!   ends the run (a bad argument, a missing root) is one with `path` `null`, and no summary
//!   follows. A temporary file left by an interrupted run is reported this way by `scan`, and
//!   removed by `scrub` and `relink` when its process is gone.
//! - `{"type":"summary", ...}`: last line, with totals. `store_paths` counts distinct hash parts
//!   (as Nix's scanner does), in `scan` and `scrub` alike. `scrub`'s `files`, `symlinks` and
//!   `names` count entries written; `failed` and `interrupted` count the ones left unchanged.
//!   `relink`'s `interrupted` counts files a signal left unchanged. After SIGINT or SIGTERM the
//!   summary still comes, and the exit code is 130 or 143. `scrub`, and `restore` without
//!   `--relocate`, write most files while discovery reads them, so an entry discovery had not
//!   reached when the signal came has no record (and is unchanged).
//!
//! Byte strings (paths, store paths, contexts) are `{"text": "..."}` when they are UTF-8 and
//! `{"bytes": "<base64>"}` otherwise, so nothing is lost.
use std::io::Write;
use std::path::Path;

use base64::Engine as _;
use serde_json::{Value, json};

/// A byte string as `{"text": …}` or `{"bytes": base64}`.
pub(crate) fn bytes_value(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(text) => json!({ "text": text }),
        Err(_) => json!({ "bytes": base64::engine::general_purpose::STANDARD.encode(bytes) }),
    }
}

/// A path as `{"text": …}` or `{"bytes": base64}`.
pub(crate) fn path_value(path: &Path) -> Value {
    bytes_value(path.as_os_str().as_encoded_bytes())
}

/// Appends `text` to `line` as a JSON string, escaped exactly as `serde_json` escapes it.
pub(crate) fn push_json_str(line: &mut Vec<u8>, text: &str) {
    // Writing into a `Vec` cannot fail, and a `&str` always serializes.
    let _ = serde_json::to_writer(&mut *line, text);
}

/// Appends [`bytes_value`]`(bytes)` to `line`, byte for byte as `serde_json` writes it, without
/// building the value: the fast path of records written by the thousand.
pub(crate) fn push_bytes_value(line: &mut Vec<u8>, bytes: &[u8]) {
    // Most values (paths, store paths, the text around a reference) are ASCII with nothing to
    // escape: copied as they are, after one check of every byte that needs no branch per byte.
    if bytes
        .iter()
        .fold(true, |plain, &byte| plain & is_plain(byte))
    {
        line.reserve(bytes.len() + 12);
        line.extend_from_slice(b"{\"text\":\"");
        line.extend_from_slice(bytes);
        line.extend_from_slice(b"\"}");
        return;
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        line.extend_from_slice(b"{\"text\":");
        push_json_str(line, text);
        line.push(b'}');
        return;
    }
    line.extend_from_slice(b"{\"bytes\":\"");
    // Base64 needs no escaping.
    let start = line.len();
    line.resize(
        start + base64::encoded_len(bytes.len(), true).unwrap_or(0),
        0,
    );
    let written = base64::engine::general_purpose::STANDARD
        .encode_slice(bytes, &mut line[start..])
        .unwrap_or(0);
    line.truncate(start + written);
    line.extend_from_slice(b"\"}");
}

/// Whether `serde_json` writes `byte` in a string as it is and it is a whole character: ASCII,
/// and neither a control character, `"` nor `\`.
const fn is_plain(byte: u8) -> bool {
    byte >= 0x20 && byte < 0x80 && byte != b'"' && byte != b'\\'
}

/// Appends `value` in decimal, as `serde_json` writes an integer, without going through `fmt`.
pub(crate) fn push_json_u64(line: &mut Vec<u8>, mut value: u64) {
    // `u64::MAX` has 20 digits.
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        // The remainder is a single digit.
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    line.extend_from_slice(&digits[start..]);
}

/// A path for a line of human output: control characters (a newline in a file name, say) and
/// bytes that are not UTF-8 are escaped (`\n`, `\t`, `\r`, `\xNN`), as ripgrep does, so that
/// one entry is always one line.
pub(crate) fn escaped(path: &Path) -> String {
    escape_bytes(path.as_os_str().as_encoded_bytes())
}

/// [`escaped`] for any text.
pub(crate) fn escape_bytes(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for character in chunk.valid().chars() {
            match character {
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                control if control.is_control() => {
                    let _ = write!(out, "\\x{:02X}", u32::from(control));
                }
                other => out.push(other),
            }
        }
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02X}");
        }
    }
    out
}

/// What a pipe on stdout is made to hold (see [`grow_pipe`]): the most that any user may ask for
/// unless the system says otherwise (`/proc/sys/fs/pipe-max-size`).
const PIPE_SIZE: usize = 1 << 20;

/// Lets a pipe (or FIFO) on `fd` hold [`PIPE_SIZE`] bytes. A pipe holds 64 KiB unless asked,
/// and a report of megabytes (`scan --json` of a real venv is 12 MB) then waits for its reader
/// every 64 KiB, each time a trip through the scheduler for both. Measured on the benchmark's
/// real venv on tmpfs, read by `hyperfine`: `scan --json` 298 → 286 ms, against 273 ms for
/// `scan --quiet`.
///
/// A pipe is never made smaller, and one the system will not grow (its user is over the pipe
/// quota, `EPERM`) stays as it is: nothing but the waiting changes.
fn grow_pipe(fd: impl std::os::fd::AsFd) {
    use rustix::fs::FileType;
    let fd = fd.as_fd();
    let is_pipe = rustix::fs::fstat(fd)
        .is_ok_and(|stat| FileType::from_raw_mode(stat.st_mode) == FileType::Fifo);
    if is_pipe && rustix::pipe::fcntl_getpipe_size(fd).is_ok_and(|size| size < PIPE_SIZE) {
        let _ = rustix::pipe::fcntl_setpipe_size(fd, PIPE_SIZE);
    }
}

/// Buffered stdout for data.
pub(crate) struct Output {
    out: std::io::BufWriter<std::io::StdoutLock<'static>>,
}

impl Output {
    pub(crate) fn new() -> Self {
        let stdout = std::io::stdout();
        grow_pipe(&stdout);
        Self {
            out: std::io::BufWriter::new(stdout.lock()),
        }
    }

    pub(crate) fn json(&mut self, value: &Value) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, value)?;
        self.out.write_all(b"\n")
    }

    /// Writes `bytes` as they are: lines rendered beforehand, each with its newline.
    pub(crate) fn raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.out.write_all(bytes)
    }

    pub(crate) fn line(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.out.write_all(bytes)?;
        self.out.write_all(b"\n")
    }

    pub(crate) fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// A message for the user on stderr (not a log line), unless `--quiet`.
#[expect(clippy::print_stderr, reason = "messages go to stderr by design")]
pub(crate) fn message(quiet: bool, text: &str) {
    if !quiet {
        eprintln!("{}", escape_bytes(text.as_bytes()));
    }
}

/// A per-entry problem on stderr; shown even with `--quiet`. Messages name their path.
#[expect(clippy::print_stderr, reason = "errors go to stderr by design")]
pub(crate) fn entry_error(message: &str) {
    eprintln!("error: {}", escape_bytes(message.as_bytes()));
}

/// Something left undone that the user must know about, on stderr; shown even with `--quiet`.
#[expect(clippy::print_stderr, reason = "warnings go to stderr by design")]
pub(crate) fn warning(message: &str) {
    eprintln!("warning: {message}");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`push_json_u64`] writes what `to_string` (and `serde_json`) write, at every edge: 0, each
    /// power of ten and its neighbours, and the largest value.
    #[test]
    fn push_json_u64_writes_what_to_string_writes() {
        let mut cases = vec![0, 1, 9, u64::MAX, u64::MAX - 1, u64::from(u32::MAX)];
        let mut power = 1u64;
        while let Some(next) = power.checked_mul(10) {
            power = next;
            cases.extend([power - 1, power, power + 1]);
        }
        for value in cases {
            let mut line = b"x".to_vec();
            push_json_u64(&mut line, value);
            assert_eq!(line, format!("x{value}").into_bytes());
            assert_eq!(line[1..], serde_json::to_vec(&value).unwrap());
        }
    }

    /// The hand-written byte values are the bytes `serde_json` writes for [`bytes_value`]: UTF-8
    /// with every character that needs escaping, and bytes that are not UTF-8.
    #[test]
    fn push_bytes_value_writes_what_serde_json_writes() {
        let mut cases: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"plain /nix/store/abc-name".to_vec(),
            b"quote \" backslash \\ slash / del \x7f".to_vec(),
            (0..0x20).collect(),
            "\u{e9}t\u{e9} \u{2028}\u{2029} \u{1f600}"
                .as_bytes()
                .to_vec(),
            b"\xff\xfe not UTF-8".to_vec(),
            b"\xc3".to_vec(),
        ];
        // Every length around base64's groups of three, and every byte value.
        cases.extend(
            (0..=9u8).map(|len| (0..len).map(|byte| byte.wrapping_mul(29) | 0x80).collect()),
        );
        cases.push((0..=255).collect());
        cases.extend((0..=255).map(|byte| vec![byte]));
        cases.extend((0..=255).map(|byte| vec![b'a', byte, b'z']));
        // Pseudo-random strings, mostly printable ASCII with some control characters, some
        // multi-byte characters and now and then a byte that breaks UTF-8.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..2000 {
            let len = next() % 40;
            let mut case = Vec::new();
            for _ in 0..len {
                match next() % 16 {
                    0 => case.push(u8::try_from(next() % 0x20).unwrap()),
                    1 => case.extend_from_slice("\u{e9}".as_bytes()),
                    2 if next() % 8 == 0 => case.push(0xff),
                    _ => case.push(u8::try_from(0x20 + next() % 0x5f).unwrap()),
                }
            }
            cases.push(case);
        }
        for case in cases {
            let mut line = b"prefix".to_vec();
            push_bytes_value(&mut line, &case);
            let expected = [
                b"prefix".to_vec(),
                serde_json::to_vec(&bytes_value(&case)).unwrap(),
            ]
            .concat();
            assert_eq!(
                String::from_utf8_lossy(&line),
                String::from_utf8_lossy(&expected),
                "{case:?}"
            );
            assert_eq!(line, expected);
        }
    }
}
