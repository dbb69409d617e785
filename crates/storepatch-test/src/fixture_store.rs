//! Store-side building blocks for fixtures: deterministic hash parts, the host Python, and the
//! library packages (real gcc-built shared libraries) that fixture trees refer to.
//!
//! A package is first *staged*: written to `<dir>/<name>/...` with no store path baked into it, so
//! the same bytes work under a temporary store dir (`<tmp>/store/<hash>-<name>`) and under the real
//! one (`nix-store --add <dir>/<name>` gives `/nix/store/<hash>-<name>`). The libraries carry no
//! RUNPATH of their own; `libbar` needs `libbaz` and relies on whoever loads it, exactly the case
//! autoPatchelfHook exists for.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context as _, Result, bail, ensure};
use storepatch_core::NIX_BASE32_ALPHABET;

/// A deterministic 32-character hash part in Nix's base-32 alphabet, derived from `seed` and
/// `name` (FNV-1a, then a splitmix64 stream, five bits per character).
///
/// ```
/// let hash = storepatch_test::fixture_store::fake_hash(7, "libfoo-1.0");
/// assert_eq!(hash.len(), 32);
/// assert!(!hash.contains(['e', 'o', 'u', 't']));
/// assert_eq!(hash, storepatch_test::fixture_store::fake_hash(7, "libfoo-1.0"));
/// ```
pub fn fake_hash(seed: u64, name: &str) -> String {
    let mut state = fnv1a(&seed.to_le_bytes(), name.as_bytes());
    (0..32)
        .map(|_| {
            let value = splitmix64(&mut state);
            char::from(NIX_BASE32_ALPHABET[(value >> 59) as usize])
        })
        .collect()
}

fn fnv1a(first: &[u8], second: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in first.iter().chain(second) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// One step of splitmix64: a small, fast, deterministic generator for fixture content.
pub(crate) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut value = *state;
    value = (value ^ (value >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    value ^ (value >> 31)
}

/// `<store_dir>/<fake_hash(seed, name)>-<name>`.
pub fn fake_store_path(store_dir: &Path, seed: u64, name: &str) -> PathBuf {
    store_dir.join(format!("{}-{name}", fake_hash(seed, name)))
}

/// The Python used to build and import extension modules: a real interpreter with headers.
#[derive(Debug, Clone)]
pub struct HostPython {
    /// Absolute path of the interpreter binary (symlinks resolved, so no pyenv shim).
    pub executable: PathBuf,
    /// Directory holding `Python.h`.
    pub include_dir: PathBuf,
    /// Extension-module suffix, e.g. `.cpython-312-x86_64-linux-gnu.so`.
    pub ext_suffix: String,
    /// `major.minor`, e.g. `3.12`.
    pub version: String,
    /// `major.minor.micro`, e.g. `3.12.1`.
    pub full_version: String,
}

impl HostPython {
    /// The `pythonX.Y` directory name used under `lib/`.
    pub fn lib_dir_name(&self) -> String {
        format!("python{}", self.version)
    }

    /// The store name of the fixture's interpreter package, e.g. `python3-3.12.1`.
    pub fn package_name(&self) -> String {
        format!("python3-{}", self.full_version)
    }
}

/// Finds a Python with development headers, once per process.
///
/// Tries `$STOREPATCH_TEST_PYTHON`, then `python3.12` on `PATH`, then pyenv's 3.12 installs, then
/// `python3` on `PATH`. Fails (with the
/// reasons) when none has a `Python.h`: the fixtures then cannot build real extension modules.
pub fn host_python() -> Result<&'static HostPython> {
    static PYTHON: OnceLock<Result<HostPython, String>> = OnceLock::new();
    PYTHON
        .get_or_init(|| find_host_python().map_err(|error| format!("{error:#}")))
        .as_ref()
        .map_err(|error| anyhow::anyhow!("no usable host Python: {error}"))
}

fn find_host_python() -> Result<HostPython> {
    let mut candidates: Vec<std::ffi::OsString> = Vec::new();
    if let Some(chosen) = std::env::var_os("STOREPATCH_TEST_PYTHON") {
        candidates.push(chosen);
    }
    candidates.push("python3.12".into());
    // A pyenv install of 3.12 that is not the selected version (its shim then refuses to run).
    let pyenv_root = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".pyenv")));
    if let Some(versions) = pyenv_root.map(|root| root.join("versions"))
        && let Ok(entries) = fs_err::read_dir(&versions)
    {
        let mut found: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|entry| entry.file_name().to_string_lossy().starts_with("3.12."))
            .map(|entry| entry.path().join("bin/python3.12"))
            .filter(|path| path.is_file())
            .collect();
        found.sort();
        candidates.extend(found.into_iter().rev().map(PathBuf::into_os_string));
    }
    candidates.push("python3".into());
    let mut reasons = Vec::new();
    for candidate in &candidates {
        match probe_python(candidate) {
            Ok(python) => return Ok(python),
            Err(error) => reasons.push(format!("{}: {error:#}", candidate.to_string_lossy())),
        }
    }
    bail!("{}", reasons.join("; "))
}

