//! Relocation: replacing one byte string (a venv's old location) with another of any length.
//!
//! A venv records where it was created: console-script shebangs, `bin/activate*`, `pyvenv.cfg`.
//! Moving it means rewriting that location. The length changes, so this is only done to text
//! (and, through their structure, to the file names of `.pyc` code objects: see [`crate::pyc`]);
//! other binary files (ELF) keep their offsets and the occurrences in them are reported instead.

use std::path::Path;

use crate::{Error, Replacement, Result, SparseWriter, write_error};

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

impl Occurrence {
    /// The splice that puts its relocation's `new` bytes in its place (`relocations` is the slice
    /// it was found with).
    #[must_use]
    pub fn splice<'bytes>(&self, relocations: &'bytes [Relocation]) -> Splice<'bytes> {
        Splice {
            offset: self.offset,
            len: self.len,
            bytes: &relocations[self.relocation].new,
        }
    }
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
    let pieces = splice_pieces(contents, splices)?;
    let mut out = Vec::with_capacity(pieces.iter().map(|piece| piece.len()).sum());
    for piece in pieces {
        out.extend_from_slice(piece);
    }
    Some(out)
}

/// `contents` with `splices` applied, as the pieces to write one after another: the unchanged
/// ranges of `contents` and the replacement bytes, in order (empty pieces left out). `None`
/// unless the splices are sorted, in bounds and do not overlap.
pub fn splice_pieces<'bytes>(
    contents: &'bytes [u8],
    splices: &[Splice<'bytes>],
) -> Option<Vec<&'bytes [u8]>> {
    Some(
        spliced(contents.len(), splices)?
            .into_iter()
            .map(|piece| match piece {
                Piece::Kept(range) => &contents[range],
                Piece::New(bytes) => bytes,
            })
            .collect(),
    )
}

/// A piece of contents with splices applied (see [`spliced`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Piece<'bytes> {
    /// A range of the contents, kept as it is.
    Kept(std::ops::Range<usize>),
    /// The bytes of a splice.
    New(&'bytes [u8]),
}

/// Contents of `len` bytes with `splices` applied, as the pieces to write one after another, in
/// order (empty pieces left out). `None` unless the splices are sorted, in bounds and do not
/// overlap.
pub(crate) fn spliced<'bytes>(
    len: usize,
    splices: &[Splice<'bytes>],
) -> Option<Vec<Piece<'bytes>>> {
    let mut pieces = Vec::with_capacity(2 * splices.len() + 1);
    let mut position = 0usize;
    for splice in splices {
        let start = usize::try_from(splice.offset).ok()?;
        let end = start.checked_add(splice.len)?;
        if start < position || end > len {
            return None;
        }
        pieces.push(Piece::Kept(position..start));
        pieces.push(Piece::New(splice.bytes));
        position = end;
    }
    pieces.push(Piece::Kept(position..len));
    pieces.retain(|piece| match piece {
        Piece::Kept(range) => !range.is_empty(),
        Piece::New(bytes) => !bytes.is_empty(),
    });
    Some(pieces)
}

/// Whether the pieces, written one after another, give exactly `contents`.
fn same_as(pieces: &[&[u8]], contents: &[u8]) -> bool {
    let mut rest = contents;
    for piece in pieces {
        match rest.split_at_checked(piece.len()) {
            Some((head, tail)) if head == *piece => rest = tail,
            _ => return false,
        }
    }
    rest.is_empty()
}

