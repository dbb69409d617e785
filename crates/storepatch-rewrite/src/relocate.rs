//! Relocation: replacing one byte string (a venv's old location) with another of any length.
//!
//! A venv records where it was created: console-script shebangs, `bin/activate*`, `pyvenv.cfg`.
//! Moving it means rewriting that location. The length changes, so this is only done to text
//! (and, through their structure, to the file names of `.pyc` code objects: see [`crate::pyc`]);
//! other binary files (ELF) keep their offsets and the occurrences in them are reported instead.

/// Replace every occurrence of `old` with `new`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relocation {
    /// What to look for (never empty).
    pub old: Vec<u8>,
    /// What to write instead.
    pub new: Vec<u8>,
}

impl Relocation {
    /// Parses `OLD=NEW` (split at the first `=`); `None` when there is no `=` or `OLD` is empty.
    pub fn parse(spec: &[u8]) -> Option<Self> {
        let split = spec.iter().position(|&byte| byte == b'=')?;
        let (old, new) = (&spec[..split], &spec[split + 1..]);
        if old.is_empty() {
            return None;
        }
        Some(Self {
            old: old.to_vec(),
            new: new.to_vec(),
        })
    }
}

/// One occurrence of a relocation's `old` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Occurrence {
    /// Where it starts.
    pub offset: u64,
    /// Its length (the length of `old`).
    pub len: usize,
    /// Which relocation it belongs to (index into the slice searched for).
    pub relocation: usize,
}

/// Every occurrence of any `old`, left to right and not overlapping; where two start at the same
/// place the longer `old` wins (so `/a/b` is preferred to `/a` when both are given).
pub fn find_occurrences(contents: &[u8], relocations: &[Relocation]) -> Vec<Occurrence> {
    let mut all: Vec<Occurrence> = Vec::new();
    for (index, relocation) in relocations.iter().enumerate() {
        all.extend(
            memchr::memmem::find_iter(contents, &relocation.old).map(|offset| Occurrence {
                offset: offset as u64,
                len: relocation.old.len(),
                relocation: index,
            }),
        );
    }
    all.sort_by(|left, right| {
        left.offset
            .cmp(&right.offset)
            .then(right.len.cmp(&left.len))
            .then(left.relocation.cmp(&right.relocation))
    });
    let mut kept: Vec<Occurrence> = Vec::with_capacity(all.len());
    let mut end = 0u64;
    for occurrence in all {
        if occurrence.offset >= end {
            end = occurrence.offset + occurrence.len as u64;
            kept.push(occurrence);
        }
    }
    kept
}

/// A change to a buffer: `len` bytes at `offset` become `bytes` (any length).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Splice<'bytes> {
    /// Where the replaced bytes start.
    pub offset: u64,
    /// How many bytes are replaced.
    pub len: usize,
    /// What replaces them.
    pub bytes: &'bytes [u8],
}

/// Applies `splices` (sorted, not overlapping, in bounds) to `contents`; `None` otherwise.
pub fn splice(contents: &[u8], splices: &[Splice<'_>]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(contents.len());
    let mut position = 0usize;
    for splice in splices {
        let start = usize::try_from(splice.offset).ok()?;
        let end = start.checked_add(splice.len)?;
        if start < position || end > contents.len() {
            return None;
        }
        out.extend_from_slice(&contents[position..start]);
        out.extend_from_slice(splice.bytes);
        position = end;
    }
    out.extend_from_slice(&contents[position..]);
    Some(out)
}

/// What [`binary_kind`] calls a `.pyc`: its file names can be relocated by re-writing the
/// marshal stream (see [`crate::pyc`]), nothing else in it.
pub const PYTHON_BYTECODE: &str = "Python bytecode";

/// Why a file's occurrences cannot be relocated as text, if they cannot: its length must not
/// change (or, for [`PYTHON_BYTECODE`], only through its structure).
pub fn binary_kind(name: &[u8], contents: &[u8]) -> Option<&'static str> {
    if contents.starts_with(b"\x7fELF") {
        Some("an ELF file")
    } else if name.ends_with(b".pyc") || name.ends_with(b".pyo") {
        Some(PYTHON_BYTECODE)
    } else if contents.contains(&0) {
        Some("a binary file (it holds NUL bytes)")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_splits_at_the_first_equals_sign() {
        assert_eq!(
            Relocation::parse(b"/build/a=b=/nix/store/x"),
            Some(Relocation {
                old: b"/build/a".to_vec(),
                new: b"b=/nix/store/x".to_vec()
            })
        );
        assert_eq!(Relocation::parse(b"=/x"), None);
        assert_eq!(Relocation::parse(b"/x"), None);
        assert!(Relocation::parse(b"/x=").is_some_and(|relocation| relocation.new.is_empty()));
    }

    #[test]
    fn longest_old_wins_and_occurrences_do_not_overlap() {
        let relocations = [
            Relocation::parse(b"/a=/X").unwrap(),
            Relocation::parse(b"/a/b=/Y").unwrap(),
        ];
        let text = b"#!/a/b/bin/python\nhome=/a\n/a/a/a";
        let found = find_occurrences(text, &relocations);
        let offsets: Vec<(u64, usize)> = found
            .iter()
            .map(|occurrence| (occurrence.offset, occurrence.relocation))
            .collect();
        assert_eq!(offsets, [(2, 1), (23, 0), (26, 0), (28, 0), (30, 0)]);
        let splices: Vec<Splice<'_>> = found
            .iter()
            .map(|occurrence| Splice {
                offset: occurrence.offset,
                len: occurrence.len,
                bytes: &relocations[occurrence.relocation].new,
            })
            .collect();
        assert_eq!(
            splice(text, &splices).unwrap(),
            b"#!/Y/bin/python\nhome=/X\n/X/X/X"
        );
    }

    #[test]
    fn splice_rejects_overlaps_and_out_of_bounds() {
        let overlapping = [
            Splice {
                offset: 0,
                len: 3,
                bytes: b"",
            },
            Splice {
                offset: 2,
                len: 1,
                bytes: b"",
            },
        ];
        assert_eq!(splice(b"abcd", &overlapping), None);
        let beyond = [Splice {
            offset: 3,
            len: 2,
            bytes: b"",
        }];
        assert_eq!(splice(b"abcd", &beyond), None);
    }

    #[test]
    fn binary_kinds() {
        assert_eq!(binary_kind(b"x.so", b"\x7fELF\x02"), Some("an ELF file"));
        assert_eq!(
            binary_kind(b"x.cpython-311.pyc", b"abc"),
            Some("Python bytecode")
        );
        assert!(binary_kind(b"blob", b"a\0b").is_some());
        assert_eq!(binary_kind(b"activate", b"VIRTUAL_ENV='/a'\n"), None);
    }
}
