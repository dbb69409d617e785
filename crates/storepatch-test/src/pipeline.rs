//! The shell pipelines storepatch replaces, run for real, for differential tests and benchmarks.
//!
//! [`run_old_pipeline`] is the fixed-output derivation's original clean-up:
//!
//! ```sh
//! find "$out" -type f -print0 | xargs -0 grep -aohE '<storedir>/[a-z0-9]{32}-[^/]*' | sort -u |
//! while IFS= read -r ref; do
//!     find "$out" -type f -exec remove-references-to -t "$ref" {} +
//! done
//! ```
//!
//! nixpkgs' `remove-references-to -t REF` takes the 32-character hash part out of `REF` (which must
//! look like `<storedir>/<32 chars of [a-z0-9]>-...`) and runs `sed -i -e "s|<hash>|<32 e's>|g"` on
//! every argument that is a regular file and not a symlink: it replaces the **bare hash part**, not
//! the `<storedir>/` prefix, with exactly 32 `e`s. So a bare hash elsewhere in a file is scrubbed
//! too, once its full path was found somewhere. `sed -i` rewrites every file it is given (new inode,
//! so hard links are broken, even for files with nothing to replace).
//! See: <https://github.com/NixOS/nixpkgs/tree/master/pkgs/build-support/remove-references-to>
//!
//! [`run_best_shell_pipeline`] is the fastest fair shell equivalent: ripgrep finds the references,
//! ripgrep lists the files holding any hash, and one `sed -i` with one `-e` per hash rewrites them.
//!
//! [`compare_trees`] then shows how an output differs from storepatch's.

use std::collections::BTreeSet;
use std::fmt::{self, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, ensure};
use storepatch_core::SCRUBBED_HASH;

use crate::fixture_store::run_checked;

/// What a pipeline found and replaced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipelineOutcome {
    /// The distinct matches of the discovery step, as raw bytes: the store path plus whatever
    /// `[^/]*` ran into after the name (for example `-source", "dir_info": ...`).
    pub references: BTreeSet<Vec<u8>>,
    /// The distinct hash parts that were replaced.
    pub hashes: BTreeSet<String>,
}

impl PipelineOutcome {
    /// The references cut back to `<storedir>/<hash>-<name>`, where the name is the longest
    /// prefix of Nix's name characters.
    pub fn store_paths(&self) -> BTreeSet<Vec<u8>> {
        self.references
            .iter()
            .map(|reference| {
                let end = reference
                    .iter()
                    .rposition(|&byte| byte == b'/')
                    .map_or(0, |slash| slash + 1)
                    + 33;
                let name_len = reference[end.min(reference.len())..]
                    .iter()
                    .take_while(|&&byte| byte.is_ascii_alphanumeric() || b"+-._?=".contains(&byte))
                    .count();
                reference[..(end + name_len).min(reference.len())].to_vec()
            })
            .collect()
    }
}

/// The discovery pattern as a POSIX ERE: `<storedir>/[a-z0-9]{32}-[^/]*`, with the store dir's
/// special characters escaped.
pub fn reference_pattern(store_dir: &Path) -> Result<String> {
    let store_dir = store_dir
        .to_str()
        .with_context(|| format!("store dir {} is not UTF-8", store_dir.display()))?;
    let mut pattern = String::new();
    for character in store_dir.trim_end_matches('/').chars() {
        if ".[]()*+?{}|^$\\".contains(character) {
            pattern.push('\\');
        }
        pattern.push(character);
    }
    pattern.push_str("/[a-z0-9]{32}-[^/]*");
    Ok(pattern)
}

/// The old discovery step: `find TREE -type f -print0 | xargs -0 grep -aohE PATTERN | sort -u`,
/// in the C locale.
pub fn find_references_old(tree: &Path, store_dir: &Path) -> Result<BTreeSet<Vec<u8>>> {
    let pattern = reference_pattern(store_dir)?;
    let stdout = run_checked(
        Command::new("sh")
            .args([
                "-c",
                // grep exits 1 when nothing matched; that is not an error here.
                r#"find "$1" -type f -print0 | xargs -0 -r grep -aohE -e "$2" | LC_ALL=C sort -u; exit 0"#,
                "sh",
            ])
            .arg(tree)
            .arg(&pattern)
            .env("LC_ALL", "C"),
    )?;
    Ok(split_lines(&stdout))
}

