//! Shared helpers: running the binary, small hand-made trees, snapshot filters.
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use storepatch_test::snapshot::Filters;

/// Hash parts used by hand-made trees (valid nix-base32, fixed so snapshots are stable).
pub(crate) const PYTHON_HASH: &str = "0c5dq8ikmzkcjh2hh2x3a1ihcp6yq3w1";
pub(crate) const ZLIB_HASH: &str = "1ix8vrm5f9r5l2v7mwnlbjjzvl0ai3gz";
pub(crate) const OUT_HASH: &str = "9zkcv1ijs7wy2n2w9vvfhbpp5gyzrfwa";

/// The uid and gid of `nobody`, which permission tests run as.
pub(crate) const NOBODY: u32 = 65534;

/// The binary under test, with a clean environment for the things it reads.
pub(crate) fn storepatch() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_storepatch"));
    command
        .env_remove("NIX_STORE")
        .env_remove("NIX_BINTOOLS")
        .env("STOREPATCH_NO_PROGRESS", "1");
    command
}

/// The binary under test, run as `nobody` so that file permissions apply even though the test
/// suite runs as root. Returns `None` (with a message) where `setpriv` is missing.
#[expect(clippy::print_stderr, reason = "a skipped test says so")]
pub(crate) fn storepatch_as_nobody() -> Option<Command> {
    if !Path::new("/usr/bin/setpriv").exists() {
        eprintln!("skipping: /usr/bin/setpriv (util-linux) is not installed");
        return None;
    }
    let mut command = Command::new("/usr/bin/setpriv");
    command
        .arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"))
        .args(["--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_storepatch"))
        .env_remove("NIX_STORE")
        .env("STOREPATCH_NO_PROGRESS", "1");
    Some(command)
}

/// A temporary directory holding a tree to work on, at `<tmp>/tree`.
pub(crate) struct TestTree {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) root: PathBuf,
}

impl TestTree {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        // World-searchable, so that `nobody` can reach what a test allows it to.
        fs_err::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = dir.path().join("tree");
        fs_err::create_dir(&root).unwrap();
        Self { dir, root }
    }

    pub(crate) fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    pub(crate) fn write(&self, relative: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(relative);
        fs_err::create_dir_all(path.parent().unwrap()).unwrap();
        fs_err::write(&path, contents).unwrap();
        path
    }

    pub(crate) fn symlink(&self, relative: &str, target: impl AsRef<Path>) -> PathBuf {
        let path = self.path(relative);
        fs_err::create_dir_all(path.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, &path).unwrap();
        path
    }

    pub(crate) fn chmod(&self, relative: &str, mode: u32) {
        fs_err::set_permissions(self.path(relative), std::fs::Permissions::from_mode(mode))
            .unwrap();
    }

    /// Hands the root and the given entries (relative paths) to `nobody`, as a build user owns
    /// its `$out`, so that permissions apply to [`storepatch_as_nobody`]. `"**"` means every
    /// entry of the tree.
    pub(crate) fn give_to_nobody(&self, relative: &[&str]) {
        let mut paths = vec![self.root.clone()];
        if relative == ["**"] {
            paths = walkdir::WalkDir::new(&self.root)
                .into_iter()
                .map(|entry| entry.unwrap().into_path())
                .collect();
        } else {
            paths.extend(relative.iter().map(|path| self.path(path)));
        }
        for path in paths {
            std::os::unix::fs::lchown(&path, Some(NOBODY), Some(NOBODY)).unwrap();
        }
    }

    /// Filters replacing this tree's temporary directory with `[TMP]`.
    pub(crate) fn filters(&self) -> Filters {
        Filters::new().path(self.dir.path(), "[TMP]")
    }

    /// A small venv-like tree with every kind of reference, using the fixed hashes above.
    pub(crate) fn small_venv() -> Self {
        let tree = Self::new();
        let python = format!("/nix/store/{PYTHON_HASH}-python3-3.12.8");
        let zlib = format!("/nix/store/{ZLIB_HASH}-zlib-1.3.1");
        tree.write(
            "pyvenv.cfg",
            format!("home = {python}/bin\nversion = 3.12.8\n"),
        );
        tree.write(
            "bin/tool",
            format!("#!{python}/bin/python3.12\nimport tool\n"),
        );
        tree.symlink("bin/python", format!("{python}/bin/python3.12"));
        tree.symlink("bin/python3", "python");
        let mut binary = vec![0x7f, b'E', b'L', b'F', 0, 1, 2, 3];
        binary.extend_from_slice(format!("{zlib}/lib\0").as_bytes());
        binary.extend_from_slice(&[0xff; 16]);
        tree.write("lib/python3.12/site-packages/ext/_speedups.so", binary);
        tree.write(
            "lib/python3.12/site-packages/ext-1.0.dist-info/direct_url.json",
            format!("{{\"url\": \"file://{python}-source\", \"dir_info\": {{}}}}\n"),
        );
        tree.write("share/notes.txt", format!("built against {ZLIB_HASH}\n"));
        tree.write(
            format!("share/{PYTHON_HASH}-patch.txt").as_str(),
            "a file named after a hash\n",
        );
        tree.write("share/clean.txt", "no references here\n");
        tree
    }
}

