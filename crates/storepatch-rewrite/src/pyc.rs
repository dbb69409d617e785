//! Python bytecode (`.pyc`): reading and writing `CPython`'s marshal format, so that the file names
//! code objects record (`co_filename`) can move with the venv.
//!
//! `compileall` (and `UV_COMPILE_BYTECODE`) writes the source's path at compile time into every
//! code object of a `.pyc`: the build directory of a fixed-output derivation, say. A `.pyc` is a
//! 16-byte header (magic number, flags, then the source's mtime and size or its hash: PEP 552)
//! and one marshal stream. Every string in the stream carries its own length and back-references
//! (`r`) count objects, not bytes, so a string may change length as long as the stream is written
//! again as a whole; nothing else in the file points at an offset. The header is kept as it is:
//! it describes the source file, which does not change, so a timestamp-based `.pyc` still matches
//! its source and a hash-based one still has the source's hash.
//!
//! [`Bytecode::parse`] reads the whole stream into a tree (refusing anything it does not know:
//! other magic numbers, unknown type codes, truncation, references to nothing, trailing bytes),
//! [`Bytecode::write`] writes it again, byte for byte the same unless file names were replaced.
//! Only strings that are some code object's `co_filename` are ever replaced.
//!
//! See: `CPython`'s `Python/marshal.c` (`r_object`, `w_object`) and
//! `Include/internal/pycore_magic_number.h` (magic numbers per version).
use std::collections::BTreeMap;
use std::ops::Range;

use crate::Relocation;

/// Length of the `.pyc` header before the marshal stream (Python 3.7+, PEP 552).
pub const PYC_HEADER_LEN: usize = 16;

/// Set on a type code when the object is remembered for later back-references.
const FLAG_REF: u8 = 0x80;

/// How deeply objects may nest. `CPython` reads up to 2000 (`MAX_MARSHAL_STACK_DEPTH`), but
/// compiled modules nest by their nested functions, classes and constant tuples, nowhere near
/// that; reading recursively to 2000 could overflow the stack of a worker thread. Deeper files
/// are refused (and so reported and left as they are).
const MAX_DEPTH: usize = 256;

/// How code objects are laid out in the marshal stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeLayout {
    /// Python 3.8 to 3.10: six integers, eight objects (`co_filename` is the seventh), the first
    /// line number, the line table.
    Python38,
    /// Python 3.11 and later: five integers, eight objects (`co_filename` is the sixth), the first
    /// line number, the line table and the exception table.
    Python311,
}

impl CodeLayout {
    /// (integers before the objects, objects before the first line number, index of
    /// `co_filename` among them, objects after the first line number).
    const fn shape(self) -> (usize, usize, usize, usize) {
        match self {
            Self::Python38 => (6, 8, 6, 1),
            Self::Python311 => (5, 8, 5, 2),
        }
    }
}

/// The `CPython` minor version (3.x) a `.pyc` magic number belongs to, and its code layout:
/// 3.8 to 3.14, from the first magic number with that version's code object fields to the last.
pub fn python_version(magic: u16) -> Option<(u8, CodeLayout)> {
    match magic {
        3410..=3413 => Some((8, CodeLayout::Python38)),
        3420..=3425 => Some((9, CodeLayout::Python38)),
        3430..=3439 => Some((10, CodeLayout::Python38)),
        3460..=3495 => Some((11, CodeLayout::Python311)),
        3500..=3531 => Some((12, CodeLayout::Python311)),
        3550..=3571 => Some((13, CodeLayout::Python311)),
        3600..=3649 => Some((14, CodeLayout::Python311)),
        _ => None,
    }
}

