//! `storepatch relink`: scrubbed trees relinked against library paths, missing dependencies,
//! files that must be skipped or reported, and parity with autoPatchelfHook.
use std::ffi::OsStr;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use storepatch_test::cmd_snapshot;
use storepatch_test::snapshot::Filters;
use storepatch_test::venv::VenvFixture;

use crate::common::{identity, json_lines, run_ok, storepatch};

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
        run_ok(
            storepatch()
                .args(["scrub", "--store-dir"])
                .arg(&store)
                .arg(&fixture.venv),
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

    /// `[TMP]` for the temporary directory, and placeholders for what depends on the host's
    /// Python (the fixture's venv is made for it): its version and extension suffix.
    pub(crate) fn filters(&self) -> Filters {
        let filters = Filters::new().path(self.dir.path(), "[TMP]");
        let Ok(python) = storepatch_test::fixture_store::host_python() else {
            return filters;
        };
        filters
            .literal(
                &format!("python3-{}", python.full_version),
                "python3-[PYTHON_VERSION]",
            )
            .literal(&python.ext_suffix, "[EXT_SUFFIX]")
            .literal(&format!("python{}", python.version), "python[VER]")
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
    // Every module is loaded with dlopen(RTLD_NOW) first, before any Python import can load a
    // system copy of a library (`zlib` pulls in the host's libz.so.1): that proves each
    // module's own libraries resolve, even when its package refuses a direct import
    // (psycopg_binary does). Imports that then fail for reasons other than loading are fine.
    const SCRIPT: &str = r"
import ctypes, importlib, importlib.util, os, sys
sys.path.insert(0, sys.argv[1])
failed = []
for name in sys.argv[2:]:
    base = os.path.join(sys.argv[1], *name.split('.'))
    candidates = [p for p in os.listdir(os.path.dirname(base)) if p.startswith(os.path.basename(base) + '.') and p.endswith('.so')]
    try:
        ctypes.CDLL(os.path.join(os.path.dirname(base), candidates[0]), mode=os.RTLD_NOW)
    except OSError as error:
        failed.append('%s: %s' % (name, error))
for name in sys.argv[2:]:
    try:
        importlib.import_module(name)
    except Exception as error:
        text = str(error)
        if 'shared object' in text or 'undefined symbol' in text:
            failed.append('%s: %s' % (name, text))
if failed:
    sys.exit('\\n'.join(failed))
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
    patched [TMP]/venv/lib/python[VER]/site-packages/barkit/_native[EXT_SUFFIX]: run path [TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-libbar-2.3/lib:[TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-libbaz-0.9/lib -> [TMP]/store/488hznmlk6r1sgmypmnlvhp1fk817yq9-libbar-2.3/lib:[TMP]/store/kn9z1a0vr8mm1yi81h095aji6qifxr3n-libbaz-0.9/lib (restored in place)
    patched [TMP]/venv/lib/python[VER]/site-packages/fastfoo/_speedups[EXT_SUFFIX]: run path [TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-libfoo-1.0/lib -> [TMP]/store/j5w3hw449i2pz2l90br88sb9x5gnhlll-libfoo-1.0/lib (restored in place)

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

/// `--restore-only` (the hook's pass before strip and patchELF) restores the scrubbed entries in
/// place and leaves every growing edit, here `--append-rpath`, to the run after them.
#[test]
fn restore_only_restores_in_place_and_leaves_growth_for_later() {
    let scrubbed = Scrubbed::new();
    let fixture = &scrubbed.fixture;
    let sizes = |fixture: &VenvFixture| -> Vec<u64> {
        fixture
            .extensions
            .iter()
            .map(|extension| fs_err::metadata(&extension.path).unwrap().len())
            .collect()
    };
    let before = sizes(fixture);
    let output = run_ok(
        scrubbed
            .relink(&fixture.library_dirs())
            .args(["--restore-only", "--append-rpath", "/opt/extra/lib"])
            .arg(&fixture.venv),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout.matches("(restored in place)").count(), 2, "{stdout}");
    assert!(!stdout.contains("/opt/extra/lib"), "{stdout}");
    assert_eq!(sizes(fixture), before, "--restore-only must not relayout");
    let report = fixture.import_extensions(Some(OsStr::new(""))).unwrap();
    assert!(report.success, "{}", report.stderr);
    // The real run afterwards does the rest.
    let output = run_ok(
        scrubbed
            .relink(&fixture.library_dirs())
            .args(["--append-rpath", "/opt/extra/lib"])
            .arg(&fixture.venv),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout.matches(":/opt/extra/lib").count(), 2, "{stdout}");
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
    would patch [TMP]/venv/lib/python[VER]/site-packages/fastfoo/_speedups[EXT_SUFFIX]: run path [TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-libfoo-1.0/lib -> [TMP]/store/j5w3hw449i2pz2l90br88sb9x5gnhlll-libfoo-1.0/lib (restored in place)

    ----- stderr -----
    error: [TMP]/venv/lib/python[VER]/site-packages/barkit/_native[EXT_SUFFIX]: libbar.so.2 not found
    error: [TMP]/venv/lib/python[VER]/site-packages/barkit/_native[EXT_SUFFIX]: libbaz.so.0 not found
    would patch 1 files (1 restored in place), 1 unchanged, 0 skipped, 2 missing dependencies (0 ignored), 0 errors
    ");
    assert_eq!(scrubbed.extension_identities(), before);

    cmd_snapshot!(scrubbed.filters(), scrubbed.relink(&only_foo).args(["--ignore-missing", "libba?.so.*"]).arg(&fixture.venv), @"
    success: true
    exit_code: 0
    ----- stdout -----
    patched [TMP]/venv/lib/python[VER]/site-packages/fastfoo/_speedups[EXT_SUFFIX]: run path [TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-libfoo-1.0/lib -> [TMP]/store/j5w3hw449i2pz2l90br88sb9x5gnhlll-libfoo-1.0/lib (restored in place)

    ----- stderr -----
    warning: [TMP]/venv/lib/python[VER]/site-packages/barkit/_native[EXT_SUFFIX]: libbar.so.2 not found (ignored by `libba?.so.*`)
    warning: [TMP]/venv/lib/python[VER]/site-packages/barkit/_native[EXT_SUFFIX]: libbaz.so.0 not found (ignored by `libba?.so.*`)
    patched 1 files (1 restored in place), 1 unchanged, 0 skipped, 2 missing dependencies (2 ignored), 0 errors
    ");
    cmd_snapshot!(scrubbed.filters(), scrubbed.relink(&only_foo).args(["--json", "--ignore-missing", "libbar.so.2"]).arg(&fixture.venv), @r#"
    success: false
    exit_code: 1
    ----- stdout -----
    {"action":"unchanged","dependencies":[{"dir":null,"kind":"needed","name":{"text":"libbar.so.2"},"resolution":"missing"},{"dir":null,"kind":"needed","name":{"text":"libbaz.so.0"},"resolution":"missing"},{"dir":null,"kind":"needed","name":{"text":"libc.so.6"},"resolution":"libc"}],"interpreter_new":null,"interpreter_old":null,"path":{"text":"[TMP]/venv/lib/python[VER]/site-packages/barkit/_native[EXT_SUFFIX]"},"restored_entries":0,"run_path_new":{"text":"[TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-libbar-2.3/lib:[TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-libbaz-0.9/lib"},"run_path_old":{"text":"[TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-libbar-2.3/lib:[TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-libbaz-0.9/lib"},"type":"relink","write":"none"}
    {"ignored":true,"kind":"needed","name":{"text":"libbar.so.2"},"path":{"text":"[TMP]/venv/lib/python[VER]/site-packages/barkit/_native[EXT_SUFFIX]"},"type":"missing"}
    {"ignored":false,"kind":"needed","name":{"text":"libbaz.so.0"},"path":{"text":"[TMP]/venv/lib/python[VER]/site-packages/barkit/_native[EXT_SUFFIX]"},"type":"missing"}
    {"action":"unchanged","dependencies":[{"dir":{"text":"[TMP]/store/j5w3hw449i2pz2l90br88sb9x5gnhlll-libfoo-1.0/lib"},"kind":"needed","name":{"text":"libfoo.so.1"},"resolution":"library"},{"dir":null,"kind":"needed","name":{"text":"libc.so.6"},"resolution":"libc"}],"interpreter_new":null,"interpreter_old":null,"path":{"text":"[TMP]/venv/lib/python[VER]/site-packages/fastfoo/_speedups[EXT_SUFFIX]"},"restored_entries":0,"run_path_new":{"text":"[TMP]/store/j5w3hw449i2pz2l90br88sb9x5gnhlll-libfoo-1.0/lib"},"run_path_old":{"text":"[TMP]/store/j5w3hw449i2pz2l90br88sb9x5gnhlll-libfoo-1.0/lib"},"type":"relink","write":"none"}
    {"dry_run":false,"errors":0,"ignored":1,"interrupted":0,"missing":2,"patched":0,"restored_in_place":0,"skipped":0,"type":"summary","unchanged":2}

    ----- stderr -----
    "#);
}

#[test]
/// Runtime dependencies go to dynamic executables only (autoPatchelfHook's rule): extension
/// modules get the directories they need and the appended run paths.
fn libraries_elsewhere_get_a_new_run_path_without_runtime_dependencies() {
    let scrubbed = Scrubbed::new();
    let fixture = &scrubbed.fixture;
    let elsewhere = scrubbed.dir.path().join("elsewhere");
    let mut dirs = Vec::new();
    for library in &fixture.libraries {
        let dir = elsewhere.join(library.spec.package).join("lib");
        storepatch_test::pipeline::copy_tree(&library.lib_dir, &dir).unwrap();
        dirs.push(dir);
    }
    let runtime = scrubbed.dir.path().join("runtime/lib");
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
    patched [TMP]/venv/lib/python[VER]/site-packages/barkit/_native[EXT_SUFFIX]: run path [TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-libbar-2.3/lib:[TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-libbaz-0.9/lib -> [TMP]/elsewhere/libbar-2.3/lib:[TMP]/elsewhere/libbaz-0.9/lib:/opt/extra/lib
    patched [TMP]/venv/lib/python[VER]/site-packages/fastfoo/_speedups[EXT_SUFFIX]: run path [TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-libfoo-1.0/lib -> [TMP]/elsewhere/libfoo-1.0/lib:/opt/extra/lib

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

/// The wheels of the realistic tree: real manylinux builds from `PyPI`, with bundled libraries in
/// `*.libs` directories (auditwheel's `$ORIGIN` run paths) and dependencies on the system's
/// `libz.so.1` and `libstdc++.so.6`.
const WHEELS: &[&str] = &[
    "numpy==2.2.6",
    "psycopg-binary==3.2.9",
    "cryptography==45.0.5",
    "pydantic-core==2.33.2",
    "lxml==6.0.0",
];

/// `site-packages` of a venv with [`WHEELS`] installed, built once (with network access to `PyPI`)
/// and cached under `target/wheel-cache/<key>`; tests copy it.
pub(crate) fn wheel_site_packages() -> PathBuf {
    let python = &storepatch_test::fixture_store::host_python()
        .unwrap()
        .executable;
    let key: String = {
        let mut text = format!("{}:{}", python.display(), WHEELS.join(","));
        text = text.replace(|c: char| !c.is_ascii_alphanumeric(), "_");
        let digest = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        format!("{digest:016x}")
    };
    let cache = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/wheel-cache")
        .join(key);
    let site_packages = cache.join("site-packages");
    if site_packages.is_dir() {
        return site_packages;
    }
    fs_err::create_dir_all(&cache).unwrap();
    let staging = tempfile::tempdir_in(&cache).unwrap();
    let venv = staging.path().join("venv");
    let run = |command: &mut Command| {
        let output = command.output().unwrap();
        assert!(
            output.status.success(),
            "{command:?}:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    run(Command::new(python).args(["-m", "venv"]).arg(&venv));
    run(Command::new(venv.join("bin/python"))
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-compile",
            "--only-binary=:all:",
        ])
        .args(WHEELS));
    let installed = fs_err::read_dir(venv.join("lib"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("site-packages");
    // Concurrent tests may race to fill the cache; every copy is equivalent.
    if fs_err::rename(&installed, &site_packages).is_err() {
        assert!(site_packages.is_dir());
    }
    site_packages
}

/// Extension modules (dotted names) below `site_packages`, sorted.
fn extension_modules(site_packages: &Path, suffix: &str) -> Vec<String> {
    let mut modules: Vec<String> = walkdir::WalkDir::new(site_packages)
        .into_iter()
        .map(|entry| entry.unwrap().into_path())
        .filter_map(|path| {
            let relative = path.strip_prefix(site_packages).ok()?.to_str()?.to_owned();
            let stem = relative
                .strip_suffix(suffix)
                .or_else(|| relative.strip_suffix(".abi3.so"))?;
            (!stem.contains(".libs/")).then(|| stem.replace('/', "."))
        })
        .collect();
    modules.sort();
    modules
}

/// The realistic tree: the venv fixture plus [`WHEELS`], scrubbed, and store packages with the
/// system libraries the wheels need (`zlib`, `gcc-lib`).
pub(crate) struct Realistic {
    pub(crate) scrubbed: Scrubbed,
    pub(crate) library_dirs: Vec<PathBuf>,
    pub(crate) modules: Vec<String>,
}

impl Realistic {
    /// In a temporary store dir.
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let fixture = VenvFixture::builder(dir.path().join("venv"), &store)
            .build()
            .unwrap();
        let mut extra = Vec::new();
        for (name, _) in system_packages() {
            let path = storepatch_test::fixture_store::fake_store_path(&store, 0, name);
            write_system_package(name, &path);
            extra.push(path.join("lib"));
        }
        Self::finish(dir, store, fixture, extra)
    }

    /// With every package added to the real store with `nix-store --add`.
    pub(crate) fn in_nix_store(nix: &storepatch_test::nix::NixJudge) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let staging = dir.path().join("staging");
        let mut store_paths = Vec::new();
        for package in storepatch_test::fixture_store::stage_packages(&staging).unwrap() {
            store_paths.push((package.name, nix.add(&package.path).unwrap()));
        }
        let mut extra = Vec::new();
        for (name, _) in system_packages() {
            let path = staging.join(name);
            write_system_package(name, &path);
            extra.push(nix.add(&path).unwrap().join("lib"));
        }
        let fixture = VenvFixture::builder(dir.path().join("venv"), nix.store_dir())
            .store_paths(store_paths)
            .build()
            .unwrap();
        Self::finish(dir, nix.store_dir().to_path_buf(), fixture, extra)
    }

    fn finish(
        dir: tempfile::TempDir,
        store: PathBuf,
        fixture: VenvFixture,
        extra: Vec<PathBuf>,
    ) -> Self {
        let wheels = wheel_site_packages();
        let status = Command::new("cp")
            .arg("-a")
            .arg(wheels.join("."))
            .arg(&fixture.site_packages)
            .status()
            .unwrap();
        assert!(status.success());
        let modules = extension_modules(&fixture.site_packages, &fixture.python.ext_suffix);
        run_ok(
            storepatch()
                .args(["scrub", "--store-dir"])
                .arg(&store)
                .arg(&fixture.venv),
        );
        let mut library_dirs = fixture.library_dirs();
        library_dirs.extend(extra);
        Self {
            scrubbed: Scrubbed {
                dir,
                store,
                fixture,
            },
            library_dirs,
            modules,
        }
    }

    /// Relinks, imports every extension module with an empty `LD_LIBRARY_PATH`, checks where
    /// the libraries came from, audits, and relinks again to show nothing changes.
    pub(crate) fn relink_and_check(&self) {
        let scrubbed = &self.scrubbed;
        let fixture = &scrubbed.fixture;
        let output = scrubbed
            .relink(&self.library_dirs)
            .arg("--json")
            .arg(&fixture.venv)
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let summary = json_lines(&output.stdout).pop().unwrap();
        assert_eq!(summary["missing"], 0, "{summary}");
        assert_eq!(summary["errors"], 0, "{summary}");

        let mapped = mapped_libraries(
            &fixture.python.executable,
            &fixture.site_packages,
            &self.modules,
        );
        for module in &self.modules {
            let file = module.replace('.', "/");
            assert!(
                mapped.iter().any(|path| path
                    .strip_prefix(&fixture.site_packages)
                    .is_ok_and(|relative| relative.to_string_lossy().starts_with(&file))),
                "{module} not loaded"
            );
        }
        // Every library from a supplied directory was loaded from there, never elsewhere.
        for dir in &self.library_dirs {
            for entry in fs_err::read_dir(dir).unwrap() {
                let name = entry.unwrap().file_name();
                let loaded: Vec<&PathBuf> = mapped
                    .iter()
                    .filter(|path| path.file_name() == Some(name.as_os_str()))
                    .collect();
                assert!(
                    loaded
                        .iter()
                        .all(|path| path.parent() == Some(dir.as_path())),
                    "{} loaded from elsewhere: {loaded:?}",
                    name.to_string_lossy()
                );
            }
        }
        // What the interpreter maps before any module is loaded (Debian's python3.11 links the
        // system libz itself): the loader reuses that copy, so it cannot come from the store.
        let at_start = mapped_libraries(&fixture.python.executable, &fixture.site_packages, &[]);
        for library in [
            "libfoo.so.1.0",
            "libbar.so.2.3",
            "libbaz.so.0.9",
            "libz.so.1",
            "libstdc++.so.6",
        ] {
            let stem = &library[..library.find(".so").map_or(library.len(), |at| at + 3)];
            if let Some(own) = at_start.iter().find(|path| {
                path.file_name()
                    .is_some_and(|name| name.to_string_lossy().starts_with(stem))
            }) {
                let _ = writeln!(
                    std::io::stderr(),
                    "{library}: the interpreter itself maps {} before any module; not checked",
                    own.display()
                );
                continue;
            }
            let loaded = mapped
                .iter()
                .find(|path| path.file_name() == Some(OsStr::new(library)))
                .unwrap_or_else(|| panic!("{library} not loaded: {mapped:?}"));
            assert!(
                self.library_dirs
                    .iter()
                    .any(|dir| loaded.parent() == Some(dir.as_path())),
                "{library} loaded from {}",
                loaded.display()
            );
        }

        let output = storepatch()
            .args(["audit", "--store-dir"])
            .arg(&scrubbed.store)
            .arg(&fixture.site_packages)
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );

        let output = scrubbed
            .relink(&self.library_dirs)
            .arg("--json")
            .arg(&fixture.venv)
            .output()
            .unwrap();
        let summary = json_lines(&output.stdout).pop().unwrap();
        assert_eq!(summary["patched"], 0, "not idempotent: {summary}");
    }
}

/// Store packages made of the host's own copies of system libraries the wheels need.
fn system_packages() -> [(&'static str, &'static [&'static str]); 2] {
    [
        ("zlib-1.3.1", &["libz.so.1"]),
        ("gcc-13.3.0-lib", &["libstdc++.so.6"]),
    ]
}

fn write_system_package(name: &str, path: &Path) {
    if path.exists() {
        return;
    }
    let (_, libraries) = system_packages()
        .into_iter()
        .find(|(package, _)| *package == name)
        .unwrap();
    let partial = path.with_extension("partial");
    fs_err::create_dir_all(partial.join("lib")).unwrap();
    for library in libraries {
        let source = [
            "/lib/x86_64-linux-gnu",
            "/usr/lib/x86_64-linux-gnu",
            "/usr/lib64",
            "/lib64",
        ]
        .iter()
        .map(|dir| Path::new(dir).join(library))
        .find(|candidate| candidate.exists())
        .unwrap_or_else(|| panic!("{library} not found on this machine"));
        fs_err::copy(&source, partial.join("lib").join(library)).unwrap();
    }
    if fs_err::rename(&partial, path).is_err() {
        assert!(path.exists());
    }
}

#[test]
fn realistic_tree_of_wheels_and_extensions_loads_after_relink() {
    Realistic::new().relink_and_check();
}

#[test]
fn realistic_tree_in_the_real_nix_store() -> anyhow::Result<()> {
    let Some(nix) = storepatch_test::nix::NixJudge::new_or_skip(
        "relink::realistic_tree_in_the_real_nix_store",
    )?
    else {
        return Ok(());
    };
    Realistic::in_nix_store(&nix).relink_and_check();
    Ok(())
}

/// Runs a command that must succeed.
fn run_checked(command: &mut Command) {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn odd_files_are_skipped_or_reported_and_never_written() {
    let scrubbed = Scrubbed::new();
    let fixture = &scrubbed.fixture;
    let extra = fixture.site_packages.join("extra");
    fs_err::create_dir_all(&extra).unwrap();
    let libfoo = fixture.libraries[0].lib_dir.join("libfoo.so.1.0");

    // No multilib gcc here (`gcc -m32` cannot link), so the foreign library is crafted: a real
    // x86-64 library with e_machine set to EM_AARCH64 (183).
    let mut foreign = fs_err::read(&libfoo).unwrap();
    foreign[18..20].copy_from_slice(&183u16.to_le_bytes());
    fs_err::write(extra.join("libforeign.so"), &foreign).unwrap();
    // Not an ELF file at all, though named like a library.
    fs_err::write(extra.join("libnotelf.so"), "INPUT(-lfoo)\n").unwrap();
    // The first 200 bytes of a real library: the program headers are cut off.
    fs_err::write(
        extra.join("libtruncated.so"),
        &fs_err::read(&libfoo).unwrap()[..200],
    )
    .unwrap();
    // A static executable, if this machine has the static libc.
    let source = scrubbed.dir.path().join("static.c");
    fs_err::write(&source, "int main(void) { return 0; }\n").unwrap();
    let static_built = Command::new("gcc")
        .args(["-static", "-o"])
        .arg(extra.join("static-tool"))
        .arg(&source)
        .status()
        .is_ok_and(|status| status.success());
    if !static_built {
        fs_err::write(extra.join("static-tool"), b"placeholder").unwrap();
        let _ = writeln!(
            std::io::stderr(),
            "note: gcc -static failed (libc6-dev static libraries missing?); the static case is not covered"
        );
    }
    // A read-only extension (mode 0444) that needs relinking.
    let read_only = fixture.extensions[0].path.clone();
    fs_err::set_permissions(&read_only, std::fs::Permissions::from_mode(0o444)).unwrap();

    let untouched: Vec<PathBuf> = [
        "libforeign.so",
        "libnotelf.so",
        "libtruncated.so",
        "static-tool",
    ]
    .iter()
    .map(|name| extra.join(name))
    .collect();
    let before: Vec<_> = untouched.iter().map(|path| identity(path)).collect();
    cmd_snapshot!(scrubbed.filters(), scrubbed.relink(&fixture.library_dirs()).arg(&fixture.venv), @"
    success: false
    exit_code: 2
    ----- stdout -----
    patched [TMP]/venv/lib/python[VER]/site-packages/barkit/_native[EXT_SUFFIX]: run path [TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-libbar-2.3/lib:[TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-libbaz-0.9/lib -> [TMP]/store/488hznmlk6r1sgmypmnlvhp1fk817yq9-libbar-2.3/lib:[TMP]/store/kn9z1a0vr8mm1yi81h095aji6qifxr3n-libbaz-0.9/lib (restored in place)
    patched [TMP]/venv/lib/python[VER]/site-packages/fastfoo/_speedups[EXT_SUFFIX]: run path [TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-libfoo-1.0/lib -> [TMP]/store/j5w3hw449i2pz2l90br88sb9x5gnhlll-libfoo-1.0/lib (restored in place)

    ----- stderr -----
    note: skipping [TMP]/venv/lib/python[VER]/site-packages/extra/libforeign.so: architecture aarch64 (64-bit) differs from the target x86-64 (64-bit)
    note: skipping [TMP]/venv/lib/python[VER]/site-packages/extra/libnotelf.so: not an ELF file
    error: cannot relink `[TMP]/venv/lib/python[VER]/site-packages/extra/libtruncated.so`: malformed ELF: program header table at offset 0x40
    note: skipping [TMP]/venv/lib/python[VER]/site-packages/extra/static-tool: statically linked
    patched 2 files (2 restored in place), 0 unchanged, 3 skipped, 0 missing dependencies (0 ignored), 1 errors
    ");
    let after: Vec<_> = untouched.iter().map(|path| identity(path)).collect();
    assert_eq!(before, after);
    assert_eq!(
        fs_err::metadata(&read_only).unwrap().permissions().mode() & 0o777,
        0o444
    );
    let report = fixture.import_extensions(Some(OsStr::new(""))).unwrap();
    assert!(report.success, "{}", report.stderr);
}

#[test]
fn files_that_cannot_be_written_are_errors_and_stay_untouched() {
    let scrubbed = Scrubbed::new();
    let fixture = &scrubbed.fixture;
    // The tree belongs to root; `nobody` may read it but not write the extensions.
    fs_err::set_permissions(scrubbed.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let Some(mut command) = crate::common::storepatch_as_nobody() else {
        return;
    };
    let before = scrubbed.extension_identities();
    command.args(["relink", "--store-dir"]).arg(&scrubbed.store);
    for dir in fixture.library_dirs() {
        command.arg("--library-path").arg(dir);
    }
    cmd_snapshot!(scrubbed.filters(), command.arg(&fixture.venv), @"
    success: false
    exit_code: 2
    ----- stdout -----

    ----- stderr -----
    error: cannot open `[TMP]/venv/lib/python[VER]/site-packages/barkit/_native[EXT_SUFFIX]`: Permission denied (os error 13)
    error: cannot open `[TMP]/venv/lib/python[VER]/site-packages/fastfoo/_speedups[EXT_SUFFIX]`: Permission denied (os error 13)
    patched 0 files (0 restored in place), 0 unchanged, 0 skipped, 0 missing dependencies (0 ignored), 2 errors
    ");
    assert_eq!(scrubbed.extension_identities(), before);
}

#[test]
fn executables_get_the_interpreter_and_still_run() {
    let scrubbed = Scrubbed::new();
    let fixture = &scrubbed.fixture;
    let libfoo = &fixture.libraries[0];
    let tree = scrubbed.dir.path().join("app");
    fs_err::create_dir_all(tree.join("bin")).unwrap();
    let source = scrubbed.dir.path().join("hello.c");
    fs_err::write(
        &source,
        "#include <stdio.h>\nextern int foo_add(int, int);\nint main(void) { printf(\"%d\\n\", foo_add(20, 21)); return 0; }\n",
    )
    .unwrap();
    run_checked(
        Command::new("gcc")
            .arg("-o")
            .arg(tree.join("bin/hello"))
            .arg(&source)
            .arg(format!("-L{}", libfoo.lib_dir.display()))
            .arg("-lfoo"),
    );
    // A private copy of the dynamic linker stands in for `$NIX_BINTOOLS`' one.
    let linker_dir = scrubbed.dir.path().join("glibc/lib");
    fs_err::create_dir_all(&linker_dir).unwrap();
    let linker = linker_dir.join("ld-linux-x86-64.so.2");
    fs_err::copy("/lib64/ld-linux-x86-64.so.2", &linker).unwrap();
    let bintools = scrubbed.dir.path().join("bintools");
    fs_err::create_dir_all(bintools.join("nix-support")).unwrap();
    fs_err::write(
        bintools.join("nix-support/dynamic-linker"),
        format!("{}\n", linker.display()),
    )
    .unwrap();
    cmd_snapshot!(
        scrubbed.filters(),
        scrubbed
            .relink(std::slice::from_ref(&libfoo.lib_dir))
            .env("NIX_BINTOOLS", &bintools)
            .arg(&tree),
        @"
    success: true
    exit_code: 0
    ----- stdout -----
    patched [TMP]/app/bin/hello: run path (none) -> [TMP]/store/j5w3hw449i2pz2l90br88sb9x5gnhlll-libfoo-1.0/lib interpreter -> [TMP]/glibc/lib/ld-linux-x86-64.so.2

    ----- stderr -----
    patched 1 files (0 restored in place), 0 unchanged, 0 skipped, 0 missing dependencies (0 ignored), 0 errors
    "
    );
    let output = Command::new(tree.join("bin/hello"))
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "42\n");
}

/// Sonames the fake `orig-libc/lib` of the parity test holds (nixpkgs' glibc ships these, and
/// `libgcc_s.so.1`, in its `lib`).
const FAKE_LIBC: &[&str] = &[
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
    "libgcc_s.so.1",
    "ld-linux-x86-64.so.2",
];

/// The run path directories of every ELF file below `root`, with `$ORIGIN` expanded, normalised,
/// and `root` replaced by `<root>`, keyed by path relative to `root`.
fn run_path_dirs(root: &Path) -> std::collections::BTreeMap<PathBuf, Vec<String>> {
    use std::os::unix::ffi::OsStrExt;
    let mut dirs = std::collections::BTreeMap::new();
    for entry in walkdir::WalkDir::new(root).sort_by_file_name() {
        let entry = entry.unwrap();
        if !entry.file_type().is_file() {
            continue;
        }
        let bytes = fs_err::read(entry.path()).unwrap();
        let Ok(info) = storepatch_elf::ElfInfo::parse(&bytes) else {
            continue;
        };
        let origin = entry.path().parent().unwrap();
        let mut set: Vec<String> = info
            .run_path()
            .map(storepatch_relink::runpath::split)
            .unwrap_or_default()
            .iter()
            .map(|run_path_entry| {
                let expanded = storepatch_relink::runpath::expand(run_path_entry, origin)
                    .unwrap_or_else(|| run_path_entry.clone());
                let normalized = storepatch_relink::runpath::normalize(&expanded);
                String::from_utf8_lossy(&normalized).replace(
                    &*String::from_utf8_lossy(root.as_os_str().as_bytes()),
                    "<root>",
                )
            })
            .collect();
        set.sort();
        set.dedup();
        dirs.insert(entry.path().strip_prefix(root).unwrap().to_path_buf(), set);
    }
    dirs
}

/// Parity with nixpkgs' `auto-patchelf.py` (autoPatchelfHook's engine) on the realistic tree: the
/// same directories per file. Differences by design, which this comparison sees through:
/// `$ORIGIN` entries that resolve a library are kept where the hook writes the absolute
/// directory (compared after expansion, so compared as sets).
/// The exact run path strings are compared on gcc-built files by
/// `autopatchelf::same_run_paths_as_auto_patchelf_py`.
///
/// Needs a copy of `pkgs/by-name/au/auto-patchelf/source/auto-patchelf.py` outside the
/// repository, named by `$STOREPATCH_AUTO_PATCHELF`, plus `patchelf` and `pyelftools` for
/// `$STOREPATCH_AUTO_PATCHELF_PYTHON` (default `python3`).
#[test]
fn same_directories_as_auto_patchelf() {
    let Some(script) = std::env::var_os("STOREPATCH_AUTO_PATCHELF") else {
        let _ = writeln!(
            std::io::stderr(),
            "skipping relink::same_directories_as_auto_patchelf: set STOREPATCH_AUTO_PATCHELF to a copy of nixpkgs' auto-patchelf.py"
        );
        return;
    };
    let python = std::env::var_os("STOREPATCH_AUTO_PATCHELF_PYTHON").unwrap_or("python3".into());
    let realistic = Realistic::new();
    let scrubbed = &realistic.scrubbed;
    let fixture = &scrubbed.fixture;
    let work = scrubbed.dir.path();

    let libc = work.join("glibc");
    fs_err::create_dir_all(libc.join("lib")).unwrap();
    for name in FAKE_LIBC {
        fs_err::write(libc.join("lib").join(name), "").unwrap();
    }
    let bintools = work.join("bintools");
    fs_err::create_dir_all(bintools.join("nix-support")).unwrap();
    fs_err::write(
        bintools.join("nix-support/dynamic-linker"),
        "/lib64/ld-linux-x86-64.so.2\n",
    )
    .unwrap();
    fs_err::write(
        bintools.join("nix-support/orig-libc"),
        format!("{}\n", libc.display()),
    )
    .unwrap();

    let hook_tree = work.join("hook-venv");
    run_checked(
        Command::new("cp")
            .arg("-a")
            .arg(&fixture.venv)
            .arg(&hook_tree),
    );
    run_checked(
        Command::new(&python)
            .arg(&script)
            .arg("--paths")
            .arg(&hook_tree)
            .arg("--libs")
            .args(&realistic.library_dirs)
            .env("NIX_BINTOOLS", &bintools),
    );
    run_ok(
        scrubbed
            .relink(&realistic.library_dirs)
            .env("NIX_BINTOOLS", &bintools)
            .arg(&fixture.venv),
    );

    let ours = run_path_dirs(&fixture.venv);
    let theirs = run_path_dirs(&hook_tree);
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>()
    );
    let differences: Vec<String> = ours
        .iter()
        .filter(|(path, dirs)| theirs[*path] != **dirs)
        .map(|(path, dirs)| {
            format!(
                "{}:\n  storepatch: {dirs:?}\n  hook:       {:?}",
                path.display(),
                theirs[path]
            )
        })
        .collect();
    assert!(differences.is_empty(), "{}", differences.join("\n"));
    // The comparison covered the files that matter, and the hook did relink.
    assert!(ours.len() > 40, "{}", ours.len());
    let speedups = fixture.extensions[0]
        .path
        .strip_prefix(&fixture.venv)
        .unwrap();
    assert_eq!(
        theirs[speedups],
        vec![fixture.libraries[0].lib_dir.display().to_string()]
    );
    let umath = theirs
        .iter()
        .find(|(path, _)| path.to_string_lossy().contains("_multiarray_umath"))
        .unwrap()
        .1;
    assert!(
        umath
            .iter()
            .any(|dir| dir.ends_with("site-packages/numpy.libs")),
        "{umath:?}"
    );
}

#[test]
fn output_does_not_depend_on_the_thread_count() {
    let realistic = Realistic::new();
    let scrubbed = &realistic.scrubbed;
    let run = |threads: &str| {
        let output = scrubbed
            .relink(&realistic.library_dirs)
            .args(["--dry-run", "--json", "--threads", threads])
            .arg(&scrubbed.fixture.venv)
            .output()
            .unwrap();
        assert!(output.status.success());
        output.stdout
    };
    let one = run("1");
    assert!(json_lines(&one).len() > 40);
    assert_eq!(one, run("3"));
}

#[test]
fn hard_links_outside_the_tree_keep_their_contents() {
    let scrubbed = Scrubbed::new();
    let fixture = &scrubbed.fixture;
    let extension = &fixture.extensions[1].path;
    let outside = scrubbed.dir.path().join("outside.so");
    fs_err::hard_link(extension, &outside).unwrap();
    let before = fs_err::read(&outside).unwrap();
    let output = scrubbed
        .relink(&fixture.library_dirs())
        .arg(&fixture.venv)
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(fs_err::read(&outside).unwrap(), before);
    assert_ne!(fs_err::read(extension).unwrap(), before);
    let report = fixture.import_extensions(Some(OsStr::new(""))).unwrap();
    assert!(report.success, "{}", report.stderr);
}

#[test]
fn hard_links_inside_the_tree_stay_one_file() {
    use std::os::unix::fs::MetadataExt as _;
    let scrubbed = Scrubbed::new();
    let fixture = &scrubbed.fixture;
    let extension = &fixture.extensions[1].path;
    let second_name = extension.with_file_name("second-name.so");
    fs_err::hard_link(extension, &second_name).unwrap();
    let relink = |extra: &[&OsStr]| {
        json_lines(
            &run_ok(
                scrubbed
                    .relink(&fixture.library_dirs())
                    .arg("--json")
                    .args(extra)
                    .arg(&fixture.venv),
            )
            .stdout,
        )
    };
    // First the scrubbed run path is restored (an edit in place, but the engine never writes
    // through a shared inode: it writes a copy), then a long extra run path entry does not fit
    // in place and the file is laid out anew. Either way the first name gets a new inode, and the
    // second name must follow it.
    let long_dir = scrubbed.dir.path().join("x".repeat(200));
    for (extra, write) in [
        (vec![], "in_place"),
        (
            vec![OsStr::new("--append-rpath"), long_dir.as_os_str()],
            "relayout",
        ),
    ] {
        let before = fs_err::read(extension).unwrap();
        let lines = relink(&extra);
        let record = |path: &Path| {
            lines
                .iter()
                .find(|line| line["path"]["text"] == path.to_str().unwrap())
                .unwrap_or_else(|| panic!("no record for {}", path.display()))
                .clone()
        };
        assert_eq!(record(extension)["write"], write);
        let link = record(&second_name);
        assert_eq!(link["type"], "hard_link");
        assert_eq!(link["relinked"], true, "{write}");
        assert_eq!(link["first"]["text"], extension.to_str().unwrap());
        let (first, second) = (
            fs_err::metadata(extension).unwrap(),
            fs_err::metadata(&second_name).unwrap(),
        );
        assert_eq!(
            (first.dev(), first.ino()),
            (second.dev(), second.ino()),
            "{write}"
        );
        assert_eq!(first.nlink(), 2);
        assert_ne!(fs_err::read(&second_name).unwrap(), before);
        let report = fixture.import_extensions(Some(OsStr::new(""))).unwrap();
        assert!(report.success, "{}", report.stderr);
    }
    // Running again changes nothing, and both names are reported as one file.
    let inode = fs_err::metadata(extension).unwrap().ino();
    let again = relink(&[OsStr::new("--append-rpath"), long_dir.as_os_str()]);
    let summary = again.last().unwrap();
    assert_eq!(summary["patched"], 0, "{summary}");
    assert_eq!(fs_err::metadata(&second_name).unwrap().ino(), inode);
}

#[test]
fn library_trees_are_searched_recursively_and_no_recurse_stays_at_the_top() {
    let scrubbed = Scrubbed::new();
    let fixture = &scrubbed.fixture;
    cmd_snapshot!(
        scrubbed.filters(),
        scrubbed.relink(&[]).arg("--no-recurse").arg("--library-tree").arg(&scrubbed.store).arg(&fixture.venv),
        @"
    success: true
    exit_code: 0
    ----- stdout -----

    ----- stderr -----
    patched 0 files (0 restored in place), 0 unchanged, 0 skipped, 0 missing dependencies (0 ignored), 0 errors
    "
    );
    cmd_snapshot!(
        scrubbed.filters(),
        scrubbed.relink(&[]).arg("--library-tree").arg(&scrubbed.store).arg(&fixture.venv),
        @"
    success: true
    exit_code: 0
    ----- stdout -----
    patched [TMP]/venv/lib/python[VER]/site-packages/barkit/_native[EXT_SUFFIX]: run path [TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-libbar-2.3/lib:[TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-libbaz-0.9/lib -> [TMP]/store/488hznmlk6r1sgmypmnlvhp1fk817yq9-libbar-2.3/lib:[TMP]/store/kn9z1a0vr8mm1yi81h095aji6qifxr3n-libbaz-0.9/lib
    patched [TMP]/venv/lib/python[VER]/site-packages/fastfoo/_speedups[EXT_SUFFIX]: run path [TMP]/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-libfoo-1.0/lib -> [TMP]/store/j5w3hw449i2pz2l90br88sb9x5gnhlll-libfoo-1.0/lib

    ----- stderr -----
    patched 2 files (0 restored in place), 0 unchanged, 0 skipped, 0 missing dependencies (0 ignored), 0 errors
    "
    );
    let report = fixture.import_extensions(Some(OsStr::new(""))).unwrap();
    assert!(report.success, "{}", report.stderr);
}