/// Runs the old pipeline on `tree` in place (see the module docs).
pub fn run_old_pipeline(tree: &Path, store_dir: &Path) -> Result<PipelineOutcome> {
    let references = find_references_old(tree, store_dir)?;
    let store_prefix = store_prefix(store_dir)?;
    let mut hashes = BTreeSet::new();
    for reference in &references {
        // remove-references-to: storeId=$(echo "$ref" | sed -n "s|^$storeDir/\([a-z0-9]\{32\}\)-.*|\1|p")
        let hash = remove_references_to_hash(reference, &store_prefix).with_context(|| {
            format!(
                "remove-references-to rejects {:?}: -t argument must be a Nix store path",
                String::from_utf8_lossy(reference)
            )
        })?;
        // One full pass over the tree per reference, as the loop does.
        run_checked(
            Command::new("sh")
                .args([
                    "-c",
                    r#"find "$1" -type f -print0 | xargs -0 -r sed -i -e "s|$2|$3|g""#,
                    "sh",
                ])
                .arg(tree)
                .arg(&hash)
                .arg(scrubbed())
                .env("LC_ALL", "C"),
        )?;
        hashes.insert(hash);
    }
    Ok(PipelineOutcome { references, hashes })
}

/// Runs the best shell pipeline on `tree` in place: `rg -oaI` to find references, `rg -l` to list
/// the files holding any of their hashes, and one `sed -i` with an `-e` per hash.
pub fn run_best_shell_pipeline(tree: &Path, store_dir: &Path) -> Result<PipelineOutcome> {
    let store_prefix = store_prefix(store_dir)?;
    // Same pattern; (?-u:...) lets [^/] match any byte, as grep does in the C locale.
    let pattern = reference_pattern(store_dir)?.replace("[^/]*", "(?-u:[^/\\n])*");
    let stdout = run_checked(
        Command::new("sh")
            .args([
                "-c",
                r#"rg --no-config -uu -a -o -I -N -e "$2" -- "$1" | LC_ALL=C sort -u; exit 0"#,
                "sh",
            ])
            .arg(tree)
            .arg(&pattern)
            .env("LC_ALL", "C"),
    )?;
    let references = split_lines(&stdout);
    let hashes: BTreeSet<String> = references
        .iter()
        .filter_map(|reference| remove_references_to_hash(reference, &store_prefix))
        .collect();
    if !hashes.is_empty() {
        let mut script =
            String::from(r#"rg --no-config -uu -a -l -0 -F "$@" -- "$TREE" | xargs -0 -r sed -i"#);
        for hash in &hashes {
            let _ = write!(script, " -e 's|{hash}|{}|g'", scrubbed());
        }
        let mut command = Command::new("sh");
        command
            .args(["-c", &script, "sh"])
            .env("TREE", tree)
            .env("LC_ALL", "C");
        for hash in &hashes {
            command.args(["-e", hash]);
        }
        run_checked(&mut command)?;
    }
    Ok(PipelineOutcome { references, hashes })
}

fn scrubbed() -> &'static str {
    std::str::from_utf8(&SCRUBBED_HASH).unwrap_or("eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee")
}

fn store_prefix(store_dir: &Path) -> Result<Vec<u8>> {
    let text = store_dir
        .to_str()
        .with_context(|| format!("store dir {} is not UTF-8", store_dir.display()))?;
    let mut prefix = text.trim_end_matches('/').as_bytes().to_vec();
    prefix.push(b'/');
    Ok(prefix)
}

/// The hash part remove-references-to extracts from `-t reference`, if it accepts it.
fn remove_references_to_hash(reference: &[u8], store_prefix: &[u8]) -> Option<String> {
    let rest = reference.strip_prefix(store_prefix)?;
    let hash = rest.get(..32)?;
    let valid = hash
        .iter()
        .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit())
        && rest.get(32) == Some(&b'-');
    valid.then(|| String::from_utf8_lossy(hash).into_owned())
}

