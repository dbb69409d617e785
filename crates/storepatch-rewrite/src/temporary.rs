//! The one way storepatch replaces an entry: a temporary entry in the same directory, renamed
//! over the original.
//!
//! Every temporary entry is named `.storepatch-<pid>-<n>.tmp` and registered while it exists, so
//! that an interrupted run can remove what it still holds ([`remove_registered`]) and a later run
//! can recognise what a killed one left behind ([`Leftover`]). Only regular files are ever
//! replaced: a device, FIFO, socket, directory or symlink at the destination is refused before
//! anything is written and checked again just before the rename.
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};

use crate::{Error, Result, io_error, parent_of};

/// The prefix of every temporary entry's name.
const PREFIX: &[u8] = b".storepatch-";
/// The suffix of every temporary entry's name.
const SUFFIX: &[u8] = b".tmp";

/// Temporary entries that exist right now, by the number in their name (unique within the
/// process): a rewrite of thousands of files registers each, so the key is one integer rather than
/// a path compared component by component under the lock.
static REGISTERED: Mutex<BTreeMap<u64, PathBuf>> = Mutex::new(BTreeMap::new());

fn registry() -> std::sync::MutexGuard<'static, BTreeMap<u64, PathBuf>> {
    // A panic while the lock was held leaves a set that is still a valid set.
    REGISTERED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Removes every temporary entry still registered (for a run that stops on a signal while other
/// threads may still hold some) and returns their paths, sorted. An entry that is renamed into
/// place meanwhile simply fails to be removed.
pub fn remove_registered() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::mem::take(&mut *registry()).into_values().collect();
    paths.sort_unstable();
    for path in &paths {
        let _ = fs_err::remove_file(path);
    }
    paths
}

/// A temporary name next to `path` that this process has not used yet, and its number.
fn sibling(path: &Path) -> Result<(u64, PathBuf)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // Asked once: the process id does not change, and each rewrite would otherwise ask again.
    static PID: LazyLock<u32> = LazyLock::new(std::process::id);
    let parent = parent_of(path)?;
    let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!(".storepatch-{}-{unique}.tmp", *PID);
    Ok((unique, parent.join(name)))
}

/// A registered temporary entry: unregistered on drop, and removed unless it was renamed.
#[derive(Debug)]
pub(crate) struct Registration {
    path: PathBuf,
    /// Its key in [`REGISTERED`].
    key: u64,
    placed: bool,
}

impl Registration {
    /// Picks a fresh name beside `path` and creates an entry there with `create`, retrying when
    /// the name is taken (by a leftover of an earlier process with our pid, say).
    pub(crate) fn create<T>(
        path: &Path,
        mut create: impl FnMut(&Path) -> std::io::Result<T>,
    ) -> Result<(Self, T)> {
        let mut attempts = 0;
        loop {
            let (key, temp) = sibling(path)?;
            // Registered before it exists, so a signal never misses it.
            registry().insert(key, temp.clone());
            let registration = Self {
                path: temp,
                key,
                placed: false,
            };
            match create(&registration.path) {
                Ok(value) => return Ok((registration, value)),
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists && attempts < 64 => {
                    attempts += 1;
                    // Not ours: must not be removed on drop.
                    let mut registration = registration;
                    registration.placed = true;
                }
                Err(source) => {
                    let mut registration = registration;
                    registration.placed = true;
                    return Err(Error::Io {
                        action: "cannot create a temporary file in",
                        path: parent_of(path)?.to_path_buf(),
                        source,
                    });
                }
            }
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the entry over `target`; on failure it is removed (on drop).
    pub(crate) fn rename_over(mut self, target: &Path) -> Result<()> {
        crate::interrupt::check(target)?;
        fs_err::rename(&self.path, target).map_err(|source| Error::Io {
            action: "cannot replace",
            path: target.to_path_buf(),
            source,
        })?;
        self.placed = true;
        Ok(())
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        registry().remove(&self.key);
        if !self.placed {
            let _ = fs_err::remove_file(&self.path);
        }
    }
}

/// What kind of entry a file that is not a regular file is, for messages ("a FIFO"); `None`
/// for a regular file. Every command words a refusal to read or replace such a file with it.
pub fn special_kind(file_type: std::fs::FileType) -> Option<&'static str> {
    Some(if file_type.is_file() {
        return None;
    } else if file_type.is_dir() {
        "a directory"
    } else if file_type.is_symlink() {
        "a symlink"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        "a special file"
    })
}

/// Fails unless `target` is a regular file or does not exist.
pub(crate) fn check_replaceable(target: &Path) -> Result<()> {
    match fs_err::symlink_metadata(target) {
        Ok(metadata) if metadata.file_type().is_file() => Ok(()),
        Ok(metadata) => Err(Error::NotRegular {
            path: target.to_path_buf(),
            kind: special_kind(metadata.file_type()).unwrap_or("a special file"),
        }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Io {
            action: "cannot examine",
            path: target.to_path_buf(),
            source,
        }),
    }
}

/// A new file being written beside the regular file (or free name) it is to replace.
///
/// Write it through [`Replacement::file`], then [`Replacement::commit`] it: it gets the mode and,
/// where allowed, the owner of a given original, is synced if asked, and is renamed over the
/// target. Dropped without a commit (on an error, say), it is removed. Renaming gives the target
/// a new inode, so other hard links to the old one keep the old contents; [`crate::link_into_place`]
/// re-links the names that should follow.
#[derive(Debug)]
pub struct Replacement {
    target: PathBuf,
    registration: Registration,
    file: std::fs::File,
    sync_data: bool,
}

impl Replacement {
    /// Creates an empty temporary file, readable and writable by its owner only, beside `target`.
    ///
    /// Fails with [`Error::NotRegular`] if `target` exists and is not a regular file.
    pub fn beside(target: &Path) -> Result<Self> {
        check_replaceable(target)?;
        Self::create(target)
    }

