//! The C library's own objects, which are left to the dynamic linker.
//!
//! autoPatchelfHook treats a dependency as part of libc when a file of that name exists in the
//! libc package's `lib` directory (`$NIX_BINTOOLS/nix-support/orig-libc`), and does not add that
//! directory to any run path: the dynamic linker comes from the same package and finds them in
//! its own default directory. When that directory is known, it alone decides here too
//! ([`LibcNames::from_directory`]): nixpkgs' glibc ships `libgcc_s.so.1` there (for
//! `pthread_cancel`), so it counts as libc on such a tree, and where the directory lacks it, it is
//! looked up like any other library (in gcc's `lib`, say).
//!
//! Outside a Nix build there is no such directory: [`LibcNames::glibc`] is glibc's sonames plus
//! `libgcc_s.so.1`, which the host's dynamic linker finds in its default directories (Debian
//! ships it in `/lib/<multiarch>`, next to libc).
use std::collections::BTreeSet;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// glibc's sonames (x86-64, aarch64 and others), plus `libgcc_s.so.1`: the fallback when no
/// libc directory is known.
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
    /// Names from the list of glibc's sonames, where `ld-linux*` always belongs to libc.
    builtin: bool,
}

impl Default for LibcNames {
    fn default() -> Self {
        Self {
            names: GLIBC_SONAMES
                .iter()
                .map(|name| name.as_bytes().to_vec())
                .collect(),
            builtin: true,
        }
    }
}

impl LibcNames {
    /// glibc's sonames and `libgcc_s.so.1`, for when no libc directory is known.
    pub fn glibc() -> Self {
        Self::default()
    }

    /// The names of the files in `lib_dir` (not recursive, symlinks to files included), and
    /// nothing else, as autoPatchelfHook's `orig-libc/lib` check decides.
    ///
    /// # Errors
    ///
    /// The directory cannot be read; the error names it.
    pub fn from_directory(lib_dir: &Path) -> std::io::Result<Self> {
        let mut names = BTreeSet::new();
        for entry in fs_err::read_dir(lib_dir)? {
            let entry = entry?;
            if entry.path().is_file() {
                names.insert(entry.file_name().as_bytes().to_vec());
            }
        }
        Ok(Self {
            names,
            builtin: false,
        })
    }

    /// Whether `name` (a soname or file name) belongs to libc. With glibc's list, `ld-linux*`
    /// always does.
    pub fn contains(&self, name: &[u8]) -> bool {
        self.names.contains(name) || (self.builtin && name.starts_with(b"ld-linux"))
    }
}

#[cfg(test)]
mod tests {
    use super::LibcNames;

    #[test]
    fn a_libc_directory_alone_decides() {
        let dir = tempfile::tempdir().unwrap();
        fs_err::write(dir.path().join("libc.so.6"), "").unwrap();
        fs_err::write(dir.path().join("libm.so.6"), "").unwrap();
        fs_err::create_dir(dir.path().join("gconv")).unwrap();
        let libc = LibcNames::from_directory(dir.path()).unwrap();
        assert!(libc.contains(b"libc.so.6") && libc.contains(b"libm.so.6"));
        assert!(!libc.contains(b"libgcc_s.so.1"));
        assert!(!libc.contains(b"gconv"));
        fs_err::write(dir.path().join("libgcc_s.so.1"), "").unwrap();
        assert!(
            LibcNames::from_directory(dir.path())
                .unwrap()
                .contains(b"libgcc_s.so.1")
        );
        assert!(LibcNames::glibc().contains(b"libgcc_s.so.1"));
        assert!(LibcNames::from_directory(&dir.path().join("missing")).is_err());
    }
}