fn split_lines(bytes: &[u8]) -> BTreeSet<Vec<u8>> {
    bytes
        .split(|&byte| byte == b'\n')
        .filter(|line| !line.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// The type of a tree entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
    /// Anything else (socket, fifo, device).
    Other,
}

/// One difference between two trees; paths are relative to the roots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeDifference {
    /// Present only in the left tree.
    OnlyInLeft(PathBuf),
    /// Present only in the right tree.
    OnlyInRight(PathBuf),
    /// Present in both with different types.
    KindDiffers {
        /// The entry.
        path: PathBuf,
        /// Its type on the left.
        left: EntryKind,
        /// Its type on the right.
        right: EntryKind,
    },
    /// Regular files whose bytes differ.
    ContentDiffers {
        /// The file.
        path: PathBuf,
        /// Offset of the first differing byte (or the shorter length).
        offset: usize,
        /// Length on the left.
        left_len: usize,
        /// Length on the right.
        right_len: usize,
    },
    /// Symlinks with different targets.
    SymlinkTargetDiffers {
        /// The symlink.
        path: PathBuf,
        /// Target on the left.
        left: PathBuf,
        /// Target on the right.
        right: PathBuf,
    },
    /// Permission bits (`mode & 0o7777`) differ; symlinks are not compared.
    ModeDiffers {
        /// The entry.
        path: PathBuf,
        /// Mode on the left.
        left: u32,
        /// Mode on the right.
        right: u32,
    },
}

impl fmt::Display for TreeDifference {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OnlyInLeft(path) => write!(formatter, "only in left: {}", path.display()),
            Self::OnlyInRight(path) => write!(formatter, "only in right: {}", path.display()),
            Self::KindDiffers { path, left, right } => {
                write!(formatter, "{}: {left:?} vs {right:?}", path.display())
            }
            Self::ContentDiffers {
                path,
                offset,
                left_len,
                right_len,
            } => write!(
                formatter,
                "{}: contents differ at byte {offset} (lengths {left_len} and {right_len})",
                path.display()
            ),
            Self::SymlinkTargetDiffers { path, left, right } => write!(
                formatter,
                "{}: symlink -> {} vs -> {}",
                path.display(),
                left.display(),
                right.display()
            ),
            Self::ModeDiffers { path, left, right } => {
                write!(formatter, "{}: mode {left:o} vs {right:o}", path.display())
            }
        }
    }
}

/// Compares two trees without following symlinks: names, entry types, regular file bytes,
/// symlink targets and permission bits. Returns the differences sorted by path (empty when the
/// trees match). Hard-link structure and times are not compared.
pub fn compare_trees(left: &Path, right: &Path) -> Result<Vec<TreeDifference>> {
    let mut differences = Vec::new();
    compare_directories(left, right, Path::new(""), &mut differences)?;
    Ok(differences)
}

/// [`compare_trees`] rendered one difference per line, for assertion messages.
pub fn describe_differences(differences: &[TreeDifference]) -> String {
    let mut text = String::new();
    for difference in differences {
        let _ = writeln!(text, "{difference}");
    }
    text
}

fn sorted_names(dir: &Path) -> Result<Vec<std::ffi::OsString>> {
    let mut names = fs_err::read_dir(dir)?
        .map(|entry| entry.map(|entry| entry.file_name()))
        .collect::<std::io::Result<Vec<_>>>()
        .with_context(|| format!("listing {}", dir.display()))?;
    names.sort();
    Ok(names)
}

fn kind_of(metadata: &std::fs::Metadata) -> EntryKind {
    let file_type = metadata.file_type();
    if file_type.is_symlink() {
        EntryKind::Symlink
    } else if file_type.is_dir() {
        EntryKind::Directory
    } else if file_type.is_file() {
        EntryKind::File
    } else {
        EntryKind::Other
    }
}

