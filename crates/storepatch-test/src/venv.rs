//! A realistic Python virtualenv fixture, like the one `uv sync` leaves in a fixed-output
//! derivation, with every kind of store reference storepatch must find and rewrite.
//!
//! The tree has real `CPython` extension modules (gcc-built against the host Python's headers) whose
//! RUNPATH points into the store and which call into real shared libraries there, so "the scrubbed
//! or relinked binary still loads" is a check a test can actually run
//! ([`VenvFixture::import_extensions`]).
//!
//! ```no_run
//! use storepatch_test::venv::{ReferenceKind, VenvFixture};
//!
//! let dir = tempfile::tempdir()?;
//! let fixture = VenvFixture::builder(dir.path().join("venv"), dir.path().join("store")).build()?;
//! assert!(fixture.import_extensions(None)?.success);
//! assert!(!fixture.store_paths_with(ReferenceKind::Contents).is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail, ensure};
use rayon::prelude::*;

use crate::fixture_store::{
    self, HostPython, LIBRARIES, LibrarySpec, fake_store_path, run_checked, splitmix64, symlink,
};

/// Where a store reference sits in the fixture tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReferenceKind {
    /// `<storedir>/<hash>-<name>` in a regular file's contents (what the old `grep` finds).
    Contents,
    /// Only the 32-character hash part, without the store dir, in a regular file's contents.
    BareHash,
    /// The hash part in the name of a file or directory.
    FileName,
    /// The full store path in a symlink's target.
    SymlinkTarget,
}

/// One store reference placed in the tree.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FixtureReference {
    /// The referenced store path, `<storedir>/<hash>-<name>`.
    pub store_path: PathBuf,
    /// The file, directory or symlink holding it, relative to the venv root.
    pub file: PathBuf,
    /// How it is held.
    pub kind: ReferenceKind,
}

/// A library package in the fixture's store.
#[derive(Debug, Clone)]
pub struct FixtureLibrary {
    /// What was built.
    pub spec: LibrarySpec,
    /// Its store path, `<storedir>/<hash>-<package>`.
    pub store_path: PathBuf,
    /// `<store_path>/lib`, the directory to put on a library search path.
    pub lib_dir: PathBuf,
}

/// A compiled `CPython` extension module in the venv.
#[derive(Debug, Clone)]
pub struct ExtensionModule {
    /// Dotted module name to import, e.g. `fastfoo._speedups`.
    pub module: String,
    /// The `.so` file, absolute.
    pub path: PathBuf,
    /// What the module's `check()` function returns when its libraries loaded correctly.
    pub expected_check: i64,
    /// The store paths whose `lib/` directories make up the module's RUNPATH, in order.
    pub runpath_store_paths: Vec<PathBuf>,
}

/// Outcome of importing extension modules in a Python subprocess.
#[derive(Debug, Clone)]
pub struct ImportReport {
    /// Whether every module imported and its `check()` returned the expected value.
    pub success: bool,
    /// Modules that failed, in the order given.
    pub failed_modules: Vec<String>,
    /// The subprocess's stdout (one `ok <module>` line per success).
    pub stdout: String,
    /// The subprocess's stderr (one `FAIL <module>: <error>` line per failure).
    pub stderr: String,
}

/// Builder for [`VenvFixture`].
#[derive(Debug, Clone)]
pub struct VenvFixtureBuilder {
    venv: PathBuf,
    store_dir: PathBuf,
    seed: u64,
    store_paths: Vec<(String, PathBuf)>,
}

impl VenvFixtureBuilder {
    /// Seed for the generated hash parts (default 0). Different seeds give disjoint store paths.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Use existing store paths, as `(package name, store path)` pairs, for the packages instead of
    /// creating them under the store dir. Typically the packages from
    /// [`fixture_store::stage_packages`], each put into the real store with `nix-store --add`;
    /// every package in [`LIBRARIES`] and the Python package must be supplied, and each path must
    /// be directly inside the store dir. Paths that are only referenced, never loaded (the source
    /// tree, openssl, ...), still get generated hashes.
    #[must_use]
    pub fn store_paths(mut self, store_paths: Vec<(String, PathBuf)>) -> Self {
        self.store_paths = store_paths;
        self
    }

