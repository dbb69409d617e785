//! The one place storepatch maps files, and the only `unsafe` in the workspace.
//!
//! See: ripgrep's `searcher/src/mmap.rs`, which states the same contract.
#![expect(unsafe_code, reason = "memory-mapping a file is unsafe by definition")]

use std::ops::Deref;

/// A read-only mapping of a whole file.
#[derive(Debug)]
pub struct Mapping(memmap2::Mmap);

impl Mapping {
    /// Maps `file` read-only.
    ///
    /// # Safety contract
    ///
    /// A mapping is only sound while nobody truncates or rewrites the file. storepatch never
    /// writes a file it has mapped (rewrites go to a new file that is renamed over the old one, so
    /// the mapped inode keeps its contents). Another process truncating the file meanwhile makes
    /// reads past the new end raise SIGBUS; that is the same risk every mmap-based reader (ripgrep,
    /// git) accepts, and `--no-mmap` avoids it.
    pub(crate) fn new(file: &std::fs::File) -> std::io::Result<Self> {
        // SAFETY: the mapping is read-only and private to this process; storepatch itself never
        // modifies a mapped file in place (see the contract above), so the bytes we read are the
        // file's bytes unless another process truncates or rewrites it concurrently.
        let map = unsafe { memmap2::MmapOptions::new().map(file)? };
        Ok(Self(map))
    }
}

impl Deref for Mapping {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}