fn compare_directories(
    left_root: &Path,
    right_root: &Path,
    relative: &Path,
    differences: &mut Vec<TreeDifference>,
) -> Result<()> {
    let left_dir = left_root.join(relative);
    let right_dir = right_root.join(relative);
    let left_names = sorted_names(&left_dir)?;
    let right_names = sorted_names(&right_dir)?;
    let all: BTreeSet<_> = left_names.iter().chain(&right_names).collect();
    for name in all {
        let path = relative.join(name);
        let in_left = left_names.binary_search(name).is_ok();
        let in_right = right_names.binary_search(name).is_ok();
        if !in_right {
            differences.push(TreeDifference::OnlyInLeft(path));
            continue;
        }
        if !in_left {
            differences.push(TreeDifference::OnlyInRight(path));
            continue;
        }
        let left_path = left_root.join(&path);
        let right_path = right_root.join(&path);
        let left_metadata = fs_err::symlink_metadata(&left_path)?;
        let right_metadata = fs_err::symlink_metadata(&right_path)?;
        let (left_kind, right_kind) = (kind_of(&left_metadata), kind_of(&right_metadata));
        if left_kind != right_kind {
            differences.push(TreeDifference::KindDiffers {
                path,
                left: left_kind,
                right: right_kind,
            });
            continue;
        }
        if left_kind != EntryKind::Symlink {
            let left_mode = left_metadata.permissions().mode() & 0o7777;
            let right_mode = right_metadata.permissions().mode() & 0o7777;
            if left_mode != right_mode {
                differences.push(TreeDifference::ModeDiffers {
                    path: path.clone(),
                    left: left_mode,
                    right: right_mode,
                });
            }
        }
        match left_kind {
            EntryKind::Directory => {
                compare_directories(left_root, right_root, &path, differences)?;
            }
            EntryKind::Symlink => {
                let left_target = fs_err::read_link(&left_path)?;
                let right_target = fs_err::read_link(&right_path)?;
                if left_target != right_target {
                    differences.push(TreeDifference::SymlinkTargetDiffers {
                        path,
                        left: left_target,
                        right: right_target,
                    });
                }
            }
            EntryKind::File => {
                let left_bytes = fs_err::read(&left_path)?;
                let right_bytes = fs_err::read(&right_path)?;
                if left_bytes != right_bytes {
                    let offset = left_bytes
                        .iter()
                        .zip(&right_bytes)
                        .position(|(a, b)| a != b)
                        .unwrap_or(left_bytes.len().min(right_bytes.len()));
                    differences.push(TreeDifference::ContentDiffers {
                        path,
                        offset,
                        left_len: left_bytes.len(),
                        right_len: right_bytes.len(),
                    });
                }
            }
            EntryKind::Other => {}
        }
    }
    Ok(())
}

