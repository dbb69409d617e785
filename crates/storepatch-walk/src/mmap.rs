//! The one place storepatch maps files, and the only `unsafe` in the workspace (with the one
//! call that tunes the C library's allocator, [`tune_malloc`]).
//!
//! See: ripgrep's `searcher/src/mmap.rs`, which states the same contract.
#![expect(
    unsafe_code,
    reason = "memory-mapping a file and tuning the C allocator are unsafe by definition"
)]

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

    /// Lets go of the pages of `range` (rounded inwards to [`RELEASE_ALIGN`]) that this process
    /// has faulted in, so they stop counting towards its resident memory. The bytes stay readable
    /// and unchanged: the next read of one faults it in again from the page cache.
    ///
    /// Returns where the blocks let go of end (`range.start` if there were none), which is where
    /// the next range should start. Errors are ignored: the pages then simply stay resident.
    pub(crate) fn release(&self, range: std::ops::Range<usize>) -> usize {
        let start = range.start.next_multiple_of(RELEASE_ALIGN);
        let end = range.end.min(self.0.len()) / RELEASE_ALIGN * RELEASE_ALIGN;
        if start >= end {
            return range.start;
        }
        // SAFETY: `MADV_DONTNEED` on a shared, read-only file mapping only drops this process's
        // page-table entries for the range; the pages stay in the page cache and the next access
        // maps them again with the file's bytes, so every `&[u8]` into the mapping keeps seeing
        // the same contents (under the contract of `new`). Nothing is written through the mapping
        // (it is read-only), so there are no private changes for it to throw away.
        let _ = unsafe {
            self.0
                .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
        };
        end
    }
}

/// [`Mapping::release`] works in whole blocks this large: a multiple of every page size Linux
/// uses (4 KiB to 64 KiB), so a block never shares a page with bytes outside the range.
const RELEASE_ALIGN: usize = 64 << 10;

impl Deref for Mapping {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

/// Tunes glibc's allocator for a tree run on `threads` worker threads; call it before any thread
/// starts. Elsewhere than glibc it does nothing.
///
/// - At most one arena per worker thread (`M_ARENA_MAX`), rather than up to eight per core. The
///   workers allocate all the time (each entry's record, paths, hits), so each needs an arena of
///   its own: with a single arena they queue for its lock, and on the real venv with two threads
///   a scrub took 0.56 s instead of 0.45 s, a scan 270 ms instead of 223 ms. The main thread
///   mostly waits while they work and shares one of theirs. Every arena holds on to the memory
///   freed in it, and a tree run makes each entry's record on one thread and frees or keeps it
///   on another, so each arena more costs resident memory: with two threads, a third arena cost
///   a scrub 2 MB of its 25 MB peak, for no time saved.
/// - Blocks of 128 KiB and more are always mappings of their own (`M_MMAP_THRESHOLD`), given back
///   whole when freed. By default glibc raises that threshold to the size of every large block
///   freed, up to 32 MiB, after which a run's large temporaries (a big directory's listing, the
///   walk's result while it is put in order) are carved out of the heap too and leave holes
///   there that stay resident.
pub fn tune_malloc(threads: usize) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let arenas = libc::c_int::try_from(threads.max(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: `mallopt` only sets tunables of glibc's allocator; `M_ARENA_MAX` and
        // `M_MMAP_THRESHOLD` with positive values (the latter at most `HEAP_MAX_SIZE / 2`, 32 MiB)
        // are documented (mallopt(3)) and safe to set at any time, and only change where later
        // allocations come from. It takes no pointers. The results (0 on failure) are ignored:
        // the allocator then keeps its default, which is only a cost.
        unsafe {
            let _ = libc::mallopt(libc::M_ARENA_MAX, arenas);
            let _ = libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = threads;
}
