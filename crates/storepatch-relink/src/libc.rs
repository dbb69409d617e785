//! The C library's own objects, which are left to the dynamic linker.
//!
//! autoPatchelfHook treats a dependency as part of libc when a file of that name exists in the
//! libc package's `lib` directory (`$NIX_BINTOOLS/nix-support/orig-libc`), and does not add that
//! directory to any run path: the dynamic linker comes from the same package and finds them in
//! its own default directory. Outside a Nix build there is no such directory, so storepatch also
//! knows glibc's sonames. nixpkgs' glibc additionally ships `libgcc_s.so.1` in its `lib`
//! directory (for `pthread_cancel`), so the hook treats that as libc too, and so does this list.
use std::collections::BTreeSet;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// glibc's sonames (x86-64, aarch64 and others), plus `libgcc_s.so.1`.
const GLIBC_SONAMES: &[&str] = &[
    "libc.so.6",
    "libm.so.6",
    "libmvec.so.1",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "libutil.so.1",
    "libresolv.so.2",
    "libnsl.so.1",
    "libanl.so.1",
    "libcrypt.so.1",
    "libBrokenLocale.so.1",
    "libthread_db.so.1",
    "libc_malloc_debug.so.0",
    "libnss_compat.so.2",
    "libnss_dns.so.2",
    "libnss_files.so.2",
    "libnss_hesiod.so.2",
    "libnss_db.so.2",
    "libmemusage.so",
    "libpcprofile.so",
    "libSegFault.so",
    "libgcc_s.so.1",
    "ld-linux.so.2",
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
    "ld-linux-armhf.so.3",
    "ld-linux-riscv64-lp64d.so.1",
    "ld64.so.1",
    "ld64.so.2",
];

/// The set of names treated as part of libc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibcNames {
    names: BTreeSet<Vec<u8>>,
}

impl Default for LibcNames {
    fn default() -> Self {
        Self {
            names: GLIBC_SONAMES
                .iter()
                .map(|name| name.as_bytes().to_vec())
                .collect(),
        }
    }
}

impl LibcNames {
    /// glibc's sonames only.
    pub fn glibc() -> Self {
        Self::default()
    }

    /// Adds the name of every file in `lib_dir` (not recursive), as autoPatchelfHook's
    /// `orig-libc/lib` check does. A directory that cannot be read adds nothing.
    #[must_use]
    pub fn with_directory(mut self, lib_dir: &Path) -> Self {
        if let Ok(entries) = fs_err::read_dir(lib_dir) {
            for entry in entries.flatten() {
                if entry.path().is_file() {
                    self.names.insert(entry.file_name().as_bytes().to_vec());
                }
            }
        }
        self
    }

    /// Whether `name` (a soname or file name) belongs to libc. `ld-linux*` always does.
    pub fn contains(&self, name: &[u8]) -> bool {
        self.names.contains(name) || name.starts_with(b"ld-linux")
    }
}
