//! Wheel `RECORD` files: the hash and size of every installed file (`path,sha256=…,size`).
//!
//! Relocating a venv changes files that `RECORD` lists with a hash: the console scripts (their
//! shebang names the venv), `direct_url.json`, `.pth` files. Their lines then name a hash and
//! size the files no longer have. [`RecordLine::updated_fields`] gives the fields for the new
//! contents; every other byte of the file stays as it was. Both uv and pip record a console
//! script with the hash of the script as written (shebang included) and byte-compiled files with
//! empty hash and size (`…/__pycache__/x.pyc,,`), which need nothing.
//!
//! The format: one CSV row per file, the path first (relative to the directory holding the
//! `.dist-info` directory, quoted when it holds a comma or a quote), then `ALGORITHM=DIGEST`
//! with the digest in URL-safe base64 without padding, then the size in bytes.
//!
//! See: the wheel binary distribution format, "The .dist-info directory" (packaging.python.org,
//! "Recording installed projects").
use std::ops::Range;

use base64::Engine as _;

use crate::Splice;
use crate::relocate::Piece;

/// One line of a `RECORD` file that has a hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordLine {
    /// The path, unquoted (relative to the `.dist-info` directory's parent, or absolute).
    pub path: Vec<u8>,
    /// The algorithm named, such as `sha256`.
    pub algorithm: Vec<u8>,
    /// Where `ALGORITHM=DIGEST,SIZE` is in the file (the last two fields).
    pub fields: Range<usize>,
    /// Those bytes.
    pub current: Vec<u8>,
}

/// The lines of `contents` (a `RECORD` file) that carry a hash, in order; lines without one
/// (`RECORD,,`, byte-compiled files) and lines that are not `path,hash,size` are skipped.
pub fn record_lines(contents: &[u8]) -> Vec<RecordLine> {
    record_lines_iter(contents).collect()
}

/// [`record_lines`] one at a time, for a caller that keeps only a few of them.
pub fn record_lines_iter(contents: &[u8]) -> impl Iterator<Item = RecordLine> + '_ {
    let mut start = 0;
    std::iter::from_fn(move || {
        while start < contents.len() {
            let end =
                memchr::memchr(b'\n', &contents[start..]).map_or(contents.len(), |at| start + at);
            let mut line_end = end;
            if line_end > start && contents[line_end - 1] == b'\r' {
                line_end -= 1;
            }
            let line = parse_line(&contents[start..line_end], start);
            start = end + 1;
            if line.is_some() {
                return line;
            }
        }
        None
    })
}

fn parse_line(line: &[u8], offset: usize) -> Option<RecordLine> {
    let size_comma = memchr::memrchr(b',', line)?;
    let hash_comma = memchr::memrchr(b',', &line[..size_comma])?;
    let hash = &line[hash_comma + 1..size_comma];
    let size = &line[size_comma + 1..];
    let equals = memchr::memchr(b'=', hash)?;
    if equals == 0 || size.is_empty() || !size.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let path = unquote(&line[..hash_comma])?;
    Some(RecordLine {
        path,
        algorithm: hash[..equals].to_vec(),
        fields: offset + hash_comma + 1..offset + line.len(),
        current: line[hash_comma + 1..].to_vec(),
    })
}

/// A CSV field: as it is, or without its quotes (`""` inside is one `"`).
fn unquote(field: &[u8]) -> Option<Vec<u8>> {
    let Some(inner) = field
        .strip_prefix(b"\"")
        .and_then(|rest| rest.strip_suffix(b"\""))
    else {
        return (!field.is_empty() && !field.contains(&b'"')).then(|| field.to_vec());
    };
    let mut out = Vec::with_capacity(inner.len());
    let mut bytes = inner.iter();
    while let Some(&byte) = bytes.next() {
        if byte == b'"' && bytes.next() != Some(&b'"') {
            return None;
        }
        out.push(byte);
    }
    Some(out)
}

/// The digest of `contents` as a `RECORD` names it (`sha256=…`), for the algorithms wheels use
/// (`sha256`, `sha384`, `sha512`); `None` for any other.
pub fn record_hash(algorithm: &[u8], contents: &[u8]) -> Option<Vec<u8>> {
    record_hash_of_pieces(algorithm, &[contents])
}