/// Copies a tree without following symlinks, keeping permission bits (hard links become separate
/// files). Useful to run two pipelines on identical inputs.
pub fn copy_tree(source: &Path, destination: &Path) -> Result<()> {
    let metadata = fs_err::symlink_metadata(source)?;
    ensure!(metadata.is_dir(), "{} is not a directory", source.display());
    fs_err::create_dir_all(destination)?;
    for name in sorted_names(source)? {
        let from = source.join(&name);
        let to = destination.join(&name);
        let metadata = fs_err::symlink_metadata(&from)?;
        let file_type = metadata.file_type();
        if file_type.is_symlink() {
            crate::fixture_store::symlink(fs_err::read_link(&from)?, &to)?;
        } else if file_type.is_dir() {
            copy_tree(&from, &to)?;
        } else {
            fs_err::copy(&from, &to)?;
        }
        if !file_type.is_symlink() {
            fs_err::set_permissions(&to, metadata.permissions())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::venv::{ReferenceKind, VenvFixture, hash_part};

    fn fixture(dir: &Path) -> VenvFixture {
        VenvFixture::builder(dir.join("venv"), dir.join("store"))
            .build()
            .unwrap()
    }

    #[test]
    fn old_pipeline_finds_the_contents_references_and_scrubs_them() {
        let dir = tempfile::tempdir().unwrap();
        let fixture = fixture(dir.path());
        let outcome = run_old_pipeline(&fixture.venv, &fixture.store_dir).unwrap();

        let expected: BTreeSet<Vec<u8>> = fixture
            .store_paths_with(ReferenceKind::Contents)
            .iter()
            .map(|path| path.as_os_str().as_encoded_bytes().to_vec())
            .collect();
        assert_eq!(outcome.store_paths(), expected);
        let expected_hashes: BTreeSet<String> = fixture
            .store_paths_with(ReferenceKind::Contents)
            .iter()
            .map(|path| hash_part(path).to_owned())
            .collect();
        assert_eq!(outcome.hashes, expected_hashes);
        // The junk after a name is part of what grep reports.
        assert!(
            outcome
                .references
                .iter()
                .any(|reference| reference
                    .ends_with(b"-source\", \"dir_info\": {\"editable\": false}}")),
            "{:?}",
            outcome.references
        );

        // Scrubbed: no contents hash left; the bare zlib hash was never found, so it survives.
        // The pattern also matches scrubbed paths (`e` is in `[a-z0-9]`): only those remain.
        let again = find_references_old(&fixture.venv, &fixture.store_dir).unwrap();
        let scrubbed_prefix = [
            store_prefix(&fixture.store_dir).unwrap(),
            SCRUBBED_HASH.to_vec(),
        ]
        .concat();
        let live: Vec<_> = again
            .iter()
            .filter(|reference| !reference.starts_with(&scrubbed_prefix))
            .map(|reference| String::from_utf8_lossy(reference))
            .collect();
        assert!(live.is_empty(), "{live:?}");
        assert_eq!(again.len(), outcome.references.len());
        let zlib = fixture
            .store_paths_with(ReferenceKind::BareHash)
            .into_iter()
            .find(|path| path.to_string_lossy().ends_with("zlib-1.3.1"))
            .unwrap();
        let hashes =
            fs_err::read_to_string(fixture.site_packages.join("barkit/_hashes.txt")).unwrap();
        assert!(hashes.contains(hash_part(&zlib)));
        // Symlinks are untouched.
        assert!(
            fs_err::read_link(fixture.venv.join("bin/python"))
                .unwrap()
                .starts_with(&fixture.python_store_path)
        );
        // Without RUNPATH libraries the extensions no longer load; with LD_LIBRARY_PATH they do.
        assert!(!fixture.import_extensions(None).unwrap().success);
        let report = fixture
            .import_extensions(Some(&fixture.library_path()))
            .unwrap();
        assert!(report.success, "{report:?}");
    }

    #[test]
    fn best_shell_pipeline_matches_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let fixture = fixture(dir.path());
        let copy = dir.path().join("copy");
        copy_tree(&fixture.venv, &copy).unwrap();
        assert!(compare_trees(&fixture.venv, &copy).unwrap().is_empty());

        let old = run_old_pipeline(&fixture.venv, &fixture.store_dir).unwrap();
        let best = run_best_shell_pipeline(&copy, &fixture.store_dir).unwrap();
        assert_eq!(old.hashes, best.hashes);
        assert_eq!(old.store_paths(), best.store_paths());
        let differences = compare_trees(&fixture.venv, &copy).unwrap();
        assert!(
            differences.is_empty(),
            "{}",
            describe_differences(&differences)
        );
    }

    #[test]
    fn compare_trees_reports_each_kind_of_difference() {
        let dir = tempfile::tempdir().unwrap();
        let (left, right) = (dir.path().join("left"), dir.path().join("right"));
        for root in [&left, &right] {
            fs_err::create_dir_all(root.join("sub")).unwrap();
            fs_err::write(root.join("same"), "x").unwrap();
        }
        fs_err::write(left.join("sub/file"), "abcd").unwrap();
        fs_err::write(right.join("sub/file"), "abXd").unwrap();
        fs_err::write(left.join("only-left"), "").unwrap();
        crate::fixture_store::symlink("a", &left.join("link")).unwrap();
        crate::fixture_store::symlink("b", &right.join("link")).unwrap();
        fs_err::set_permissions(right.join("same"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        fs_err::set_permissions(left.join("same"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let differences = compare_trees(&left, &right).unwrap();
        insta::assert_snapshot!(describe_differences(&differences), @r"
        link: symlink -> a vs -> b
        only in left: only-left
        same: mode 644 vs 600
        sub/file: contents differ at byte 2 (lengths 4 and 4)
        ");
    }
}
