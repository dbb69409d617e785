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
pub(crate) struct Scrubbed {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) store: PathBuf,
    pub(crate) fixture: VenvFixture,
}

impl Scrubbed {
    pub(crate) fn new() -> Self {
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
    pub(crate) fn relink(&self, dirs: &[PathBuf]) -> Command {
        let mut command = storepatch();
        command.args(["relink", "--store-dir"]).arg(&self.store);
        for dir in dirs {
            command.arg("--library-path").arg(dir);
        }
        command
    }

    pub(crate) fn filters(&self) -> Filters {
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

#[test]
fn missing_dependencies_are_listed_together_and_fail_unless_ignored() {
    let scrubbed = Scrubbed::new();
    let fixture = &scrubbed.fixture;
    let only_foo = vec![fixture.libraries[0].lib_dir.clone()];
    let before = scrubbed.extension_identities();
    cmd_snapshot!(scrubbed.filters(), scrubbed.relink(&only_foo).arg("--dry-run").arg(&fixture.venv), @"
    success: false
    exit_code: 1
    ----- stdout -----
    would patch [TMP]/venv/lib/python3.12/site-packages/fastfoo/_speedups.cpython-312-x86_64-linux-gnu.so: run path [TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-libfoo-1.0/lib -> [TMP]/store/j5w3hw449i2pz2l90br88sb9x5gnhlll-libfoo-1.0/lib (restored in place)

    ----- stderr -----
    error: [TMP]/venv/lib/python3.12/site-packages/barkit/_native.cpython-312-x86_64-linux-gnu.so: libbar.so.2 not found
    error: [TMP]/venv/lib/python3.12/site-packages/barkit/_native.cpython-312-x86_64-linux-gnu.so: libbaz.so.0 not found
    would patch 1 files (1 restored in place), 1 unchanged, 0 skipped, 2 missing dependencies (0 ignored), 0 errors
    ");
    assert_eq!(scrubbed.extension_identities(), before);

    cmd_snapshot!(scrubbed.filters(), scrubbed.relink(&only_foo).args(["--ignore-missing", "libba?.so.*"]).arg(&fixture.venv), @"
    success: true
    exit_code: 0
    ----- stdout -----
    patched [TMP]/venv/lib/python3.12/site-packages/fastfoo/_speedups.cpython-312-x86_64-linux-gnu.so: run path [TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-libfoo-1.0/lib -> [TMP]/store/j5w3hw449i2pz2l90br88sb9x5gnhlll-libfoo-1.0/lib (restored in place)

    ----- stderr -----
    warning: [TMP]/venv/lib/python3.12/site-packages/barkit/_native.cpython-312-x86_64-linux-gnu.so: libbar.so.2 not found (ignored by `libba?.so.*`)
    warning: [TMP]/venv/lib/python3.12/site-packages/barkit/_native.cpython-312-x86_64-linux-gnu.so: libbaz.so.0 not found (ignored by `libba?.so.*`)
    patched 1 files (1 restored in place), 1 unchanged, 0 skipped, 2 missing dependencies (2 ignored), 0 errors
    ");
    cmd_snapshot!(scrubbed.filters(), scrubbed.relink(&only_foo).args(["--json", "--ignore-missing", "libbar.so.2"]).arg(&fixture.venv), @r#"
    success: false
    exit_code: 1
    ----- stdout -----
    {"action":"unchanged","dependencies":[{"dir":null,"kind":"needed","name":{"text":"libbar.so.2"},"resolution":"missing"},{"dir":null,"kind":"needed","name":{"text":"libbaz.so.0"},"resolution":"missing"},{"dir":null,"kind":"needed","name":{"text":"libc.so.6"},"resolution":"libc"}],"interpreter_new":null,"interpreter_old":null,"path":{"text":"[TMP]/venv/lib/python3.12/site-packages/barkit/_native.cpython-312-x86_64-linux-gnu.so"},"restored_entries":0,"run_path_new":{"text":"[TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-libbar-2.3/lib:[TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-libbaz-0.9/lib"},"run_path_old":{"text":"[TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-libbar-2.3/lib:[TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-libbaz-0.9/lib"},"type":"relink","write":"none"}
    {"ignored":true,"kind":"needed","name":{"text":"libbar.so.2"},"path":{"text":"[TMP]/venv/lib/python3.12/site-packages/barkit/_native.cpython-312-x86_64-linux-gnu.so"},"type":"missing"}
    {"ignored":false,"kind":"needed","name":{"text":"libbaz.so.0"},"path":{"text":"[TMP]/venv/lib/python3.12/site-packages/barkit/_native.cpython-312-x86_64-linux-gnu.so"},"type":"missing"}
    {"action":"unchanged","dependencies":[{"dir":{"text":"[TMP]/store/j5w3hw449i2pz2l90br88sb9x5gnhlll-libfoo-1.0/lib"},"kind":"needed","name":{"text":"libfoo.so.1"},"resolution":"library"},{"dir":null,"kind":"needed","name":{"text":"libc.so.6"},"resolution":"libc"}],"interpreter_new":null,"interpreter_old":null,"path":{"text":"[TMP]/venv/lib/python3.12/site-packages/fastfoo/_speedups.cpython-312-x86_64-linux-gnu.so"},"restored_entries":0,"run_path_new":{"text":"[TMP]/store/j5w3hw449i2pz2l90br88sb9x5gnhlll-libfoo-1.0/lib"},"run_path_old":{"text":"[TMP]/store/j5w3hw449i2pz2l90br88sb9x5gnhlll-libfoo-1.0/lib"},"type":"relink","write":"none"}
    {"dry_run":false,"errors":0,"ignored":1,"missing":2,"patched":0,"restored_in_place":0,"skipped":0,"type":"summary","unchanged":2}

    ----- stderr -----
    "#);
}

#[test]
fn libraries_elsewhere_get_a_new_run_path_with_runtime_dependencies_last() {
    let scrubbed = Scrubbed::new();
    let fixture = &scrubbed.fixture;
    let elsewhere = scrubbed.dir.path().join("elsewhere");
    let mut dirs = Vec::new();
    for library in &fixture.libraries {
        let dir = elsewhere.join(library.spec.package).join("lib");
        storepatch_test::pipeline::copy_tree(&library.lib_dir, &dir).unwrap();
        dirs.push(dir);
    }
    let runtime = scrubbed.dir.path().join("runtime");
    cmd_snapshot!(
        scrubbed.filters(),
        scrubbed
            .relink(&dirs)
            .arg("--runtime-dependency")
            .arg(&runtime)
            .args(["--append-rpath", "/opt/extra/lib"])
            .arg(&fixture.venv),
        @"
    success: true
    exit_code: 0
    ----- stdout -----
    patched [TMP]/venv/lib/python3.12/site-packages/barkit/_native.cpython-312-x86_64-linux-gnu.so: run path [TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-libbar-2.3/lib:[TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-libbaz-0.9/lib -> [TMP]/elsewhere/libbar-2.3/lib:[TMP]/elsewhere/libbaz-0.9/lib:[TMP]/runtime/lib:/opt/extra/lib
    patched [TMP]/venv/lib/python3.12/site-packages/fastfoo/_speedups.cpython-312-x86_64-linux-gnu.so: run path [TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-libfoo-1.0/lib -> [TMP]/elsewhere/libfoo-1.0/lib:[TMP]/runtime/lib:/opt/extra/lib

    ----- stderr -----
    patched 2 files (0 restored in place), 0 unchanged, 0 skipped, 0 missing dependencies (0 ignored), 0 errors
    "
    );
    let mapped = mapped_libraries(
        &fixture.python.executable,
        &fixture.site_packages,
        &fixture.module_names(),
    );
    for (library, dir) in fixture.libraries.iter().zip(&dirs) {
        assert!(
            mapped
                .iter()
                .any(|path| path == &dir.join(library.spec.file_name)),
            "{} not loaded from {}: {mapped:?}",
            library.spec.file_name,
            dir.display()
        );
    }
    let before = scrubbed.extension_identities();
    let output = scrubbed
        .relink(&dirs)
        .arg("--runtime-dependency")
        .arg(&runtime)
        .args(["--append-rpath", "/opt/extra/lib"])
        .arg(&fixture.venv)
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(scrubbed.extension_identities(), before, "idempotent");
}