/// Why a `.pyc` could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PycError {
    /// Shorter than the header, or the header has no `\r\n` after the magic number.
    #[error("not Python bytecode: no .pyc header")]
    NoHeader,
    /// A magic number of a Python version this reader does not know.
    #[error("magic number {magic} is not one of CPython 3.8 to 3.14")]
    UnknownMagic {
        /// The number (little-endian, before `\r\n`).
        magic: u16,
    },
    /// The stream ends inside an object.
    #[error("truncated at offset {offset}")]
    Truncated {
        /// Where the missing bytes would start.
        offset: usize,
    },
    /// A type code marshal does not have (or not in a .pyc).
    #[error("unknown marshal type code {code:#04x} at offset {offset}")]
    UnknownType {
        /// The type byte.
        code: u8,
        /// Where it is.
        offset: usize,
    },
    /// A size field that is negative or larger than what follows.
    #[error("size {size} out of range at offset {offset}")]
    SizeOutOfRange {
        /// The size read.
        size: i64,
        /// Where it is.
        offset: usize,
    },
    /// A back-reference to an object that is not (yet) there.
    #[error("back-reference {index} at offset {offset} names no earlier object")]
    BadReference {
        /// The reference's index.
        index: u32,
        /// Where it is.
        offset: usize,
    },
    /// A NULL where an object must be.
    #[error("NULL object at offset {offset}")]
    Null {
        /// Where it is.
        offset: usize,
    },
    /// Nested deeper than this reader goes.
    #[error("nested deeper than {MAX_DEPTH} objects at offset {offset}")]
    TooDeep {
        /// Where the limit was reached.
        offset: usize,
    },
    /// The top-level object is not a code object.
    #[error("the top-level object is not a code object")]
    NotCode,
    /// A code object whose file name is not a string.
    #[error("the code object at offset {offset} has a file name that is not a string")]
    FilenameNotString {
        /// Where the code object starts.
        offset: usize,
    },
    /// Bytes after the code object.
    #[error("{len} bytes after the code object, at offset {offset}")]
    TrailingBytes {
        /// Where they start.
        offset: usize,
        /// How many.
        len: usize,
    },
}

/// One object of the stream. Its type byte (with [`FLAG_REF`]) is kept as read.
#[derive(Clone, Debug)]
enum Node {
    /// Written back as read: singletons, numbers, back-references (bytes of the whole object).
    Atom(Range<usize>),
    /// `s` (bytes) and the string codes `t u a A z Z`: type byte and the bytes of the contents.
    Text { code: u8, data: Range<usize> },
    /// Tuples, lists, sets, frozensets and slices: the type byte and the items.
    Sequence { code: u8, items: Vec<usize> },
    /// A dict: keys and values alternating, written with the NULL that ends it.
    Dict { code: u8, items: Vec<usize> },
    /// A code object: the type byte, then integers (4 bytes, as read) and objects in order.
    Code { code: u8, parts: Vec<Part> },
}

#[derive(Clone, Copy, Debug)]
enum Part {
    Integer(usize),
    Object(usize),
}

/// A `.pyc` read into a tree: the header, and every object of the marshal stream.
#[derive(Debug)]
pub struct Bytecode<'data> {
    data: &'data [u8],
    minor: u8,
    nodes: Vec<Node>,
    /// Where each node's object is in the stream.
    spans: Vec<Range<usize>>,
    root: usize,
    /// The string nodes that are some code object's `co_filename`, in stream order, once each.
    filenames: Vec<usize>,
}

/// One file name a relocation rewrites: the string object at `offset` (`len` bytes, type byte
/// included) becomes `bytes`. Applying every one of a file as splices gives [`Bytecode::write`]'s
/// output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilenameRewrite {
    /// Where the string object starts.
    pub offset: u64,
    /// Its length in the stream, type byte and size included.
    pub len: usize,
    /// The object as written now, for checking that the file did not change.
    pub old: Vec<u8>,
    /// The object with the new file name.
    pub bytes: Vec<u8>,
    /// Which relocation (index into the slice given).
    pub relocation: usize,
}

impl<'data> Bytecode<'data> {
    /// Reads a whole `.pyc` file.
    pub fn parse(data: &'data [u8]) -> Result<Self, PycError> {
        if data.len() < PYC_HEADER_LEN || data[2..4] != *b"\r\n" {
            return Err(PycError::NoHeader);
        }
        let magic = u16::from_le_bytes([data[0], data[1]]);
        let (minor, layout) = python_version(magic).ok_or(PycError::UnknownMagic { magic })?;
        let mut reader = Reader {
            data,
            position: PYC_HEADER_LEN,
            layout,
            nodes: Vec::new(),
            spans: Vec::new(),
            references: Vec::new(),
            filenames: Vec::new(),
            depth: 0,
        };
        let root = reader.object()?;
        if !matches!(reader.nodes[root], Node::Code { .. }) {
            return Err(PycError::NotCode);
        }
        if reader.position != data.len() {
            return Err(PycError::TrailingBytes {
                offset: reader.position,
                len: data.len() - reader.position,
            });
        }
        let mut seen = std::collections::BTreeSet::new();
        let filenames = reader
            .filenames
            .iter()
            .copied()
            .filter(|&node| seen.insert(node))
            .collect();
        Ok(Self {
            data,
            minor,
            nodes: reader.nodes,
            spans: reader.spans,
            root,
            filenames,
        })
    }

