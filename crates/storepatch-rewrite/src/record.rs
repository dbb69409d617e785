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
    fn digest<D: sha2::Digest>(pieces: &[&[u8]]) -> Vec<u8> {
        let mut hasher = D::new();
        for piece in pieces {
            hasher.update(piece);
        }
        hasher.finalize().to_vec()
    }
    let digest = match algorithm {
        b"sha256" => digest::<sha2::Sha256>(pieces),
        b"sha384" => digest::<sha2::Sha384>(pieces),
        b"sha512" => digest::<sha2::Sha512>(pieces),
        _ => return None,
    };
    let mut out = algorithm.to_vec();
    out.push(b'=');
    out.extend_from_slice(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(digest)
            .as_bytes(),
    );
    Some(out)
}

impl RecordLine {
    /// `ALGORITHM=DIGEST,SIZE` for `contents`, if that differs from the line's (and the algorithm
    /// is one [`record_hash`] knows).
    pub fn updated_fields(&self, contents: &[u8]) -> Option<Vec<u8>> {
        self.updated_fields_of_pieces(&[contents])
    }

    /// [`RecordLine::updated_fields`] for the contents the pieces make written one after
    /// another (such as [`crate::splice_pieces`] gives), hashed piece by piece without joining
    /// them.
    pub fn updated_fields_of_pieces(&self, pieces: &[&[u8]]) -> Option<Vec<u8>> {
        let mut fields = record_hash_of_pieces(&self.algorithm, pieces)?;
        fields.push(b',');
        let size: usize = pieces.iter().map(|piece| piece.len()).sum();
        fields.extend_from_slice(size.to_string().as_bytes());
        (fields != self.current).then_some(fields)
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
        assert_eq!(
            line.updated_fields_of_pieces(&[b"", b"a"]).unwrap(),
            b"sha256=ypeBEsobvcr6wjGzmiPcTaeG7_gUfE5yuYB3ha_uSLs,1"
        );
        assert_eq!(line.updated_fields_of_pieces(&[b"", b""]), None);
    }
}