    /// [`Replacement::beside`] for a target the caller has just examined (through the file it
    /// read, say): `original` is its metadata, so the target is not looked up again before the
    /// temporary file is made. It is still checked just before the rename
    /// ([`Replacement::commit`]).
    ///
    /// Fails with [`Error::NotRegular`] if `original` is not a regular file.
    pub fn beside_examined(target: &Path, original: &Metadata) -> Result<Self> {
        if let Some(kind) = special_kind(original.file_type()) {
            return Err(Error::NotRegular {
                path: target.to_path_buf(),
                kind,
            });
        }
        Self::create(target)
    }

    fn create(target: &Path) -> Result<Self> {
        use std::os::unix::fs::OpenOptionsExt as _;
        crate::interrupt::check(target)?;
        let (registration, file) = Registration::create(target, |temp| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(temp)
        })?;
        Ok(Self {
            target: target.to_path_buf(),
            registration,
            file,
            sync_data: false,
        })
    }

    /// Whether [`Replacement::commit`] waits for the data to reach the disk first (`sync_data`).
    #[must_use]
    pub fn sync_data(mut self, sync_data: bool) -> Self {
        self.sync_data = sync_data;
        self
    }

    /// The temporary file, to write to.
    pub fn file(&mut self) -> &mut std::fs::File {
        &mut self.file
    }

    /// Where the temporary file is (for messages and for mapping it to verify it).
    pub fn path(&self) -> &Path {
        self.registration.path()
    }

    /// The file it will replace.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Gives the file the mode (and, where allowed, the owner) of `like`, syncs it if asked, and
    /// renames it over the target, which must still be a regular file or absent.
    pub fn commit(self, like: &Metadata) -> Result<()> {
        copy_owner_and_mode(&self.file, like)
            .map_err(io_error("cannot set the mode of", self.registration.path()))?;
        if self.sync_data {
            self.file
                .sync_data()
                .map_err(io_error("cannot write", self.registration.path()))?;
        }
        check_replaceable(&self.target)?;
        self.registration.rename_over(&self.target)
    }
}

fn copy_owner_and_mode(file: &std::fs::File, original: &Metadata) -> std::io::Result<()> {
    let current = file.metadata()?;
    if (current.uid(), current.gid()) != (original.uid(), original.gid()) {
        // Only root may give a file away; anyone else keeps owning the copy, as `cp` does.
        if let Err(err) =
            std::os::unix::fs::fchown(file, Some(original.uid()), Some(original.gid()))
        {
            log::debug!("keeping the owner of a rewritten file: {err}");
        }
    }
    file.set_permissions(std::fs::Permissions::from_mode(original.mode() & 0o7777))
}

/// A temporary entry some storepatch run left behind (named `.storepatch-<pid>-<n>.tmp`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// The process that created it.
    pub pid: u32,
}

/// What [`Leftover::clean`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cleaned {
    /// Its process is gone: the entry was removed.
    Removed,
    /// Its process (or one with its pid) is still running: the entry was left alone.
    OwnerRunning,
}