fn probe_python(program: &OsStr) -> Result<HostPython> {
    let script = "import sys, sysconfig, os\n\
                  print(os.path.realpath(sys.executable))\n\
                  print(sysconfig.get_paths()['include'])\n\
                  print(sysconfig.get_config_var('EXT_SUFFIX'))\n\
                  print('%d.%d' % sys.version_info[:2])\n\
                  print('%d.%d.%d' % sys.version_info[:3])\n";
    let output = Command::new(program)
        .args(["-c", script])
        .output()
        .with_context(|| format!("running {}", program.to_string_lossy()))?;
    ensure!(
        output.status.success(),
        "exited with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let stdout = String::from_utf8(output.stdout).context("non-UTF-8 output")?;
    let lines: Vec<&str> = stdout.lines().collect();
    let [executable, include_dir, ext_suffix, version, full_version] = lines[..] else {
        bail!("unexpected probe output {stdout:?}");
    };
    let include_dir = PathBuf::from(include_dir);
    ensure!(
        include_dir.join("Python.h").is_file(),
        "no Python.h in {}",
        include_dir.display()
    );
    Ok(HostPython {
        executable: executable.into(),
        include_dir,
        ext_suffix: ext_suffix.to_owned(),
        version: version.to_owned(),
        full_version: full_version.to_owned(),
    })
}

/// A shared library package the fixtures build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LibrarySpec {
    /// Package (store) name, e.g. `libfoo-1.0`.
    pub package: &'static str,
    /// Link name, e.g. `foo` (for `-lfoo`).
    pub link_name: &'static str,
    /// `DT_SONAME`, e.g. `libfoo.so.1`.
    pub soname: &'static str,
    /// Name of the real file, e.g. `libfoo.so.1.0`; `soname` and `lib<link_name>.so` link to it.
    pub file_name: &'static str,
    /// Sonames this library itself needs (besides libc).
    pub needs: &'static [&'static str],
}

/// The libraries every fixture has: `libfoo` (used by `fastfoo`), `libbar` (used by `barkit`), and
/// `libbaz` (needed by `libbar`, which has no RUNPATH, and by `barkit`).
pub const LIBRARIES: [LibrarySpec; 3] = [
    LibrarySpec {
        package: "libfoo-1.0",
        link_name: "foo",
        soname: "libfoo.so.1",
        file_name: "libfoo.so.1.0",
        needs: &[],
    },
    LibrarySpec {
        package: "libbaz-0.9",
        link_name: "baz",
        soname: "libbaz.so.0",
        file_name: "libbaz.so.0.9",
        needs: &[],
    },
    LibrarySpec {
        package: "libbar-2.3",
        link_name: "bar",
        soname: "libbar.so.2",
        file_name: "libbar.so.2.3",
        needs: &["libbaz.so.0"],
    },
];

const FOO_C: &str = "int foo_add(int a, int b) { return a + b + 1; }\n\
                     const char *foo_version(void) { return \"1.0\"; }\n";
const BAZ_C: &str = "int baz_scale(int x) { return x * 3; }\n";
const BAR_C: &str = "extern int baz_scale(int x);\n\
                     int bar_compute(int x) { return baz_scale(x) + 7; }\n";

/// Compiled library bytes, built once per process (they embed no store path).
struct CompiledLibraries {
    files: Vec<Vec<u8>>,
}

fn compiled_libraries() -> Result<&'static CompiledLibraries> {
    static LIBS: OnceLock<Result<CompiledLibraries, String>> = OnceLock::new();
    LIBS.get_or_init(|| compile_libraries().map_err(|error| format!("{error:#}")))
        .as_ref()
        .map_err(|error| anyhow::anyhow!("compiling fixture libraries: {error}"))
}