/// Whether applying `splices` to `contents` changes them (compared piece by piece, without
/// building the new copy); `None` when the splices do not fit (see [`splice`]).
pub fn splice_changes(contents: &[u8], splices: &[Splice<'_>]) -> Option<bool> {
    splice_pieces(contents, splices).map(|pieces| !same_as(&pieces, contents))
}

/// Writes `contents` with `splices` applied to a temporary file beside `path`, gives it the mode
/// (and, where allowed, the owner) of `original`, and renames it over `path`, like
/// [`crate::replace_file`] but for changes of any length. The new contents are never built in
/// memory: the unchanged ranges of `contents` and the replacement bytes are written straight to
/// the temporary file through a buffer of one block.
///
/// Returns `false`, touching nothing, when the result would be `contents` itself; fails with
/// [`Error::PatchOutOfBounds`], writing nothing, when the splices do not fit (see [`splice`]).
pub fn replace_file_spliced(
    path: &Path,
    original: &std::fs::Metadata,
    contents: &[u8],
    splices: &[Splice<'_>],
) -> Result<bool> {
    let Some(pieces) = splice_pieces(contents, splices) else {
        let misfit = splices
            .iter()
            .find(|splice| {
                splice
                    .offset
                    .checked_add(splice.len as u64)
                    .is_none_or(|end| end > contents.len() as u64)
            })
            .or(splices.first());
        return Err(Error::PatchOutOfBounds {
            path: path.to_path_buf(),
            offset: misfit.map_or(0, |splice| splice.offset),
            len: misfit.map_or(0, |splice| splice.len),
            size: contents.len() as u64,
        });
    };
    if same_as(&pieces, contents) {
        return Ok(false);
    }
    let size = pieces.iter().map(|piece| piece.len()).sum();
    let mut replacement = Replacement::beside(path)?;
    let temp = replacement.path().to_path_buf();
    let mut writer = SparseWriter::new(replacement.file(), size);
    for piece in pieces {
        writer.write(piece).map_err(write_error(&temp, path))?;
    }
    writer.finish().map_err(write_error(&temp, path))?;
    replacement.commit(original)?;
    Ok(true)
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
            .map(|occurrence| occurrence.splice(&relocations))
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

    /// A file of `size` bytes: text, with a run of zeros (a hole when rewritten) in the middle.
    fn sample(size: usize) -> Vec<u8> {
        (0..size)
            .map(|at| {
                if (100_000..240_000).contains(&at) {
                    0
                } else {
                    b"0123456789/nix/store\n"[at % 21]
                }
            })
            .collect()
    }

    fn temporaries(dir: &Path) -> Vec<std::ffi::OsString> {
        fs_err::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .filter(|name| name.as_encoded_bytes().starts_with(b".storepatch-"))
            .collect()
    }

    #[test]
    fn spliced_rewrite_streams_changes_of_any_length_across_blocks() {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lib.txt");
        let outside = dir.path().join("outside-link");
        let original = sample(300_000);
        fs_err::write(&path, &original).unwrap();
        fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o751)).unwrap();
        fs_err::hard_link(&path, &outside).unwrap();
        let long = vec![b'L'; 70_000];
        let splices = [
            // Shorter and longer, straddling the first block edge, inside the zeros, a long
            // insertion, and at the very end.
            Splice {
                offset: 3,
                len: 5,
                bytes: b"",
            },
            Splice {
                offset: 65_535,
                len: 2,
                bytes: b"/build/venv",
            },
            Splice {
                offset: 131_072,
                len: 0,
                bytes: b"inserted",
            },
            Splice {
                offset: 131_073,
                len: 10,
                bytes: &long,
            },
            Splice {
                offset: 299_990,
                len: 10,
                bytes: b"/end",
            },
        ];
        let metadata = fs_err::symlink_metadata(&path).unwrap();
        assert_eq!(splice_changes(&original, &splices), Some(true));
        assert!(replace_file_spliced(&path, &metadata, &original, &splices).unwrap());
        assert_eq!(
            fs_err::read(&path).unwrap(),
            splice(&original, &splices).unwrap()
        );
        let after = fs_err::symlink_metadata(&path).unwrap();
        assert_eq!(after.mode() & 0o7777, 0o751);
        assert_ne!(after.ino(), metadata.ino());
        // The other name of the old inode keeps the old contents.
        assert_eq!(fs_err::read(&outside).unwrap(), original);
        assert!(temporaries(dir.path()).is_empty());
    }

    #[test]
    fn spliced_rewrite_that_changes_nothing_touches_nothing() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("activate");
        fs_err::write(&path, b"ab/x").unwrap();
        let metadata = fs_err::symlink_metadata(&path).unwrap();
        let same = [Splice {
            offset: 2,
            len: 2,
            bytes: b"/x",
        }];
        // Two changes that give the same bytes back: `a` dropped, `b` becoming `ab`.
        let shifted = [
            Splice {
                offset: 0,
                len: 1,
                bytes: b"",
            },
            Splice {
                offset: 1,
                len: 1,
                bytes: b"ab",
            },
        ];
        for splices in [&same[..], &shifted[..], &[]] {
            assert_eq!(splice_changes(b"ab/x", splices), Some(false));
            assert!(!replace_file_spliced(&path, &metadata, b"ab/x", splices).unwrap());
        }
        assert_eq!(
            fs_err::symlink_metadata(&path).unwrap().ino(),
            metadata.ino()
        );
        assert!(temporaries(dir.path()).is_empty());
    }

    #[test]
    fn spliced_rewrite_that_does_not_fit_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("script");
        fs_err::write(&path, b"abcd").unwrap();
        let metadata = fs_err::symlink_metadata(&path).unwrap();
        let beyond = [Splice {
            offset: 3,
            len: 2,
            bytes: b"xy",
        }];
        let overlapping = [
            Splice {
                offset: 0,
                len: 3,
                bytes: b"x",
            },
            Splice {
                offset: 2,
                len: 1,
                bytes: b"y",
            },
        ];
        for splices in [&beyond[..], &overlapping[..]] {
            assert_eq!(splice_changes(b"abcd", splices), None);
            let err = replace_file_spliced(&path, &metadata, b"abcd", splices).unwrap_err();
            assert!(matches!(err, Error::PatchOutOfBounds { .. }), "{err}");
            assert!(err.to_string().contains("script"), "{err}");
        }
        assert_eq!(fs_err::read(&path).unwrap(), b"abcd");
        assert!(temporaries(dir.path()).is_empty());
    }

    proptest::proptest! {
        /// The pieces are the spliced copy, and a change is reported exactly when that copy
        /// differs.
        #[test]
        fn spliced_pieces_are_the_spliced_copy(
            contents in proptest::collection::vec(b'a'..=b'c', 0..40),
            changes in proptest::collection::vec(
                (0u64..45, 0usize..4, proptest::collection::vec(b'a'..=b'c', 0..4)),
                0..5,
            ),
        ) {
            let splices: Vec<Splice<'_>> = changes
                .iter()
                .map(|(offset, len, bytes)| Splice { offset: *offset, len: *len, bytes })
                .collect();
            let copy = splice(&contents, &splices);
            let pieces = splice_pieces(&contents, &splices);
            proptest::prop_assert_eq!(pieces.as_ref().map(|pieces| pieces.concat()), copy.clone());
            proptest::prop_assert_eq!(
                splice_changes(&contents, &splices),
                copy.map(|copy| copy != contents)
            );
        }
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