/// `path`'s (device, inode, modification time), to prove a file was not written.
pub(crate) fn identity(path: &Path) -> (u64, u64, i64, i64) {
    use std::os::unix::fs::MetadataExt;
    let metadata = fs_err::symlink_metadata(path).unwrap();
    (
        metadata.dev(),
        metadata.ino(),
        metadata.mtime(),
        metadata.mtime_nsec(),
    )
}

/// Runs `command` and returns its output, whatever its exit status.
pub(crate) fn run(command: &mut Command) -> std::process::Output {
    command
        .output()
        .unwrap_or_else(|err| panic!("cannot run {command:?}: {err}"))
}

/// Runs `command`, asserting that it succeeded (with its stdout and stderr in the failure
/// message).
pub(crate) fn run_ok(command: &mut Command) -> std::process::Output {
    let output = run(command);
    assert!(
        output.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Parses JSON Lines output.
pub(crate) fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}")))
        .collect()
}

/// The uv project under `testdata/venvs/uv-compiled` (compiled wheels and console scripts).
pub(crate) fn uv_project() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/venvs/uv-compiled")
}

/// Wheels are cached under `target/`, so the index is only asked once per checkout.
pub(crate) fn uv_cache() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/uv-cache")
}

/// `uv`, or `None` (with a message) when it is not installed and this is not CI.
pub(crate) fn uv_or_skip(test_name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("uv"))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none_or(|value| value != "true"),
            "{test_name}: uv not found, but CI=true requires it (pip install uv)"
        );
        // Straight to the process's stderr, so a skipped test never looks like a silent pass.
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!("skipping {test_name}: uv not found (pip install uv to run it)\n").as_bytes(),
        );
    }
    found
}

/// `uv sync --frozen` of [`uv_project`] in `build` (made if missing; the venv is `build/.venv`)
/// with `interpreter`, byte-compiled the way `UV_COMPILE_BYTECODE=1` does.
pub(crate) fn uv_sync(uv: &Path, interpreter: &Path, build: &Path) -> anyhow::Result<()> {
    fs_err::create_dir_all(build)?;
    for file in ["pyproject.toml", "uv.lock"] {
        fs_err::copy(uv_project().join(file), build.join(file))?;
    }
    let output = Command::new(uv)
        .args([
            "sync",
            "--frozen",
            "--no-install-project",
            "--no-dev",
            "--quiet",
        ])
        .arg("--python")
        .arg(interpreter)
        .current_dir(build)
        .env("UV_CACHE_DIR", uv_cache())
        .env("UV_LINK_MODE", "copy")
        .env("UV_PYTHON_DOWNLOADS", "never")
        .env("UV_COMPILE_BYTECODE", "1")
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "uv sync failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}