impl Leftover {
    /// Recognises a temporary entry's file name.
    pub fn from_name(name: &OsStr) -> Option<Self> {
        let name = name.as_bytes();
        let rest = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
        let dash = rest.iter().position(|&byte| byte == b'-')?;
        let (pid, counter) = (&rest[..dash], &rest[dash + 1..]);
        let digits = |bytes: &[u8]| !bytes.is_empty() && bytes.iter().all(u8::is_ascii_digit);
        if !digits(pid) || !digits(counter) {
            return None;
        }
        let pid = std::str::from_utf8(pid).ok()?.parse().ok()?;
        Some(Self { pid })
    }

    /// Whether the process that made it may still be running (this process counts as running).
    pub fn owner_running(&self) -> bool {
        if self.pid == std::process::id() {
            return true;
        }
        let Some(pid) = i32::try_from(self.pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        else {
            return false;
        };
        // Only "no such process" proves it gone; a process we may not signal is alive.
        !matches!(
            rustix::process::test_kill_process(pid),
            Err(rustix::io::Errno::SRCH)
        )
    }

    /// Removes the entry at `path` if its process is gone.
    pub fn clean(&self, path: &Path) -> Result<Cleaned> {
        if self.owner_running() {
            return Ok(Cleaned::OwnerRunning);
        }
        fs_err::remove_file(path).map_err(io_error("cannot remove", path))?;
        Ok(Cleaned::Removed)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn names_are_recognised() {
        let name = |text: &str| Leftover::from_name(OsStr::new(text));
        assert_eq!(name(".storepatch-123-0.tmp"), Some(Leftover { pid: 123 }));
        assert_eq!(name(".storepatch-123-.tmp"), None);
        assert_eq!(name(".storepatch--1.tmp"), None);
        assert_eq!(name(".storepatch-12a-1.tmp"), None);
        assert_eq!(name("storepatch-1-1.tmp"), None);
        assert_eq!(name(".storepatch-1-1.tmp.bak"), None);
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("file");
        fs_err::write(&target, "x").unwrap();
        let replacement = Replacement::beside(&target).unwrap();
        let leftover = Leftover::from_name(replacement.path().file_name().unwrap()).unwrap();
        assert_eq!(leftover.pid, std::process::id());
        assert!(leftover.owner_running());
    }

    #[test]
    fn a_dead_process_leftover_is_removed_a_live_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        // A child that has exited and been reaped: its pid is free.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let dead = dir.path().join(format!(".storepatch-{pid}-0.tmp"));
        fs_err::write(&dead, "partial").unwrap();
        assert_eq!(
            Leftover { pid }.clean(&dead).unwrap(),
            Cleaned::Removed,
            "pid {pid}"
        );
        assert!(!dead.exists());
        let live = dir
            .path()
            .join(format!(".storepatch-{}-0.tmp", std::process::id()));
        fs_err::write(&live, "in use").unwrap();
        let leftover = Leftover::from_name(live.file_name().unwrap()).unwrap();
        assert_eq!(leftover.clean(&live).unwrap(), Cleaned::OwnerRunning);
        assert!(live.exists());
    }

    #[test]
    fn special_files_are_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let subdir = dir.path().join("subdir");
        fs_err::create_dir(&subdir).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("subdir", &link).unwrap();
        let fifo = dir.path().join("fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        for (target, kind) in [
            (Path::new("/dev/null"), "a character device"),
            (subdir.as_path(), "a directory"),
            (link.as_path(), "a symlink"),
            (fifo.as_path(), "a FIFO"),
        ] {
            let err = Replacement::beside(target).unwrap_err();
            assert!(
                matches!(&err, Error::NotRegular { kind: found, .. } if *found == kind),
                "{err}"
            );
        }
        // A target that turns into a directory after the temporary file was made.
        let target = dir.path().join("later");
        let mut replacement = Replacement::beside(&target).unwrap();
        std::io::Write::write_all(replacement.file(), b"new").unwrap();
        fs_err::create_dir(&target).unwrap();
        let like = fs_err::metadata(dir.path()).unwrap();
        assert!(matches!(
            replacement.commit(&like),
            Err(Error::NotRegular { .. })
        ));
        let names: BTreeSet<_> = fs_err::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 4, "no temporary file is left: {names:?}");
        assert_eq!(fs_err::metadata("/dev/null").unwrap().len(), 0);
    }

    #[test]
    fn registered_entries_are_removed_on_request() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("file");
        let replacement = Replacement::beside(&target).unwrap();
        let temp = replacement.path().to_path_buf();
        assert!(temp.exists());
        let removed = remove_registered();
        assert!(removed.contains(&temp), "{removed:?}");
        assert!(!temp.exists());
        drop(replacement);
        assert!(!target.exists());
    }
}
