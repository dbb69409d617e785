//! Reads and edits ELF files (interpreter, run path, needed, soname) without ever writing a broken binary.
#![deny(missing_docs)]