    /// Creates the store packages (unless supplied) and the venv tree.
    ///
    /// The venv directory must not exist or be empty. Packages that already exist under a
    /// temporary store dir are reused, so several fixtures may share one store.
    pub fn build(self) -> Result<VenvFixture> {
        let python = fixture_store::host_python()?;
        fs_err::create_dir_all(&self.venv)?;
        ensure!(
            fs_err::read_dir(&self.venv)?.next().is_none(),
            "venv directory {} is not empty",
            self.venv.display()
        );
        fs_err::create_dir_all(&self.store_dir)?;

        let libraries = LIBRARIES
            .iter()
            .map(|spec| {
                let store_path = self.package(spec.package, |dir| {
                    fixture_store::write_library_package(spec, dir)
                })?;
                Ok(FixtureLibrary {
                    spec: *spec,
                    lib_dir: store_path.join("lib"),
                    store_path,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let python_store_path = self.package(&python.package_name(), |dir| {
            fixture_store::write_python_package(python, dir)
        })?;

        let mut writer = TreeWriter {
            venv: self.venv.clone(),
            references: Vec::new(),
        };
        let layout = Layout {
            python,
            python_store_path: &python_store_path,
            libraries: &libraries,
            store_dir: &self.store_dir,
            seed: self.seed,
        };
        let extensions = layout.write_tree(&mut writer)?;
        let mut references = writer.references;
        references.sort();

        Ok(VenvFixture {
            site_packages: self
                .venv
                .join("lib")
                .join(python.lib_dir_name())
                .join("site-packages"),
            venv: self.venv,
            store_dir: self.store_dir,
            python: python.clone(),
            python_store_path,
            libraries,
            extensions,
            references,
        })
    }

    /// The store path of package `name`: the supplied one, or a generated one that is created
    /// with `write` unless it exists already.
    fn package(&self, name: &str, write: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
        if !self.store_paths.is_empty() {
            let (_, path) = self
                .store_paths
                .iter()
                .find(|(supplied, _)| supplied == name)
                .with_context(|| format!("no store path supplied for package {name}"))?;
            ensure!(
                path.parent() == Some(self.store_dir.as_path()),
                "supplied store path {} is not directly inside {}",
                path.display(),
                self.store_dir.display()
            );
            return Ok(path.clone());
        }
        let path = fake_store_path(&self.store_dir, self.seed, name);
        if !path.exists() {
            // Build next to the final place, then rename, so a half-written package never
            // looks complete to a concurrent or later build.
            let partial = tempfile::Builder::new()
                .prefix(".partial-")
                .tempdir_in(&self.store_dir)
                .with_context(|| format!("creating a temp dir in {}", self.store_dir.display()))?;
            let staged = partial.path().join(name);
            write(&staged)?;
            // Losing a race to another build of the same package is fine: its copy is identical.
            if let Err(error) = fs_err::rename(&staged, &path)
                && !path.exists()
            {
                return Err(error.into());
            }
        }
        Ok(path)
    }
}

/// A built venv fixture: what was created, and every reference placed in it.
#[derive(Debug, Clone)]
pub struct VenvFixture {
    /// The venv root.
    pub venv: PathBuf,
    /// The store dir all store paths are in.
    pub store_dir: PathBuf,
    /// The interpreter the extension modules were built for and are imported with.
    pub python: HostPython,
    /// The interpreter package's store path, `<storedir>/<hash>-python3-X.Y.Z`.
    pub python_store_path: PathBuf,
    /// The library packages, in [`LIBRARIES`] order.
    pub libraries: Vec<FixtureLibrary>,
    /// `<venv>/lib/pythonX.Y/site-packages`.
    pub site_packages: PathBuf,
    /// The compiled extension modules.
    pub extensions: Vec<ExtensionModule>,
    /// Every reference placed in the tree, sorted.
    pub references: Vec<FixtureReference>,
}

impl VenvFixture {
    /// Starts a fixture in `venv` whose store paths live in `store_dir`.
    pub fn builder(venv: impl Into<PathBuf>, store_dir: impl Into<PathBuf>) -> VenvFixtureBuilder {
        VenvFixtureBuilder {
            venv: venv.into(),
            store_dir: store_dir.into(),
            seed: 0,
            store_paths: Vec::new(),
        }
    }

    /// Every store path referenced anywhere in the tree.
    pub fn store_paths(&self) -> BTreeSet<PathBuf> {
        self.references
            .iter()
            .map(|reference| reference.store_path.clone())
            .collect()
    }

    /// The store paths referenced in the given way.
    pub fn store_paths_with(&self, kind: ReferenceKind) -> BTreeSet<PathBuf> {
        self.references
            .iter()
            .filter(|reference| reference.kind == kind)
            .map(|reference| reference.store_path.clone())
            .collect()
    }

    /// The hash parts of every referenced store path.
    pub fn hash_parts(&self) -> BTreeSet<String> {
        self.store_paths()
            .iter()
            .map(|path| hash_part(path).to_owned())
            .collect()
    }

    /// The library packages' store paths.
    pub fn library_store_paths(&self) -> Vec<PathBuf> {
        self.libraries
            .iter()
            .map(|library| library.store_path.clone())
            .collect()
    }

    /// The `lib/` directories needed to load every extension module (for `LD_LIBRARY_PATH`, or
    /// as `relink` library dirs).
    pub fn library_dirs(&self) -> Vec<PathBuf> {
        self.libraries
            .iter()
            .map(|library| library.lib_dir.clone())
            .collect()
    }

    /// [`library_dirs`](Self::library_dirs) joined with `:`.
    pub fn library_path(&self) -> std::ffi::OsString {
        std::env::join_paths(self.library_dirs()).unwrap_or_default()
    }

    /// Dotted names of the extension modules.
    pub fn module_names(&self) -> Vec<String> {
        self.extensions
            .iter()
            .map(|extension| extension.module.clone())
            .collect()
    }

    /// Imports every extension module from this venv's site-packages (see
    /// [`import_extensions_from`](Self::import_extensions_from)).
    pub fn import_extensions(&self, ld_library_path: Option<&OsStr>) -> Result<ImportReport> {
        self.import_extensions_from(&self.site_packages, ld_library_path)
    }

    /// Imports every extension module from `site_packages` (for instance a scrubbed copy of this
    /// venv) in a fresh Python with `LD_BIND_NOW=1`, `LD_LIBRARY_PATH` set to `ld_library_path`
    /// or removed when `None`, and calls each module's `check()`.
    pub fn import_extensions_from(
        &self,
        site_packages: &Path,
        ld_library_path: Option<&OsStr>,
    ) -> Result<ImportReport> {
        import_extensions(
            &self.python,
            site_packages,
            &self.extensions,
            ld_library_path,
        )
    }
}

/// The 32-character hash part of `<storedir>/<hash>-<name>`.
pub fn hash_part(store_path: &Path) -> &str {
    let name = store_path
        .file_name()
        .and_then(OsStr::to_str)
        .unwrap_or_default();
    name.get(..32).unwrap_or(name)
}

/// Imports `extensions` from `site_packages` with `python` (see
/// [`VenvFixture::import_extensions_from`]).
pub fn import_extensions(
    python: &HostPython,
    site_packages: &Path,
    extensions: &[ExtensionModule],
    ld_library_path: Option<&OsStr>,
) -> Result<ImportReport> {
    const SCRIPT: &str = r"
import importlib, sys
sys.path.insert(0, sys.argv[1])
failed = 0
for spec in sys.argv[2:]:
    name, expected = spec.rsplit('=', 1)
    try:
        value = importlib.import_module(name).check()
        if value != int(expected):
            raise AssertionError('check() returned %r, expected %s' % (value, expected))
        print('ok', name)
    except BaseException as error:
        failed += 1
        print('FAIL %s: %s: %s' % (name, type(error).__name__, error), file=sys.stderr)
sys.exit(1 if failed else 0)
";
    let mut command = Command::new(&python.executable);
    command
        .args(["-I", "-B", "-c", SCRIPT])
        .arg(site_packages)
        .args(
            extensions
                .iter()
                .map(|extension| format!("{}={}", extension.module, extension.expected_check)),
        )
        .env("LD_BIND_NOW", "1");
    match ld_library_path {
        Some(value) => command.env("LD_LIBRARY_PATH", value),
        None => command.env_remove("LD_LIBRARY_PATH"),
    };
    let output = command
        .output()
        .with_context(|| format!("running {}", python.executable.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let passed: BTreeSet<&str> = stdout
        .lines()
        .filter_map(|line| line.strip_prefix("ok "))
        .collect();
    let failed_modules: Vec<String> = extensions
        .iter()
        .filter(|extension| !passed.contains(extension.module.as_str()))
        .map(|extension| extension.module.clone())
        .collect();
    Ok(ImportReport {
        success: output.status.success() && failed_modules.is_empty(),
        failed_modules,
        stdout,
        stderr,
    })
}

/// Writes files into the venv and records the references placed in them.
struct TreeWriter {
    venv: PathBuf,
    references: Vec<FixtureReference>,
}

impl TreeWriter {
    fn path(&self, relative: &str) -> Result<PathBuf> {
        let path = self.venv.join(relative);
        if let Some(parent) = path.parent() {
            fs_err::create_dir_all(parent)?;
        }
        Ok(path)
    }

    fn record(&mut self, relative: &str, kind: ReferenceKind, store_paths: &[&Path]) {
        for store_path in store_paths {
            self.references.push(FixtureReference {
                store_path: store_path.to_path_buf(),
                file: PathBuf::from(relative),
                kind,
            });
        }
    }

    /// A regular file whose contents hold the full store paths `contents_refs`.
    fn file(
        &mut self,
        relative: &str,
        contents: impl AsRef<[u8]>,
        contents_refs: &[&Path],
    ) -> Result<PathBuf> {
        let path = self.path(relative)?;
        fs_err::write(&path, contents)?;
        self.record(relative, ReferenceKind::Contents, contents_refs);
        Ok(path)
    }

    fn symlink(&mut self, relative: &str, target: &Path, store_path: Option<&Path>) -> Result<()> {
        let path = self.path(relative)?;
        symlink(target, &path)?;
        if let Some(store_path) = store_path {
            self.record(relative, ReferenceKind::SymlinkTarget, &[store_path]);
        }
        Ok(())
    }

    fn executable(&mut self, relative: &str, contents: &str, refs: &[&Path]) -> Result<()> {
        let path = self.file(relative, contents, refs)?;
        fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        Ok(())
    }
}

struct Layout<'a> {
    python: &'a HostPython,
    python_store_path: &'a Path,
    libraries: &'a [FixtureLibrary],
    store_dir: &'a Path,
    seed: u64,
}

/// Display helper: paths in fixture contents are always UTF-8 in practice; anything else is a
/// setup error worth failing on.
fn text(path: &Path) -> Result<&str> {
    path.to_str()
        .with_context(|| format!("fixture path {} is not UTF-8", path.display()))
}

impl Layout<'_> {
    fn library(&self, link_name: &str) -> Result<&FixtureLibrary> {
        self.libraries
            .iter()
            .find(|library| library.spec.link_name == link_name)
            .with_context(|| format!("no fixture library lib{link_name}"))
    }

    /// A store path that is referenced but never created.
    fn virtual_path(&self, name: &str) -> PathBuf {
        fake_store_path(self.store_dir, self.seed, name)
    }

    fn write_tree(&self, writer: &mut TreeWriter) -> Result<Vec<ExtensionModule>> {
        let python = self.python;
        let py = text(self.python_store_path)?;
        let venv = text(&writer.venv)?.to_owned();
        let interpreter = format!("python{}", python.version);
        let store_interpreter = format!("{py}/bin/{interpreter}");
        let lib_python = format!("lib/{}", python.lib_dir_name());
        let site = format!("{lib_python}/site-packages");
        let python_path = self.python_store_path;
        let libfoo = self.library("foo")?;
        let libbar = self.library("bar")?;
        let libbaz = self.library("baz")?;
        let source = self.virtual_path("source");
        let openssl = self.virtual_path("openssl-3.0.15");
        let libffi = self.virtual_path("libffi-3.4.6");
        let gcc = self.virtual_path("gcc-wrapper-13.3.0");
        let zlib = self.virtual_path("zlib-1.3.1");
        let patch = self.virtual_path("fix-cffi.patch");

        // Extension modules first: compiling is the slow part, so both run concurrently.
        let extensions = [
            ExtensionSource {
                package: "fastfoo",
                module: "_speedups",
                declarations: "extern int foo_add(int a, int b);",
                call: "foo_add(a, b)",
                check: "foo_add(2, 3)",
                expected_check: 6,
                libraries: vec![libfoo],
            },
            ExtensionSource {
                package: "barkit",
                module: "_native",
                declarations: "extern int bar_compute(int x);\nextern int baz_scale(int x);",
                call: "bar_compute(a) + baz_scale(b)",
                check: "bar_compute(5) + baz_scale(1)",
                expected_check: 25,
                libraries: vec![libbar, libbaz],
            },
        ];
        let extension_dir = writer.venv.join(&site);
        let built: Vec<Result<ExtensionModule>> = std::thread::scope(|scope| {
            let handles: Vec<_> = extensions
                .iter()
                .map(|extension| {
                    let extension_dir = &extension_dir;
                    scope.spawn(move || extension.compile(python, extension_dir))
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| {
                    handle
                        .join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("compiler thread panicked")))
                })
                .collect()
        });
        let built = built.into_iter().collect::<Result<Vec<_>>>()?;
        for (extension, module) in extensions.iter().zip(&built) {
            let relative = format!(
                "{site}/{}/{}{}",
                extension.package, extension.module, python.ext_suffix
            );
            let refs: Vec<&Path> = module
                .runpath_store_paths
                .iter()
                .map(PathBuf::as_path)
                .collect();
            writer.record(&relative, ReferenceKind::Contents, &refs);
        }

        // pyvenv.cfg and bin/, as uv writes them.
        writer.file(
            "pyvenv.cfg",
            format!(
                "home = {py}/bin\nimplementation = CPython\nuv = 0.5.11\nversion_info = {}\n\
                 include-system-site-packages = false\n",
                python.full_version
            ),
            &[python_path],
        )?;
        writer.symlink(
            "bin/python",
            Path::new(&store_interpreter),
            Some(python_path),
        )?;
        writer.symlink("bin/python3", Path::new("python"), None)?;
        writer.symlink(&format!("bin/{interpreter}"), Path::new("python"), None)?;
        writer.symlink("lib64", Path::new("lib"), None)?;
        writer.file(
            "bin/activate",
            format!(
                "# This file must be used with \"source bin/activate\"\n\
                 VIRTUAL_ENV='{venv}'\nexport VIRTUAL_ENV\nPATH=\"$VIRTUAL_ENV/bin:$PATH\"\nexport PATH\n"
            ),
            &[],
        )?;
        writer.executable(
            "bin/fastfoo-cli",
            &format!(
                "#!{venv}/bin/python\n# -*- coding: utf-8 -*-\nimport sys\n\
                 from fastfoo import main\nif __name__ == \"__main__\":\n    sys.exit(main())\n"
            ),
            &[],
        )?;
        writer.executable(
            "bin/barkit-tool",
            &format!(
                "#!{store_interpreter}\nimport sys\nfrom barkit import main\n\
                 if __name__ == \"__main__\":\n    sys.exit(main())\n"
            ),
            &[python_path],
        )?;

        // fastfoo: sources, bytecode compiled with a store path as its filename, metadata.
        writer.file(
            &format!("{site}/fastfoo/__init__.py"),
            "from fastfoo._speedups import add, check\n\n\ndef main():\n    print(add(1, 2))\n    return 0\n",
            &[],
        )?;
        writer.file(
            &format!("{site}/fastfoo/util.py"),
            "def double(value):\n    return value * 2\n",
            &[],
        )?;
        let cache_tag = format!("cpython-{}", python.version.replace('.', ""));
        let mut compile_jobs = Vec::new();
        for module in ["__init__", "util"] {
            let relative = format!("{site}/fastfoo/__pycache__/{module}.{cache_tag}.pyc");
            let dfile = format!("{py}/{lib_python}/site-packages/fastfoo/{module}.py");
            let source_path = writer.venv.join(format!("{site}/fastfoo/{module}.py"));
            let cfile = writer.path(&relative)?;
            compile_jobs.push((source_path, cfile, dfile));
            writer.record(&relative, ReferenceKind::Contents, &[python_path]);
        }
        compile_bytecode(python, &compile_jobs)?;

        let source_text = text(&source)?;
        let dist_info = format!("{site}/fastfoo-1.0.dist-info");
        writer.file(&format!("{dist_info}/INSTALLER"), "uv\n", &[])?;
        writer.file(
            &format!("{dist_info}/METADATA"),
            "Metadata-Version: 2.1\nName: fastfoo\nVersion: 1.0\n",
            &[],
        )?;
        writer.file(
            &format!("{dist_info}/direct_url.json"),
            format!("{{\"url\": \"file://{source_text}\", \"dir_info\": {{\"editable\": false}}}}"),
            &[&source],
        )?;
        let patch_name = format!("{}-fix-cffi.patch", hash_part(&patch));
        let source_dir_name = format!("{}-source", hash_part(&source));
        writer.file(
            &format!("{dist_info}/RECORD"),
            format!(
                "fastfoo/__init__.py,sha256=3q2N8f1z0Vq0cCwqkS8Y6kq1mM3x9m0l2xhH0D0bKxk,86\n\
                 fastfoo/_speedups{suffix},,\n\
                 ../../../bin/fastfoo-cli,,\n\
                 ../../../share/{source_dir_name}/README.txt,,\n\
                 {py}/{lib_python}/site-packages/fastfoo.pth,,\n\
                 fastfoo-1.0.dist-info/RECORD,,\n",
                suffix = python.ext_suffix
            ),
            &[python_path],
        )?;
        // The RECORD line for the hash-named directory carries the bare hash too.
        writer.record(
            &format!("{dist_info}/RECORD"),
            ReferenceKind::BareHash,
            &[&source],
        );

        // Hard-linked pair (one inode, two names) holding a store path.
        let build_env = writer.file(
            &format!("{site}/fastfoo/build-env.txt"),
            format!("PYTHON={store_interpreter}\n"),
            &[python_path],
        )?;
        let linked = "share/doc/fastfoo/build-env.txt";
        fs_err::hard_link(&build_env, writer.path(linked)?)?;
        writer.record(linked, ReferenceKind::Contents, &[python_path]);

        // barkit: a read-only file, a bare hash, a clean file, a binary blob, no final newline.
        let bar_text = text(&libbar.store_path)?;
        let read_only = writer.file(
            &format!("{site}/barkit/_build_info.py"),
            format!("LIBBAR = '{bar_text}/lib/{}'\n", libbar.spec.soname),
            &[&libbar.store_path],
        )?;
        fs_err::set_permissions(&read_only, std::fs::Permissions::from_mode(0o444))?;
        writer.file(
            &format!("{site}/barkit/__init__.py"),
            "from barkit._native import check, compute\n\n\ndef main():\n    print(compute(1, 1))\n    return 0\n",
            &[],
        )?;
        let hashes = format!("{site}/barkit/_hashes.txt");
        writer.file(&hashes, format!("zlib {}\n", hash_part(&zlib)), &[])?;
        writer.record(&hashes, ReferenceKind::BareHash, &[&zlib]);
        writer.file(
            &format!("{site}/barkit/data.txt"),
            "No store paths in here, only data.\n",
            &[],
        )?;
        writer.file(
            &format!("{site}/barkit/blob.bin"),
            binary_blob(text(&libbaz.store_path)?, self.seed),
            &[&libbaz.store_path],
        )?;
        writer.file(
            &format!("{site}/barkit/LIBDIR"),
            format!("{bar_text}/lib"),
            &[&libbar.store_path],
        )?;

        // sysconfig data with the build's store paths.
        writer.file(
            &format!("{lib_python}/_sysconfigdata__linux_x86_64-linux-gnu.py"),
            format!(
                "# system configuration generated and used by the sysconfig module\n\
                 build_time_vars = {{'prefix': '{py}',\n 'LIBDIR': '{py}/lib',\n \
                 'CC': '{gcc}/bin/gcc -pthread',\n \
                 'CONFIG_ARGS': \"'--prefix={py}' '--with-openssl={openssl}'\",\n \
                 'LDFLAGS': '-L{libffi}/lib'}}\n",
                gcc = text(&gcc)?,
                openssl = text(&openssl)?,
                libffi = text(&libffi)?,
            ),
            &[python_path, &gcc, &openssl, &libffi],
        )?;

        // Hashes in names: a file and a directory.
        let patch_file = format!("share/patches/{patch_name}");
        writer.file(&patch_file, "--- a/x\n+++ b/x\n", &[])?;
        writer.record(&patch_file, ReferenceKind::FileName, &[&patch]);
        let source_dir = format!("share/{source_dir_name}");
        writer.file(
            &format!("{source_dir}/README.txt"),
            "Unpacked sources.\n",
            &[],
        )?;
        writer.record(&source_dir, ReferenceKind::FileName, &[&source]);

        // A second absolute symlink into the store, to a library.
        writer.symlink(
            &format!("share/lib/{}", libfoo.spec.soname),
            &libfoo.lib_dir.join(libfoo.spec.soname),
            Some(&libfoo.store_path),
        )?;

        Ok(built)
    }
}

struct ExtensionSource<'a> {
    package: &'static str,
    module: &'static str,
    declarations: &'static str,
    call: &'static str,
    check: &'static str,
    expected_check: i64,
    libraries: Vec<&'a FixtureLibrary>,
}

impl ExtensionSource<'_> {
    fn c_source(&self) -> String {
        let module = self.module;
        format!(
            "#define PY_SSIZE_T_CLEAN\n#include <Python.h>\n{declarations}\n\n\
             static PyObject *ext_compute(PyObject *self, PyObject *args) {{\n\
             \x20   int a, b;\n\
             \x20   if (!PyArg_ParseTuple(args, \"ii\", &a, &b)) return NULL;\n\
             \x20   return PyLong_FromLong({call});\n}}\n\n\
             static PyObject *ext_check(PyObject *self, PyObject *unused) {{\n\
             \x20   return PyLong_FromLong({check});\n}}\n\n\
             static PyMethodDef methods[] = {{\n\
             \x20   {{\"compute\", ext_compute, METH_VARARGS, \"Call into the library.\"}},\n\
             \x20   {{\"add\", ext_compute, METH_VARARGS, \"Call into the library.\"}},\n\
             \x20   {{\"check\", ext_check, METH_NOARGS, \"Call into the library.\"}},\n\
             \x20   {{NULL, NULL, 0, NULL}}}};\n\n\
             static struct PyModuleDef module = {{PyModuleDef_HEAD_INIT, \"{module}\", NULL, -1, methods}};\n\n\
             PyMODINIT_FUNC PyInit_{module}(void) {{ return PyModule_Create(&module); }}\n",
            declarations = self.declarations,
            call = self.call,
            check = self.check,
        )
    }

    /// Compiles into `<site_packages>/<package>/<module><EXT_SUFFIX>` with a RUNPATH of the
    /// libraries' store `lib/` dirs.
    fn compile(&self, python: &HostPython, site_packages: &Path) -> Result<ExtensionModule> {
        let package_dir = site_packages.join(self.package);
        fs_err::create_dir_all(&package_dir)?;
        let scratch = tempfile::tempdir().context("creating a scratch dir")?;
        let source = scratch.path().join(format!("{}.c", self.module));
        fs_err::write(&source, self.c_source())?;
        let output = package_dir.join(format!("{}{}", self.module, python.ext_suffix));
        let runpath = std::env::join_paths(self.libraries.iter().map(|library| &library.lib_dir))
            .context("joining the RUNPATH")?;
        let mut command = Command::new("gcc");
        command
            .args(["-shared", "-fPIC", "-O1", "-I"])
            .arg(&python.include_dir)
            .arg("-o")
            .arg(&output)
            .arg(&source)
            .args(["-Wl,--no-as-needed", "-Wl,--enable-new-dtags"])
            .arg({
                let mut flag = std::ffi::OsString::from("-Wl,-rpath,");
                flag.push(&runpath);
                flag
            });
        for library in &self.libraries {
            command.arg({
                let mut flag = std::ffi::OsString::from("-L");
                flag.push(&library.lib_dir);
                flag
            });
        }
        for library in &self.libraries {
            command.arg(format!("-l{}", library.spec.link_name));
        }
        run_checked(&mut command)?;
        Ok(ExtensionModule {
            module: format!("{}.{}", self.package, self.module),
            path: output,
            expected_check: self.expected_check,
            runpath_store_paths: self
                .libraries
                .iter()
                .map(|library| library.store_path.clone())
                .collect(),
        })
    }
}

/// Compiles `(source, cfile, dfile)` triples in one Python process; `dfile` is the file name
/// recorded inside the `.pyc` (and so a store path ends up in it). Unchecked-hash pycs keep the
/// output independent of file times.
fn compile_bytecode(python: &HostPython, jobs: &[(PathBuf, PathBuf, String)]) -> Result<()> {
    const SCRIPT: &str = r"
import py_compile, sys
args = sys.argv[1:]
for i in range(0, len(args), 3):
    py_compile.compile(args[i], cfile=args[i + 1], dfile=args[i + 2], doraise=True,
                       invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
";
    let mut command = Command::new(&python.executable);
    command.args(["-I", "-c", SCRIPT]);
    for (source, cfile, dfile) in jobs {
        command.arg(source).arg(cfile).arg(dfile);
    }
    run_checked(&mut command)?;
    for (_, cfile, dfile) in jobs {
        let bytes = fs_err::read(cfile)?;
        if !contains(&bytes, dfile.as_bytes()) {
            bail!("{} does not contain {dfile}", cfile.display());
        }
    }
    Ok(())
}

pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// 4 KiB of deterministic binary noise (NULs included) with `<store_path>/lib/libbaz.so.0\0` in
/// the middle and no newline anywhere near it.
fn binary_blob(store_path: &str, seed: u64) -> Vec<u8> {
    let mut state = seed ^ 0x5eed;
    let mut blob: Vec<u8> = (0..4096)
        .map(|_| {
            let byte = fixture_store::splitmix64(&mut state) as u8;
            if byte == b'\n' { 0 } else { byte }
        })
        .collect();
    let embedded = format!("{store_path}/lib/libbaz.so.0");
    let start = 1500;
    blob[start - 1] = 0;
    blob[start..start + embedded.len()].copy_from_slice(embedded.as_bytes());
    blob[start + embedded.len()] = 0;
    blob
}

/// Parameters for [`generate_big`].
#[derive(Debug, Clone)]
pub struct BigTreeParams {
    /// Number of bulk site-packages subtrees (`bulk00`, `bulk01`, ...).
    pub copies: usize,
    /// Approximate total size of the generated files, in bytes.
    pub total_bytes: u64,
    /// Number of generated files (across all copies), besides the small fixture's.
    pub files: usize,
    /// Fraction of generated files that get store references (0.0 to 1.0).
    pub referencing_fraction: f64,
    /// Seed for hashes and contents.
    pub seed: u64,
}

impl Default for BigTreeParams {
    /// 500 MB in 30 000 files over 8 copies, 10 % of them referencing the store.
    fn default() -> Self {
        Self {
            copies: 8,
            total_bytes: 500 * 1024 * 1024,
            files: 30_000,
            referencing_fraction: 0.1,
            seed: 0,
        }
    }
}

/// What [`generate_big`] made.
#[derive(Debug, Clone)]
pub struct BigTreeSummary {
    /// The small fixture the big tree grew from; its `venv` is the big tree's root.
    pub fixture: VenvFixture,
    /// Generated files (not counting the small fixture's).
    pub files: usize,
    /// Their total size in bytes.
    pub bytes: u64,
    /// Generated files holding at least one store reference (full path or bare hash).
    pub referencing_files: usize,
    /// Full `<storedir>/<hash>-<name>` references written into generated files.
    pub references_written: usize,
    /// Bare hash parts written into generated files.
    pub bare_hashes_written: usize,
    /// Every store path whose hash part occurs in the tree (generated files only reuse the
    /// fixture's).
    pub store_paths: BTreeSet<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BulkKind {
    Source,
    Bytecode,
    Extension,
    Data,
}

struct BulkFile {
    path: PathBuf,
    kind: BulkKind,
    size: usize,
    index: u64,
    referencing: bool,
}

/// Generates a benchmark tree at `root`: a [`VenvFixture`] (packages in `store_dir`), plus
/// `params.copies` bulk subtrees `lib/pythonX.Y/site-packages/bulkNN/pkgNNN/...` of
/// deterministic files (Python sources, bytecode-like and data blobs, and copies of the compiled
/// extension modules), a `referencing_fraction` of which hold store references. Files are
/// written in parallel.
pub fn generate_big(
    root: &Path,
    store_dir: &Path,
    params: &BigTreeParams,
) -> Result<BigTreeSummary> {
    ensure!(params.copies > 0, "copies must be at least 1");
    ensure!(
        (0.0..=1.0).contains(&params.referencing_fraction),
        "referencing_fraction must be between 0 and 1"
    );
    let fixture = VenvFixture::builder(root, store_dir)
        .seed(params.seed)
        .build()?;
    let extension_bytes = fixture
        .extensions
        .iter()
        .map(|extension| {
            fs_err::read(&extension.path).map(|bytes| (bytes, extension.runpath_store_paths.len()))
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    let extension_suffix = fixture.python.ext_suffix.clone();

    let targets: Vec<String> = fixture
        .store_paths_with(ReferenceKind::Contents)
        .iter()
        .map(|path| text(path).map(str::to_owned))
        .collect::<Result<_>>()?;
    ensure!(!targets.is_empty(), "the fixture references no store paths");

    // Plan every file up front (deterministic), then write them in parallel.
    let mut state = params.seed ^ 0x0b16_f11e;
    let mean_size = params.total_bytes / params.files.max(1) as u64;
    let cache_tag = format!("cpython-{}", fixture.python.version.replace('.', ""));
    let files_per_package = 40;
    let mut plan = Vec::with_capacity(params.files);
    for index in 0..params.files {
        let copy = index % params.copies;
        let within = index / params.copies;
        let package = within / files_per_package;
        let file = within % files_per_package;
        let roll = splitmix64(&mut state);
        let kind = match roll % 20 {
            0 => BulkKind::Extension,
            1..=9 => BulkKind::Source,
            10..=15 => BulkKind::Bytecode,
            _ => BulkKind::Data,
        };
        // Exponential sizes with the requested mean; extension modules keep their real size.
        let size = exponential_size(&mut state, mean_size);
        let referencing =
            unit_interval(&mut state) < params.referencing_fraction || kind == BulkKind::Extension;
        let name = match kind {
            BulkKind::Source => format!("mod{file:02}.py"),
            BulkKind::Bytecode => format!("__pycache__/mod{file:02}.{cache_tag}.pyc"),
            BulkKind::Extension => format!("_ext{file:02}{extension_suffix}"),
            BulkKind::Data => format!("data/blob{file:02}.dat"),
        };
        plan.push(BulkFile {
            path: fixture
                .site_packages
                .join(format!("bulk{copy:02}/pkg{package:03}/{name}")),
            kind,
            size,
            index: index as u64,
            referencing,
        });
    }
    let directories: BTreeSet<&Path> = plan.iter().filter_map(|file| file.path.parent()).collect();
    for directory in directories {
        fs_err::create_dir_all(directory)?;
    }

    let counts = plan
        .par_iter()
        .map(|file| write_bulk_file(file, params.seed, &targets, &extension_bytes))
        .try_reduce(BulkCounts::default, |left, right| Ok(left.add(right)))?;

    Ok(BigTreeSummary {
        store_paths: fixture.store_paths(),
        files: plan.len(),
        bytes: counts.bytes,
        referencing_files: counts.referencing_files,
        references_written: counts.references,
        bare_hashes_written: counts.bare_hashes,
        fixture,
    })
}

/// A uniform value in `[0, 1)` from 53 random bits.
#[expect(clippy::cast_precision_loss, reason = "53-bit values convert exactly")]
fn unit_interval(state: &mut u64) -> f64 {
    (splitmix64(state) >> 11) as f64 / (1u64 << 53) as f64
}

/// An exponentially distributed file size with the given mean, at least 16 bytes.
#[expect(
    clippy::cast_precision_loss,
    clippy::cast_sign_loss,
    reason = "file sizes are far below 2^52 and never negative"
)]
fn exponential_size(state: &mut u64, mean: u64) -> usize {
    let uniform = unit_interval(state);
    (-(1.0 - uniform).ln() * mean as f64).max(16.0) as usize
}

#[derive(Debug, Default, Clone, Copy)]
struct BulkCounts {
    bytes: u64,
    referencing_files: usize,
    references: usize,
    bare_hashes: usize,
}

impl BulkCounts {
    fn add(self, other: Self) -> Self {
        Self {
            bytes: self.bytes + other.bytes,
            referencing_files: self.referencing_files + other.referencing_files,
            references: self.references + other.references,
            bare_hashes: self.bare_hashes + other.bare_hashes,
        }
    }
}

const WORDS: &[&str] = &[
    "def",
    "return",
    "self",
    "import",
    "from",
    "class",
    "value",
    "None",
    "if",
    "else",
    "for",
    "in",
    "while",
    "result",
    "data",
    "config",
    "request",
    "response",
    "items",
    "append",
    "len",
    "range",
    "True",
    "False",
    "raise",
    "ValueError",
    "kwargs",
    "args",
    "yield",
    "with",
];

fn write_bulk_file(
    file: &BulkFile,
    seed: u64,
    targets: &[String],
    extensions: &[(Vec<u8>, usize)],
) -> Result<BulkCounts> {
    let mut state = seed ^ file.index.wrapping_mul(0x2545_f491_4f6c_dd1d);
    let mut counts = BulkCounts::default();
    let mut contents = match file.kind {
        BulkKind::Extension => {
            let (bytes, references) = &extensions[file.index as usize % extensions.len()];
            counts.references += references;
            bytes.clone()
        }
        BulkKind::Source => {
            let mut text = String::with_capacity(file.size + 64);
            while text.len() < file.size {
                let indent = (splitmix64(&mut state) % 3) as usize * 4;
                text.extend(std::iter::repeat_n(' ', indent));
                let words = 3 + splitmix64(&mut state) % 8;
                for _ in 0..words {
                    let word = WORDS[(splitmix64(&mut state) % WORDS.len() as u64) as usize];
                    text.push_str(word);
                    text.push(' ');
                }
                text.push('\n');
            }
            text.into_bytes()
        }
        BulkKind::Bytecode | BulkKind::Data => {
            let mut bytes = Vec::with_capacity(file.size + 8);
            while bytes.len() < file.size {
                bytes.extend_from_slice(&splitmix64(&mut state).to_le_bytes());
            }
            bytes.truncate(file.size);
            // No accidental newlines in binary data keeps grep's line splitting predictable.
            for byte in &mut bytes {
                if *byte == b'\n' {
                    *byte = 0;
                }
            }
            bytes
        }
    };
    if file.referencing && file.kind != BulkKind::Extension {
        let references = 1 + (splitmix64(&mut state) % 3) as usize;
        // Each reference gets its own segment of the file, so none overwrites another.
        let longest = targets.iter().map(String::len).max().unwrap_or(0) + 6;
        if contents.len() < references * (longest + 2) {
            contents.resize(references * (longest + 2), b' ');
        }
        let segment = contents.len() / references;
        for number in 0..references {
            let target = &targets[(splitmix64(&mut state) % targets.len() as u64) as usize];
            let bare = splitmix64(&mut state).is_multiple_of(10);
            let needle: Vec<u8> = if bare {
                counts.bare_hashes += 1;
                hash_part(Path::new(target)).as_bytes().to_vec()
            } else {
                counts.references += 1;
                format!("{target}/lib\n").into_bytes()
            };
            let room = segment - needle.len() - 1;
            let offset = number * segment + 1 + (splitmix64(&mut state) as usize % room);
            // Separate from what precedes it, so no junk glues onto the path's start.
            contents[offset - 1] = b' ';
            contents[offset..offset + needle.len()].copy_from_slice(&needle);
        }
    }
    if file.referencing {
        counts.referencing_files = 1;
    }
    counts.bytes = contents.len() as u64;
    fs_err::write(&file.path, &contents)?;
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    // How long the fixture takes to build is a benchmark question, not a test's: timing
    // assertions fail on a loaded machine.
    #[test]
    fn extensions_import_through_their_runpath_alone() {
        let dir = tempfile::tempdir().unwrap();
        let fixture = VenvFixture::builder(dir.path().join("venv"), dir.path().join("store"))
            .build()
            .unwrap();
        let report = fixture.import_extensions(None).unwrap();
        assert!(report.success, "{report:?}");
        assert_eq!(
            fixture.module_names(),
            ["fastfoo._speedups", "barkit._native"]
        );
    }

    #[test]
    fn extensions_fail_without_their_libraries() {
        let dir = tempfile::tempdir().unwrap();
        let fixture = VenvFixture::builder(dir.path().join("venv"), dir.path().join("store"))
            .seed(3)
            .build()
            .unwrap();
        for library in &fixture.libraries {
            fs_err::rename(&library.store_path, dir.path().join(library.spec.package)).unwrap();
        }
        let report = fixture.import_extensions(None).unwrap();
        assert!(!report.success);
        assert_eq!(report.failed_modules, fixture.module_names());
        assert!(report.stderr.contains("libfoo.so.1"), "{}", report.stderr);
    }

    #[test]
    fn every_reference_kind_is_present() {
        let dir = tempfile::tempdir().unwrap();
        let fixture = VenvFixture::builder(dir.path().join("venv"), dir.path().join("store"))
            .build()
            .unwrap();
        for kind in [
            ReferenceKind::Contents,
            ReferenceKind::BareHash,
            ReferenceKind::FileName,
            ReferenceKind::SymlinkTarget,
        ] {
            assert!(!fixture.store_paths_with(kind).is_empty(), "{kind:?}");
        }
        for reference in &fixture.references {
            let path = fixture.venv.join(&reference.file);
            let hash = hash_part(&reference.store_path);
            match reference.kind {
                ReferenceKind::Contents | ReferenceKind::BareHash => {
                    let needle = if reference.kind == ReferenceKind::Contents {
                        reference.store_path.to_str().unwrap()
                    } else {
                        hash
                    };
                    let contents = fs_err::read(&path).unwrap();
                    assert!(contents_has(&contents, needle), "{reference:?}");
                }
                ReferenceKind::FileName => {
                    assert!(path.file_name().unwrap().to_str().unwrap().contains(hash));
                }
                ReferenceKind::SymlinkTarget => {
                    let target = fs_err::read_link(&path).unwrap();
                    assert!(target.starts_with(&reference.store_path), "{reference:?}");
                }
            }
        }
        let mode = fs_err::metadata(fixture.site_packages.join("barkit/_build_info.py"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o444);
    }

    fn contents_has(contents: &[u8], needle: &str) -> bool {
        contains(contents, needle.as_bytes())
    }

    #[test]
    fn supplied_store_paths_are_used() {
        let dir = tempfile::tempdir().unwrap();
        let staging = dir.path().join("staging");
        let store = dir.path().join("other-store");
        fs_err::create_dir_all(&store).unwrap();
        let supplied: Vec<(String, PathBuf)> = fixture_store::stage_packages(&staging)
            .unwrap()
            .into_iter()
            .map(|package| {
                let target = store.join(format!(
                    "{}-{}",
                    fixture_store::fake_hash(99, &package.name),
                    package.name
                ));
                fs_err::rename(&package.path, &target).unwrap();
                (package.name, target)
            })
            .collect();
        let fixture = VenvFixture::builder(dir.path().join("venv"), &store)
            .store_paths(supplied.clone())
            .build()
            .unwrap();
        for (_, path) in &supplied {
            assert!(fixture.store_paths().contains(path), "{}", path.display());
        }
        assert!(fixture.import_extensions(None).unwrap().success);
    }

    #[test]
    fn big_tree_has_the_requested_shape() {
        let dir = tempfile::tempdir().unwrap();
        let params = BigTreeParams {
            copies: 3,
            total_bytes: 2 * 1024 * 1024,
            files: 300,
            referencing_fraction: 0.2,
            seed: 5,
        };
        let root = dir.path().join("venv");
        let summary = generate_big(&root, &dir.path().join("store"), &params).unwrap();
        assert_eq!(summary.files, 300);
        let bytes = summary.bytes;
        assert!((1_500_000..3_500_000).contains(&bytes), "{bytes}");
        assert!(summary.referencing_files > 30, "{summary:?}");
        for copy in ["bulk00", "bulk01", "bulk02"] {
            assert!(summary.fixture.site_packages.join(copy).is_dir());
        }
        // The same parameters give the same tree.
        let again = dir.path().join("again");
        let second = generate_big(&again, &dir.path().join("store"), &params).unwrap();
        assert_eq!(second.bytes, summary.bytes);
        let bulk = |root: &Path| {
            root.join("lib")
                .join(summary.fixture.python.lib_dir_name())
                .join("site-packages/bulk01")
        };
        let differences = crate::pipeline::compare_trees(&bulk(&root), &bulk(&again)).unwrap();
        assert!(differences.is_empty(), "{differences:?}");
        // The old pipeline sees exactly the fixture's store paths.
        let found =
            crate::pipeline::find_references_old(&root, &summary.fixture.store_dir).unwrap();
        let hashes: BTreeSet<String> = found
            .iter()
            .map(|reference| {
                let start = summary.fixture.store_dir.as_os_str().len() + 1;
                String::from_utf8_lossy(&reference[start..start + 32]).into_owned()
            })
            .collect();
        let expected: BTreeSet<String> = summary
            .fixture
            .store_paths_with(ReferenceKind::Contents)
            .iter()
            .map(|path| hash_part(path).to_owned())
            .collect();
        assert_eq!(hashes, expected);
    }

    #[test]
    fn real_store_paths_from_nix_store_add_load() {
        let Some(judge) =
            crate::nix::NixJudge::new_or_skip("real_store_paths_from_nix_store_add_load").unwrap()
        else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let supplied: Vec<(String, PathBuf)> =
            fixture_store::stage_packages(&dir.path().join("staging"))
                .unwrap()
                .into_iter()
                .map(|package| (package.name, judge.add(&package.path).unwrap()))
                .collect();
        let fixture = VenvFixture::builder(dir.path().join("venv"), judge.store_dir())
            .store_paths(supplied.clone())
            .build()
            .unwrap();
        for (_, path) in &supplied {
            assert!(fixture.store_paths().contains(path), "{}", path.display());
        }
        let report = fixture.import_extensions(None).unwrap();
        assert!(report.success, "{report:?}");
    }
}