    /// The Python version the header names: (3, minor).
    pub fn python_version(&self) -> (u8, u8) {
        (3, self.minor)
    }

    /// The file names the code objects record, in stream order, each once.
    pub fn filenames(&self) -> Vec<&'data [u8]> {
        self.filenames
            .iter()
            .filter_map(|&node| match &self.nodes[node] {
                Node::Text { data, .. } => Some(&self.data[data.clone()]),
                _ => None,
            })
            .collect()
    }

    /// Writes the file again: the header as it was, then every object, with the file names in
    /// `replaced` (index into [`Self::filenames`] -> new name) replaced.
    pub fn write(&self, replaced: &BTreeMap<usize, Vec<u8>>) -> Vec<u8> {
        let by_node: BTreeMap<usize, &[u8]> = replaced
            .iter()
            .filter_map(|(&index, name)| Some((*self.filenames.get(index)?, name.as_slice())))
            .collect();
        let mut out = Vec::with_capacity(self.data.len());
        out.extend_from_slice(&self.data[..PYC_HEADER_LEN]);
        self.write_node(self.root, &by_node, &mut out);
        out
    }

    fn write_node(&self, node: usize, replaced: &BTreeMap<usize, &[u8]>, out: &mut Vec<u8>) {
        match &self.nodes[node] {
            Node::Atom(range) => out.extend_from_slice(&self.data[range.clone()]),
            Node::Text { code, data } => match replaced.get(&node) {
                Some(name) => encode_text(*code, name, out),
                None => write_text(*code, &self.data[data.clone()], out),
            },
            Node::Sequence { code, items } => {
                out.push(*code);
                match code & !FLAG_REF {
                    // Counts fit: they were read from a field of the same width.
                    b')' => out.push(items.len() as u8),
                    b':' => {}
                    _ => out.extend_from_slice(&(items.len() as u32).to_le_bytes()),
                }
                for &item in items {
                    self.write_node(item, replaced, out);
                }
            }
            Node::Dict { code, items } => {
                out.push(*code);
                for &item in items {
                    self.write_node(item, replaced, out);
                }
                out.push(b'0');
            }
            Node::Code { code, parts } => {
                out.push(*code);
                for part in parts {
                    match *part {
                        Part::Integer(start) => out.extend_from_slice(&self.data[start..start + 4]),
                        Part::Object(item) => self.write_node(item, replaced, out),
                    }
                }
            }
        }
    }

    /// The file names that start with some relocation's `old` (the longest wins), with `old`
    /// replaced by its `new`. A name that would not be valid UTF-8 afterwards is left alone.
    pub fn relocations(&self, relocations: &[Relocation]) -> BTreeMap<usize, (usize, Vec<u8>)> {
        let mut found = BTreeMap::new();
        for (index, name) in self.filenames().into_iter().enumerate() {
            let Some((which, relocation)) = relocations
                .iter()
                .enumerate()
                .filter(|(_, relocation)| name.starts_with(&relocation.old))
                .max_by_key(|(which, relocation)| (relocation.old.len(), usize::MAX - which))
            else {
                continue;
            };
            let mut new = relocation.new.clone();
            new.extend_from_slice(&name[relocation.old.len()..]);
            if new != name && std::str::from_utf8(&new).is_ok() {
                found.insert(index, (which, new));
            }
        }
        found
    }
}

