//! Stopping a run cleanly on SIGINT or SIGTERM.
//!
//! The program registers [`flag`] as the target of its signal handlers (signal-hook's
//! `flag::register_usize` stores the signal number in it). Work checks [`signal`] between files and
//! between blocks of a big write: a file is either written in full and renamed, or abandoned with
//! its temporary file removed, so every file ends up old or new, never half. The caller then
//! reports what was done and exits with 128 + the signal number.
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};

use crate::{Error, Result};

static FLAG: LazyLock<Arc<AtomicUsize>> = LazyLock::new(|| Arc::new(AtomicUsize::new(0)));

/// The value a signal handler sets to the signal's number (0 while none has arrived).
pub fn flag() -> Arc<AtomicUsize> {
    Arc::clone(&FLAG)
}

/// The signal that asked the run to stop, if one did.
pub fn signal() -> Option<i32> {
    match FLAG.load(Ordering::Relaxed) {
        0 => None,
        number => i32::try_from(number).ok(),
    }
}

/// Asks the run to stop as if `signal` had arrived (for callers that stop for other reasons, and
/// for tests).
pub fn request(signal: i32) {
    FLAG.store(usize::try_from(signal).unwrap_or(1), Ordering::Relaxed);
}

/// Fails with [`Error::Interrupted`] (naming `path`, the entry that was about to be written) once
/// a signal has arrived.
pub fn check(path: &Path) -> Result<()> {
    match signal() {
        None => Ok(()),
        Some(signal) => Err(Error::Interrupted {
            path: path.to_path_buf(),
            signal,
        }),
    }
}