/// [`record_hash`] of the pieces written one after another, without joining them.
fn record_hash_of_pieces(algorithm: &[u8], pieces: &[&[u8]]) -> Option<Vec<u8>> {
    let mut digest = Digest::new(algorithm)?;
    for piece in pieces {
        digest.update(piece);
    }
    Some(digest.finish(algorithm))
}

/// A digest being taken with one of the algorithms [`record_hash`] knows.
enum Digest {
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Digest {
    fn new(algorithm: &[u8]) -> Option<Self> {
        use sha2::Digest as _;
        match algorithm {
            b"sha256" => Some(Self::Sha256(sha2::Sha256::new())),
            b"sha384" => Some(Self::Sha384(sha2::Sha384::new())),
            b"sha512" => Some(Self::Sha512(sha2::Sha512::new())),
            _ => None,
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        use sha2::Digest as _;
        match self {
            Self::Sha256(hasher) => hasher.update(bytes),
            Self::Sha384(hasher) => hasher.update(bytes),
            Self::Sha512(hasher) => hasher.update(bytes),
        }
    }

    /// `ALGORITHM=DIGEST`.
    fn finish(self, algorithm: &[u8]) -> Vec<u8> {
        use sha2::Digest as _;
        let digest = match self {
            Self::Sha256(hasher) => hasher.finalize().to_vec(),
            Self::Sha384(hasher) => hasher.finalize().to_vec(),
            Self::Sha512(hasher) => hasher.finalize().to_vec(),
        };
        let mut out = algorithm.to_vec();
        out.push(b'=');
        out.extend_from_slice(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(digest)
                .as_bytes(),
        );
        out
    }
}

/// Unchanged bytes of a file are hashed this many at a time (see
/// [`RecordLine::updated_fields_spliced`]).
const HASH_STRETCH: usize = 256 << 10;

impl RecordLine {
    /// `ALGORITHM=DIGEST,SIZE` for `contents`, if that differs from the line's (and the algorithm
    /// is one [`record_hash`] knows).
    pub fn updated_fields(&self, contents: &[u8]) -> Option<Vec<u8>> {
        self.updated_fields_spliced(contents, &[], &mut |_| {})
            .flatten()
    }

    /// [`RecordLine::updated_fields`] for `contents` with `splices` applied, hashed a stretch at
    /// a time without joining anything: after each stretch, `done(offset)` says that the bytes
    /// of `contents` before `offset` are not looked at again (a mapped file lets go of them).
    /// The outer `None` unless the splices are sorted, in bounds and do not overlap.
    pub fn updated_fields_spliced(
        &self,
        contents: &[u8],
        splices: &[Splice<'_>],
        done: &mut dyn FnMut(usize),
    ) -> Option<Option<Vec<u8>>> {
        // Checked whatever the algorithm.
        let pieces = crate::relocate::spliced(contents.len(), splices)?;
        let Some(mut digest) = Digest::new(&self.algorithm) else {
            return Some(None);
        };
        let mut size = 0;
        for piece in pieces {
            match piece {
                Piece::New(bytes) => {
                    digest.update(bytes);
                    size += bytes.len();
                }
                Piece::Kept(range) => {
                    size += range.len();
                    let mut start = range.start;
                    while start < range.end {
                        let end = range.end.min(start.saturating_add(HASH_STRETCH));
                        digest.update(&contents[start..end]);
                        done(end);
                        start = end;
                    }
                }
            }
        }
        let mut fields = digest.finish(&self.algorithm);
        fields.push(b',');
        fields.extend_from_slice(size.to_string().as_bytes());
        Some((fields != self.current).then_some(fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_with_a_hash_and_their_fields() {
        let record =
            b"../../../bin/markdown_py,sha256=K18qXkbllYQxiRdmPfngrbrIktkqMeZDCk6dmzHvfMw,311\r\n\
            markdown/__pycache__/core.cpython-311.pyc,,\n\
            \"a,\"\"b\"\".txt\",sha512=x,1\n\
            markdown-3.11.3.dist-info/RECORD,,\n\
            broken,sha256=,\n";
        let lines = record_lines(record);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].path, b"../../../bin/markdown_py");
        assert_eq!(lines[0].algorithm, b"sha256");
        assert_eq!(
            &record[lines[0].fields.clone()],
            b"sha256=K18qXkbllYQxiRdmPfngrbrIktkqMeZDCk6dmzHvfMw,311"
        );
        assert_eq!(lines[1].path, b"a,\"b\".txt");
        assert_eq!(lines[1].current, b"sha512=x,1");
    }

    #[test]
    fn hashes_are_urlsafe_base64_without_padding() {
        // sha256 of the empty file, as pip and uv write it for an empty file.
        assert_eq!(
            record_hash(b"sha256", b"").unwrap(),
            b"sha256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"
        );
        assert_eq!(record_hash(b"md5", b""), None);
        // Hashed in pieces, as restore does for a file it has not rewritten yet: the same.
        assert_eq!(
            record_hash_of_pieces(b"sha512", &[b"ab", b"", b"cd"]),
            record_hash(b"sha512", b"abcd")
        );
        let line = &record_lines(b"x,sha256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU,0\n")[0];
        assert_eq!(line.updated_fields(b""), None);
        assert_eq!(
            line.updated_fields(b"a").unwrap(),
            b"sha256=ypeBEsobvcr6wjGzmiPcTaeG7_gUfE5yuYB3ha_uSLs,1"
        );
        // `x` spliced out for `a`: the fields of `a`.
        let splice = [Splice {
            offset: 0,
            len: 1,
            bytes: b"a",
        }];
        assert_eq!(
            line.updated_fields_spliced(b"x", &splice, &mut |_| {}),
            Some(Some(
                b"sha256=ypeBEsobvcr6wjGzmiPcTaeG7_gUfE5yuYB3ha_uSLs,1".to_vec()
            ))
        );
        // Out of bounds: no fields at all, whatever the algorithm.
        assert_eq!(line.updated_fields_spliced(b"", &splice, &mut |_| {}), None);
        let md5 = &record_lines(b"x,md5=AAAA,0\n")[0];
        assert_eq!(md5.updated_fields_spliced(b"", &splice, &mut |_| {}), None);
        assert_eq!(
            md5.updated_fields_spliced(b"x", &splice, &mut |_| {}),
            Some(None)
        );
    }

    /// Sorted, non-overlapping splices of `len` bytes, from (gap, length, replacement) triples.
    fn splices_of(len: usize, parts: &[(usize, usize, Vec<u8>)]) -> Vec<Splice<'_>> {
        let mut position = 0;
        let mut splices = Vec::new();
        for (gap, cut, bytes) in parts {
            let start = position + gap;
            let end = start + cut;
            if end > len {
                break;
            }
            splices.push(Splice {
                offset: start as u64,
                len: *cut,
                bytes,
            });
            position = end;
        }
        splices
    }

    proptest::proptest! {
        /// Spliced and hashed a stretch at a time: the fields of the spliced contents written out,
        /// with every byte behind let go of only once, in order, and never beyond the end.
        #[test]
        fn spliced_fields_are_those_of_the_spliced_contents(
            contents in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..(3 * HASH_STRETCH)),
            parts in proptest::collection::vec(
                (0..HASH_STRETCH, 0..64usize, proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)),
                0..6,
            ),
            algorithm in proptest::sample::select(vec!["sha256", "sha384", "sha512"]),
        ) {
            let splices = splices_of(contents.len(), &parts);
            let line = &record_lines(format!("f,{algorithm}=x,0\n").as_bytes())[0];
            let whole = crate::splice(&contents, &splices).unwrap_or_else(|| contents.clone());
            let mut released = Vec::new();
            let fields = line.updated_fields_spliced(&contents, &splices, &mut |offset| released.push(offset));
            proptest::prop_assert_eq!(fields, Some(line.updated_fields(&whole)));
            proptest::prop_assert!(released.windows(2).all(|pair| pair[0] < pair[1]));
            proptest::prop_assert!(released.iter().all(|&offset| offset <= contents.len()));
        }
    }
}