fn compile_libraries() -> Result<CompiledLibraries> {
    let scratch = tempfile::tempdir().context("creating a scratch dir")?;
    let dir = scratch.path();
    let mut files = Vec::new();
    for spec in &LIBRARIES {
        let source = match spec.link_name {
            "foo" => FOO_C,
            "baz" => BAZ_C,
            "bar" => BAR_C,
            other => bail!("no source for lib{other}"),
        };
        let source_path = dir.join(format!("{}.c", spec.link_name));
        fs_err::write(&source_path, source)?;
        let output = dir.join(spec.file_name);
        let mut command = Command::new("gcc");
        command
            .args(["-shared", "-fPIC", "-O1", "-o"])
            .arg(&output)
            .arg(&source_path)
            .arg(format!("-Wl,-soname,{}", spec.soname));
        if !spec.needs.is_empty() {
            // Link against the already built dependencies, but record no RUNPATH.
            command
                .arg(format!("-L{}", dir.display()))
                .arg("-Wl,--no-as-needed");
            for need in spec.needs {
                let dependency = LIBRARIES
                    .iter()
                    .find(|library| library.soname == *need)
                    .context("unknown dependency")?;
                command.arg(format!("-l{}", dependency.link_name));
            }
        }
        run_checked(&mut command)?;
        // Development symlink so later `-l` flags find it.
        std::os::unix::fs::symlink(
            spec.file_name,
            dir.join(format!("lib{}.so", spec.link_name)),
        )
        .context("creating a development symlink")?;
        files.push(fs_err::read(&output)?);
    }
    Ok(CompiledLibraries { files })
}

/// Runs a command, failing with its stderr when it does not succeed.
pub(crate) fn run_checked(command: &mut Command) -> Result<Vec<u8>> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    ensure!(
        output.status.success(),
        "{command:?} exited with {}:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(output.stdout)
}

/// A package written to a directory, ready for `nix-store --add` or already at its store path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedPackage {
    /// The package name, which is also the store path's name part.
    pub name: String,
    /// Where it was written.
    pub path: PathBuf,
}

/// Writes library package `spec` to `dir`: `lib/<file_name>`, plus the symlinks
/// `lib/<soname> -> <file_name>` and `lib/lib<link_name>.so -> <soname>`.
pub fn write_library_package(spec: &LibrarySpec, dir: &Path) -> Result<()> {
    let libraries = compiled_libraries()?;
    let index = LIBRARIES
        .iter()
        .position(|library| library == spec)
        .context("not a fixture library")?;
    let lib = dir.join("lib");
    fs_err::create_dir_all(&lib)?;
    fs_err::write(lib.join(spec.file_name), &libraries.files[index])?;
    symlink(spec.file_name, &lib.join(spec.soname))?;
    symlink(spec.soname, &lib.join(format!("lib{}.so", spec.link_name)))?;
    Ok(())
}

/// Writes the fixture's interpreter package to `dir`: `bin/python3.X` (a symlink to the host
/// interpreter), `bin/python3 -> python3.X`, and a small `lib/python3.X/`.
pub fn write_python_package(python: &HostPython, dir: &Path) -> Result<()> {
    let bin = dir.join("bin");
    fs_err::create_dir_all(&bin)?;
    let interpreter = format!("python{}", python.version);
    symlink(&python.executable, &bin.join(&interpreter))?;
    symlink(&interpreter, &bin.join("python3"))?;
    let lib = dir.join("lib").join(python.lib_dir_name());
    fs_err::create_dir_all(lib.join("site-packages"))?;
    fs_err::write(
        lib.join("site-packages").join("README.txt"),
        "This directory exists so that packages can be installed here.\n",
    )?;
    fs_err::write(
        lib.join("LICENSE.txt"),
        "Fixture stand-in for the Python standard library.\n",
    )?;
    Ok(())
}

/// Stages every package a [`crate::venv::VenvFixture`] needs under `dir` (`dir/<name>/...`), so a
/// caller can put them into the real store with `nix-store --add dir/<name>` and pass the
/// resulting `(name, store path)` pairs to
/// [`VenvFixtureBuilder::store_paths`](crate::venv::VenvFixtureBuilder::store_paths).
pub fn stage_packages(dir: &Path) -> Result<Vec<StagedPackage>> {
    let python = host_python()?;
    let mut staged = Vec::new();
    for spec in &LIBRARIES {
        let path = dir.join(spec.package);
        write_library_package(spec, &path)?;
        staged.push(StagedPackage {
            name: spec.package.to_owned(),
            path,
        });
    }
    let name = python.package_name();
    let path = dir.join(&name);
    write_python_package(python, &path)?;
    staged.push(StagedPackage { name, path });
    Ok(staged)
}

pub(crate) fn symlink(target: impl AsRef<Path>, link: &Path) -> Result<()> {
    std::os::unix::fs::symlink(target.as_ref(), link).with_context(|| {
        format!(
            "creating symlink {} -> {}",
            link.display(),
            target.as_ref().display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_hashes_use_the_nix_alphabet_and_depend_on_seed_and_name() {
        let first = fake_hash(1, "libfoo-1.0");
        assert_eq!(first.len(), 32);
        assert!(
            first
                .bytes()
                .all(|byte| NIX_BASE32_ALPHABET.contains(&byte))
        );
        assert_ne!(first, fake_hash(2, "libfoo-1.0"));
        assert_ne!(first, fake_hash(1, "libbar-2.3"));
    }
}