/// Writes a string object with the same type as read.
fn write_text(code: u8, data: &[u8], out: &mut Vec<u8>) {
    out.push(code);
    if matches!(code & !FLAG_REF, b'z' | b'Z') {
        out.push(data.len() as u8);
    } else {
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(data);
}

/// Writes a new file name in place of a string object of type `code`: the same kind (interned or
/// not, remembered or not) in the narrowest form that holds it, as marshal would.
fn encode_text(code: u8, name: &[u8], out: &mut Vec<u8>) {
    let flag = code & FLAG_REF;
    let kind = code & !FLAG_REF;
    let interned = matches!(kind, b't' | b'A' | b'Z');
    let new_kind = if name.is_ascii() {
        if (name.len() <= 255 && matches!(kind, b'z' | b'Z')) || matches!(kind, b'u' | b't') {
            kind
        } else if interned {
            b'A'
        } else {
            b'a'
        }
    } else if interned {
        b't'
    } else {
        b'u'
    };
    write_text(new_kind | flag, name, out);
}

/// The rewrites of `relocations` in a whole `.pyc` file, as splices over `data`; empty when no
/// file name starts with an `old`.
pub fn filename_rewrites(
    data: &[u8],
    relocations: &[Relocation],
) -> Result<Vec<FilenameRewrite>, PycError> {
    let bytecode = Bytecode::parse(data)?;
    let mut rewrites = Vec::new();
    for (index, (relocation, name)) in bytecode.relocations(relocations) {
        let node = bytecode.filenames[index];
        let Node::Text { code, .. } = bytecode.nodes[node] else {
            continue;
        };
        let span = bytecode.spans[node].clone();
        let mut bytes = Vec::new();
        encode_text(code, &name, &mut bytes);
        rewrites.push(FilenameRewrite {
            offset: span.start as u64,
            len: span.len(),
            old: data[span].to_vec(),
            bytes,
            relocation,
        });
    }
    rewrites.sort_by_key(|rewrite| rewrite.offset);
    Ok(rewrites)
}

struct Reader<'data> {
    data: &'data [u8],
    position: usize,
    layout: CodeLayout,
    nodes: Vec<Node>,
    /// Where each node's object is in the stream.
    spans: Vec<Range<usize>>,
    /// Remembered objects (`FLAG_REF`), by reference index; `None` while still being read where
    /// `CPython` only registers them when complete (code objects, frozensets, slices).
    references: Vec<Option<usize>>,
    /// The `co_filename` string node of every code object, in stream order.
    filenames: Vec<usize>,
    depth: usize,
}

