//! `storepatch relink`: scrubbed trees relinked against library paths, missing dependencies,
//! files that must be skipped or reported, and parity with autoPatchelfHook.
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use storepatch_test::cmd_snapshot;
use storepatch_test::snapshot::Filters;
use storepatch_test::venv::VenvFixture;

use crate::common::{identity, storepatch};

/// A venv fixture in a temporary store, scrubbed.
struct Scrubbed {
    dir: tempfile::TempDir,
    store: PathBuf,
    fixture: VenvFixture,
}

impl Scrubbed {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let fixture = VenvFixture::builder(dir.path().join("venv"), &store)
            .build()
            .unwrap();
        let output = storepatch()
            .args(["scrub", "--store-dir"])
            .arg(&store)
            .arg(&fixture.venv)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        Self {
            dir,
            store,
            fixture,
        }
    }

    /// `storepatch relink --store-dir <store> --library-path <lib>...` for `dirs`.
    fn relink(&self, dirs: &[PathBuf]) -> Command {
        let mut command = storepatch();
        command.args(["relink", "--store-dir"]).arg(&self.store);
        for dir in dirs {
            command.arg("--library-path").arg(dir);
        }
        command
    }

    fn filters(&self) -> Filters {
        Filters::new().path(self.dir.path(), "[TMP]")
    }

    fn extension_identities(&self) -> Vec<(u64, u64, i64, i64)> {
        self.fixture
            .extensions
            .iter()
            .map(|extension| identity(&extension.path))
            .collect()
    }
}

/// Imports `modules` from `site_packages` with an empty `LD_LIBRARY_PATH` and returns every
/// shared object mapped into the process afterwards (from `/proc/self/maps`).
pub(crate) fn mapped_libraries(
    python: &Path,
    site_packages: &Path,
    modules: &[String],
) -> Vec<PathBuf> {
    const SCRIPT: &str = r"
import importlib, sys
sys.path.insert(0, sys.argv[1])
for name in sys.argv[2:]:
    importlib.import_module(name)
seen = set()
with open('/proc/self/maps') as maps:
    for line in maps:
        fields = line.split(None, 5)
        if len(fields) == 6 and '.so' in fields[5] and fields[5].strip() not in seen:
            seen.add(fields[5].strip())
            print(fields[5].strip())
";
    let output = Command::new(python)
        .args(["-I", "-B", "-c", SCRIPT])
        .arg(site_packages)
        .args(modules)
        .env("LD_LIBRARY_PATH", "")
        .env("LD_BIND_NOW", "1")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "importing failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(PathBuf::from)
        .collect()
}

#[test]
fn scrubbed_run_paths_are_restored_in_place_and_extensions_load() {
    let scrubbed = Scrubbed::new();
    let fixture = &scrubbed.fixture;
    let sizes: Vec<u64> = fixture
        .extensions
        .iter()
        .map(|extension| fs_err::metadata(&extension.path).unwrap().len())
        .collect();
    assert!(
        !fixture
            .import_extensions(Some(OsStr::new("")))
            .unwrap()
            .success
    );
    cmd_snapshot!(scrubbed.filters(), scrubbed.relink(&fixture.library_dirs()).arg(&fixture.venv), @"
    success: true
    exit_code: 0
    ----- stdout -----
    patched [TMP]/venv/lib/python3.12/site-packages/barkit/_native.cpython-312-x86_64-linux-gnu.so: run path [TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-libbar-2.3/lib:[TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-libbaz-0.9/lib -> [TMP]/store/488hznmlk6r1sgmypmnlvhp1fk817yq9-libbar-2.3/lib:[TMP]/store/kn9z1a0vr8mm1yi81h095aji6qifxr3n-libbaz-0.9/lib (restored in place)
    patched [TMP]/venv/lib/python3.12/site-packages/fastfoo/_speedups.cpython-312-x86_64-linux-gnu.so: run path [TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-libfoo-1.0/lib -> [TMP]/store/j5w3hw449i2pz2l90br88sb9x5gnhlll-libfoo-1.0/lib (restored in place)

    ----- stderr -----
    patched 2 files (2 restored in place), 0 unchanged, 0 skipped, 0 missing dependencies (0 ignored), 0 errors
    ");
    let after: Vec<u64> = fixture
        .extensions
        .iter()
        .map(|extension| fs_err::metadata(&extension.path).unwrap().len())
        .collect();
    assert_eq!(sizes, after, "restoring must not relayout");
    let report = fixture.import_extensions(Some(OsStr::new(""))).unwrap();
    assert!(report.success, "{}", report.stderr);
    let mapped = mapped_libraries(
        &fixture.python.executable,
        &fixture.site_packages,
        &fixture.module_names(),
    );
    for library in &fixture.libraries {
        let loaded = mapped
            .iter()
            .find(|path| path.file_name() == Some(OsStr::new(library.spec.file_name)))
            .unwrap_or_else(|| panic!("{} not loaded: {mapped:?}", library.spec.file_name));
        assert_eq!(loaded.parent(), Some(library.lib_dir.as_path()));
    }

    // A second run changes nothing and writes nothing.
    let before = scrubbed.extension_identities();
    cmd_snapshot!(scrubbed.filters(), scrubbed.relink(&fixture.library_dirs()).arg(&fixture.venv), @"
    success: true
    exit_code: 0
    ----- stdout -----

    ----- stderr -----
    patched 0 files (0 restored in place), 2 unchanged, 0 skipped, 0 missing dependencies (0 ignored), 0 errors
    ");
    assert_eq!(scrubbed.extension_identities(), before);
}