impl Reader<'_> {
    fn take(&mut self, len: usize) -> Result<Range<usize>, PycError> {
        let start = self.position;
        let end = start
            .checked_add(len)
            .filter(|&end| end <= self.data.len())
            .ok_or(PycError::Truncated { offset: start })?;
        self.position = end;
        Ok(start..end)
    }

    fn byte(&mut self) -> Result<u8, PycError> {
        let range = self.take(1)?;
        Ok(self.data[range.start])
    }

    fn long(&mut self) -> Result<i32, PycError> {
        let range = self.take(4)?;
        let bytes = &self.data[range];
        Ok(i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    /// A size field of `width` bytes that must not exceed what is left (each unit being at least
    /// `unit` bytes), so nothing is allocated from an unchecked size.
    fn size(&mut self, width: usize, unit: usize) -> Result<usize, PycError> {
        let offset = self.position;
        let size = if width == 1 {
            i64::from(self.byte()?)
        } else {
            i64::from(self.long()?)
        };
        let left = (self.data.len() - self.position) as u64;
        match u64::try_from(size) {
            Ok(count) if count.saturating_mul(unit as u64) <= left => Ok(count as usize),
            _ => Err(PycError::SizeOutOfRange { size, offset }),
        }
    }

    fn object(&mut self) -> Result<usize, PycError> {
        let start = self.position;
        let code = self.byte()?;
        if self.depth >= MAX_DEPTH {
            return Err(PycError::TooDeep { offset: start });
        }
        self.depth += 1;
        let node = self.nodes.len();
        self.nodes.push(Node::Atom(start..start));
        self.spans.push(start..start);
        let remembered = code & FLAG_REF != 0;
        let reference = remembered.then(|| {
            self.references.push(None);
            self.references.len() - 1
        });
        let kind = code & !FLAG_REF;
        // Containers can be referred to while their items are read; code objects, frozensets and
        // slices only once complete (CPython's r_ref_reserve / r_ref_insert).
        if let Some(index) = reference
            && matches!(kind, b'(' | b')' | b'[' | b'{' | b'<')
        {
            self.references[index] = Some(node);
        }
        let value = match kind {
            b'N' | b'F' | b'T' | b'S' | b'.' => Node::Atom(start..self.position),
            b'0' => return Err(PycError::Null { offset: start }),
            b'i' => {
                self.take(4)?;
                Node::Atom(start..self.position)
            }
            b'I' | b'g' => {
                self.take(8)?;
                Node::Atom(start..self.position)
            }
            b'y' => {
                self.take(16)?;
                Node::Atom(start..self.position)
            }
            b'f' => {
                let len = self.size(1, 1)?;
                self.take(len)?;
                Node::Atom(start..self.position)
            }
            b'x' => {
                for _ in 0..2 {
                    let len = self.size(1, 1)?;
                    self.take(len)?;
                }
                Node::Atom(start..self.position)
            }
            b'l' => {
                let offset = self.position;
                let digits = i64::from(self.long()?).unsigned_abs();
                let len = usize::try_from(digits.saturating_mul(2)).unwrap_or(usize::MAX);
                if len > self.data.len() - self.position {
                    return Err(PycError::SizeOutOfRange {
                        size: digits.cast_signed(),
                        offset,
                    });
                }
                self.take(len)?;
                Node::Atom(start..self.position)
            }
            b's' | b't' | b'u' | b'a' | b'A' => {
                let len = self.size(4, 1)?;
                Node::Text {
                    code,
                    data: self.take(len)?,
                }
            }
            b'z' | b'Z' => {
                let len = self.size(1, 1)?;
                Node::Text {
                    code,
                    data: self.take(len)?,
                }
            }
            b'r' => {
                let index = self.long()?.cast_unsigned();
                match self.references.get(index as usize) {
                    Some(Some(_)) => Node::Atom(start..self.position),
                    _ => {
                        return Err(PycError::BadReference {
                            index,
                            offset: start,
                        });
                    }
                }
            }
            b'(' | b')' | b'[' | b'<' | b'>' => {
                let count = self.size(if kind == b')' { 1 } else { 4 }, 1)?;
                let mut items = Vec::with_capacity(count);
                for _ in 0..count {
                    items.push(self.object()?);
                }
                Node::Sequence { code, items }
            }
            b':' => {
                let mut items = Vec::with_capacity(3);
                for _ in 0..3 {
                    items.push(self.object()?);
                }
                Node::Sequence { code, items }
            }
            b'{' => {
                let mut items = Vec::new();
                loop {
                    if self.data.get(self.position) == Some(&b'0') {
                        self.position += 1;
                        break;
                    }
                    items.push(self.object()?);
                    items.push(self.object()?);
                }
                Node::Dict { code, items }
            }
            b'c' => self.code(code, start)?,
            _ => {
                return Err(PycError::UnknownType {
                    code,
                    offset: start,
                });
            }
        };
        if let Some(index) = reference {
            self.references[index] = Some(node);
        }
        self.nodes[node] = value;
        self.spans[node] = start..self.position;
        self.depth -= 1;
        Ok(node)
    }

    fn code(&mut self, code: u8, start: usize) -> Result<Node, PycError> {
        let (integers, objects, filename_at, after) = self.layout.shape();
        let mut parts = Vec::with_capacity(integers + objects + 1 + after);
        for _ in 0..integers {
            parts.push(Part::Integer(self.take(4)?.start));
        }
        let mut filename = None;
        for index in 0..objects {
            let item = self.object()?;
            if index == filename_at {
                filename = Some(item);
            }
            parts.push(Part::Object(item));
        }
        parts.push(Part::Integer(self.take(4)?.start));
        for _ in 0..after {
            parts.push(Part::Object(self.object()?));
        }
        let filename = filename
            .map(|item| self.resolve(item))
            .filter(|&item| {
                matches!(&self.nodes[item], Node::Text { code, .. } if code & !FLAG_REF != b's')
            })
            .ok_or(PycError::FilenameNotString { offset: start })?;
        self.filenames.push(filename);
        Ok(Node::Code { code, parts })
    }

    /// The object a back-reference names (the node itself otherwise).
    fn resolve(&self, node: usize) -> usize {
        if let Node::Atom(range) = &self.nodes[node]
            && self.data.get(range.start).is_some_and(|&code| code == b'r')
            && range.len() == 5
        {
            let bytes = &self.data[range.start + 1..range.end];
            let index = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
            if let Some(Some(target)) = self.references.get(index) {
                return *target;
            }
        }
        node
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3.12 header (magic 3531, timestamp-based).
    fn header() -> Vec<u8> {
        let mut out = 3531u16.to_le_bytes().to_vec();
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&[0; 12]);
        out
    }

    fn short_ascii(code: u8, text: &[u8]) -> Vec<u8> {
        let mut out = vec![code, text.len() as u8];
        out.extend_from_slice(text);
        out
    }

    fn bytes_object(data: &[u8]) -> Vec<u8> {
        let mut out = vec![b's'];
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
        out
    }

    /// A 3.11+ code object with `filename` (an encoded object) and `consts` (encoded objects).
    fn code(filename: &[u8], consts: &[Vec<u8>]) -> Vec<u8> {
        let mut out = vec![b'c' | FLAG_REF];
        out.extend_from_slice(&[0; 20]);
        out.extend_from_slice(&bytes_object(b"\x97\x00"));
        out.push(b')');
        out.push(consts.len() as u8);
        for item in consts {
            out.extend_from_slice(item);
        }
        out.extend_from_slice(b")\x00)\x00s\x00\x00\x00\x00");
        out.extend_from_slice(filename);
        out.extend_from_slice(&short_ascii(b'Z', b"<module>"));
        out.extend_from_slice(&short_ascii(b'Z', b"<module>"));
        out.extend_from_slice(&[1, 0, 0, 0]);
        out.extend_from_slice(&bytes_object(b""));
        out.extend_from_slice(&bytes_object(b""));
        out
    }

    fn pyc(stream: &[u8]) -> Vec<u8> {
        let mut out = header();
        out.extend_from_slice(stream);
        out
    }

    fn relocation(old: &str, new: &str) -> Relocation {
        Relocation {
            old: old.as_bytes().to_vec(),
            new: new.as_bytes().to_vec(),
        }
    }

    #[test]
    fn nested_code_objects_share_the_file_name_through_a_back_reference() {
        // The outer code object is reference 0, the inner one (read first, among the outer
        // one's constants) 1 and its file name 2; the outer one names the file through `r 2`.
        let inner = code(&short_ascii(b'z' | FLAG_REF, b"/build/a/m.py"), &[]);
        let outer = code(b"r\x02\x00\x00\x00", &[inner, b"N".to_vec()]);
        let data = pyc(&outer);
        let bytecode = Bytecode::parse(&data).unwrap();
        assert_eq!(bytecode.python_version(), (3, 12));
        assert_eq!(bytecode.filenames(), [&b"/build/a/m.py"[..]]);
        assert_eq!(bytecode.write(&BTreeMap::new()), data);

        let long = format!("/nix/store/{}", "x".repeat(300));
        let relocations = [relocation("/build/a", &long)];
        let rewrites = filename_rewrites(&data, &relocations).unwrap();
        assert_eq!(rewrites.len(), 1);
        // Too long for a short string: written as `a` with the reference flag kept.
        assert_eq!(rewrites[0].bytes[0], b'a' | FLAG_REF);
        let spliced = crate::splice(
            &data,
            &[crate::Splice {
                offset: rewrites[0].offset,
                len: rewrites[0].len,
                bytes: &rewrites[0].bytes,
            }],
        )
        .unwrap();
        let written = bytecode.write(&BTreeMap::from([(0, format!("{long}/m.py").into_bytes())]));
        assert_eq!(spliced, written);
        let again = Bytecode::parse(&written).unwrap();
        assert_eq!(again.filenames(), [format!("{long}/m.py").as_bytes()]);
        assert_eq!(again.write(&BTreeMap::new()), written);
    }

    #[test]
    fn text_keeps_its_kind_in_the_narrowest_form() {
        let encode = |code: u8, name: &str| {
            let mut out = Vec::new();
            encode_text(code, name.as_bytes(), &mut out);
            out[0]
        };
        assert_eq!(encode(b'z', "/a"), b'z');
        assert_eq!(encode(b'Z' | FLAG_REF, "/a"), b'Z' | FLAG_REF);
        assert_eq!(encode(b'Z', &"a".repeat(256)), b'A');
        assert_eq!(encode(b'a', "/a"), b'a');
        assert_eq!(encode(b'z', "/é"), b'u');
        assert_eq!(encode(b'A', "/é"), b't');
        assert_eq!(encode(b'u', "/a"), b'u');
    }

    #[test]
    fn only_names_that_start_with_old_and_stay_utf8_are_relocated() {
        let data = pyc(&code(&short_ascii(b'z', b"/x/build/a/m.py"), &[]));
        let bytecode = Bytecode::parse(&data).unwrap();
        assert!(
            bytecode
                .relocations(&[relocation("/build/a", "/b")])
                .is_empty()
        );
        let invalid = Relocation {
            old: b"/x".to_vec(),
            new: b"/\xff".to_vec(),
        };
        assert!(bytecode.relocations(&[invalid]).is_empty());
        // The longest OLD wins.
        let found = bytecode.relocations(&[relocation("/x", "/1"), relocation("/x/build", "/2")]);
        assert_eq!(found[&0], (1, b"/2/a/m.py".to_vec()));
    }

    proptest::proptest! {
        /// Any bytes after a known header, and any change to a valid file: never a panic, and
        /// whatever parses is written back as it was.
        #[test]
        fn arbitrary_streams_never_panic_and_round_trip(
            stream in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            flips in proptest::collection::vec((0usize..200, proptest::prelude::any::<u8>()), 0..4),
        ) {
            let mut valid = pyc(&code(
                b"r\x02\x00\x00\x00",
                &[
                    code(&short_ascii(b'z' | FLAG_REF, b"/build/a/m.py"), &[]),
                    b"(\x02\x00\x00\x00i\x01\x00\x00\x00N".to_vec(),
                ],
            ));
            proptest::prop_assert!(Bytecode::parse(&valid).is_ok());
            for (at, byte) in flips {
                let len = valid.len();
                valid[PYC_HEADER_LEN + at % (len - PYC_HEADER_LEN)] = byte;
            }
            for data in [pyc(&stream), valid] {
                if let Ok(bytecode) = Bytecode::parse(&data) {
                    proptest::prop_assert_eq!(bytecode.write(&BTreeMap::new()), data.clone());
                    let _ = filename_rewrites(&data, &[relocation("/build", "/x")]);
                }
            }
        }
    }

    #[test]
    fn malformed_bytecode_is_refused() {
        let good = pyc(&code(&short_ascii(b'z', b"/a.py"), &[]));
        assert_eq!(Bytecode::parse(b"\x00").unwrap_err(), PycError::NoHeader);
        let mut other = good.clone();
        other[..2].copy_from_slice(&3394u16.to_le_bytes());
        assert_eq!(
            Bytecode::parse(&other).unwrap_err(),
            PycError::UnknownMagic { magic: 3394 }
        );
        for cut in PYC_HEADER_LEN..good.len() {
            assert!(
                Bytecode::parse(&good[..cut]).is_err(),
                "accepted when cut at {cut}"
            );
        }
        let mut trailing = good.clone();
        trailing.push(b'N');
        assert_eq!(
            Bytecode::parse(&trailing).unwrap_err(),
            PycError::TrailingBytes {
                offset: good.len(),
                len: 1
            }
        );
        assert_eq!(Bytecode::parse(&pyc(b"N")).unwrap_err(), PycError::NotCode);
        assert_eq!(
            Bytecode::parse(&pyc(b"?")).unwrap_err(),
            PycError::UnknownType {
                code: b'?',
                offset: 16
            }
        );
        // A back-reference to the code object being read, which CPython registers only once
        // complete, and to one that does not exist.
        assert!(matches!(
            Bytecode::parse(&pyc(&code(b"r\x00\x00\x00\x00", &[]))).unwrap_err(),
            PycError::BadReference { index: 0, .. }
        ));
        assert!(matches!(
            Bytecode::parse(&pyc(&code(b"r\x07\x00\x00\x00", &[]))).unwrap_err(),
            PycError::BadReference { index: 7, .. }
        ));
        // A file name that is bytes.
        assert!(matches!(
            Bytecode::parse(&pyc(&code(&bytes_object(b"/a.py"), &[]))).unwrap_err(),
            PycError::FilenameNotString { offset: 16 }
        ));
        // A tuple claiming more items than there are bytes left: refused before allocating.
        assert!(matches!(
            Bytecode::parse(&pyc(b"(\xff\xff\xff\x7f")).unwrap_err(),
            PycError::SizeOutOfRange { .. }
        ));
        // Nesting deeper than CPython reads.
        let mut deep = b")\x01".repeat(MAX_DEPTH + 1);
        deep.push(b'N');
        assert!(matches!(
            Bytecode::parse(&pyc(&deep)).unwrap_err(),
            PycError::TooDeep { .. }
        ));
    }
}
