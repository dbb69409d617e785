//! End-to-end tests against the real Nix (`nix-build`, `nix-store`), the judge of what a
//! reference is. Each test skips with a message when `nix-build` is missing, and fails instead
//! under `CI=true`. See `storepatch_test::nix` for how Nix is configured.
//!
//! - `scan` must report exactly the store paths Nix's own scanner records.
//! - After `scrub`, a derivation with `allowedReferences = [ ]` must build; before, it must not.
//! - The setup hooks in `nix/hooks/` run for real inside `nix-build`, as setup-hook packages under
//!   the model of nixpkgs' stdenv in `storepatch_test::stdenv` (input order, phases, fixup hooks,
//!   patchELF with the real patchelf, patchShebangs, strip, no-broken-symlinks, multiple outputs,
//!   `__structuredAttrs`): the scrub hook runs last and leaves a real fixed-output derivation
//!   without references, reproducibly for any thread count; the relink hook makes prebuilt
//!   binaries run and restores scrubbed run paths in place despite patchELF's shrink-rpath.
//!   Their argument handling is checked against a stub `storepatch` on the host.
//! - The round trip: a fixed-output derivation scrubs a venv (a real `CPython` extension module,
//!   a console script, the interpreter in the store), reproducibly for two thread counts; a main
//!   derivation with the restore and relink hooks and patchELF that only copies it has a venv
//!   that runs, refers to exactly the interpreter and the library, and has no dangling symlink.
//!   The same for a real venv made by `uv sync --frozen` inside the fixed-output derivation, from
//!   the package index (compiled wheels, console scripts, bytecode), whose NAR hash is the same
//!   for two builds and thread counts and whose main derivation refers to exactly the interpreter
//!   and zlib, with its bytecode and RECORD lines relocated.
//! - Every `.nix` file under `nix/` parses, and `package.nix` evaluates against stubs of the
//!   nixpkgs functions it uses.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context as _, Result, bail, ensure};
use base64::Engine as _;
use storepatch_test::nix::{
    NOT_ALLOWED_TO_REFER, NixJudge, hash_part, nix_string, store_path_list, unique_marker,
};
use storepatch_test::stdenv;

/// Skip (or, under `CI=true`, fail) the calling test when Nix is not installed.
macro_rules! nix_judge_or_skip {
    ($name:literal) => {
        match NixJudge::new_or_skip($name)? {
            Some(judge) => judge,
            None => return Ok(()),
        }
    };
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn storepatch() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_storepatch"));
    command
        .env_remove("NIX_STORE")
        .env("STOREPATCH_NO_PROGRESS", "1");
    command
}

fn run(command: &mut Command) -> Result<Output> {
    let description = format!("{command:?}");
    command
        .output()
        .with_context(|| format!("running {description}"))
}

fn run_ok(command: &mut Command) -> Result<Output> {
    let description = format!("{command:?}");
    let output = run(command)?;
    ensure!(
        output.status.success(),
        "{description} failed with {}:\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(output)
}

fn gcc(args: &[&str]) -> Result<()> {
    run_ok(Command::new("gcc").args(args)).map(drop)
}

fn write(path: &Path, contents: impl AsRef<[u8]>) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs_err::create_dir_all(parent)?;
    }
    fs_err::write(path, contents)?;
    Ok(())
}

fn make_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    fs_err::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn symlink(target: &Path, link: &Path) -> Result<()> {
    if let Some(parent) = link.parent() {
        fs_err::create_dir_all(parent)?;
    }
    fs_err::os::unix::fs::symlink(target, link)?;
    Ok(())
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .with_context(|| format!("not UTF-8: {}", path.display()))
}

/// A tree like a virtualenv's, referring to real store paths in every way Nix can see.
struct ReferenceTree {
    /// The tree itself (writable, in a temporary directory).
    tree: PathBuf,
    /// The store paths the tree refers to, sorted.
    referenced: Vec<PathBuf>,
    /// Every fixture store path, referenced or not; the candidates and the judge's inputs.
    inputs: Vec<PathBuf>,
    /// A file listing `inputs`, one per line, for `--candidates`.
    candidates: PathBuf,
}

/// Put fixture packages into the real store and build a tree under `dir` that refers to them:
///
/// | fixture      | how the tree refers to it                                           |
/// |--------------|---------------------------------------------------------------------|
/// | `libfix`     | RUNPATH of a gcc-built C extension (`-Wl,-rpath,<store>/lib`)       |
/// | `interp`     | shebang of a script in `bin/`                                       |
/// | `linked`     | target of a symlink                                                 |
/// | `named`      | the hash part in a file *name*                                      |
/// | `bare`       | the bare hash part in a text file (no store dir, no name)           |
/// | `unrelated`  | not at all: an input that must not be reported                      |
fn reference_tree(nix: &NixJudge, dir: &Path) -> Result<ReferenceTree> {
    let marker = unique_marker();
    let staging = dir.join("staging");
    let add_fixture = |name: &str, extra: &dyn Fn(&Path) -> Result<()>| -> Result<PathBuf> {
        let root = staging.join(name);
        write(&root.join("share/marker"), format!("{name} {marker}\n"))?;
        write(&root.join("share/data.txt"), format!("data of {name}\n"))?;
        extra(&root)?;
        nix.add(&root)
    };

    let libfix = add_fixture("libfix", &|root| {
        let source = root.join("../libfix.c");
        write(&source, "int fix_answer(void) { return 42; }\n")?;
        let lib = root.join("lib/libfix.so");
        fs_err::create_dir_all(root.join("lib"))?;
        gcc(&[
            "-shared",
            "-fPIC",
            "-Wl,-soname,libfix.so",
            "-o",
            path_str(&lib)?,
            path_str(&source)?,
        ])
    })?;
    let interp = add_fixture("interp", &|root| {
        let interpreter = root.join("bin/interp");
        write(&interpreter, "#!/bin/sh\nexec /bin/sh \"$@\"\n")?;
        make_executable(&interpreter)
    })?;
    let linked = add_fixture("linked", &|_| Ok(()))?;
    let named = add_fixture("named", &|_| Ok(()))?;
    let bare = add_fixture("bare", &|_| Ok(()))?;
    let unrelated = add_fixture("unrelated", &|_| Ok(()))?;

    let tree = dir.join("tree");
    let site = tree.join("lib/python3.12/site-packages");
    write(&tree.join("marker"), format!("tree {marker}\n"))?;

    // A C extension whose RUNPATH points into libfix.
    let extension_source = dir.join("fixext.c");
    write(
        &extension_source,
        "int fix_answer(void);\nint fixext_answer(void) { return fix_answer(); }\n",
    )?;
    let libfix_lib = libfix.join("lib");
    let extension = site.join("fixext/_fixext.cpython-312-x86_64-linux-gnu.so");
    fs_err::create_dir_all(site.join("fixext"))?;
    gcc(&[
        "-shared",
        "-fPIC",
        "-o",
        path_str(&extension)?,
        path_str(&extension_source)?,
        &format!("-L{}", path_str(&libfix_lib)?),
        "-lfix",
        &format!("-Wl,-rpath,{}", path_str(&libfix_lib)?),
    ])?;

    // A console script with a shebang into interp.
    let script = tree.join("bin/fixtool");
    write(
        &script,
        format!("#!{}/bin/interp\necho fixtool\n", interp.display()),
    )?;
    make_executable(&script)?;

    // A symlink into linked.
    symlink(
        &linked.join("share/data.txt"),
        &site.join("fixext/data.txt"),
    )?;

    // A file whose name carries named's hash part (like uv's cache entries).
    write(
        &tree.join(format!("share/cache/{}-build.lock", hash_part(&named)?)),
        "lock\n",
    )?;

    // The bare hash part of bare in a text file.
    write(
        &site.join("fixext-1.0.dist-info/BUILD-INFO"),
        format!("built-with={}\n", hash_part(&bare)?),
    )?;

    let mut referenced = vec![libfix, interp, linked, named, bare];
    referenced.sort();
    let mut inputs = referenced.clone();
    inputs.push(unrelated);
    inputs.sort();
    let candidates = dir.join("candidates.txt");
    let mut listing = String::new();
    for input in &inputs {
        listing.push_str(path_str(input)?);
        listing.push('\n');
    }
    write(&candidates, listing)?;
    Ok(ReferenceTree {
        tree,
        referenced,
        inputs,
        candidates,
    })
}

/// Decode a JSON `{"text": ...}` / `{"bytes": base64}` value.
fn json_bytes(value: &serde_json::Value) -> Result<Vec<u8>> {
    if let Some(text) = value.get("text").and_then(serde_json::Value::as_str) {
        return Ok(text.as_bytes().to_vec());
    }
    if let Some(bytes) = value.get("bytes").and_then(serde_json::Value::as_str) {
        return base64::engine::general_purpose::STANDARD
            .decode(bytes)
            .context("decoding base64");
    }
    bail!("neither text nor bytes: {value}")
}

/// The live (not yet scrubbed) store paths `storepatch scan --json --candidates` reports, each
/// mapped to the candidate with the same hash part (Nix keys references on the hash alone).
fn scan_store_paths(nix: &NixJudge, reference_tree: &ReferenceTree) -> Result<BTreeSet<PathBuf>> {
    let output = run(storepatch()
        .arg("scan")
        .arg("--store-dir")
        .arg(nix.store_dir())
        .arg("--candidates")
        .arg(&reference_tree.candidates)
        .arg("--json")
        .arg(&reference_tree.tree))?;
    let stdout = String::from_utf8(output.stdout).context("scan --json printed non-UTF-8")?;
    ensure!(
        matches!(output.status.code(), Some(0 | 1)),
        "storepatch scan failed with {}:\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let mut found = BTreeSet::new();
    for line in stdout.lines().filter(|line| !line.trim().is_empty()) {
        let object: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
        if object.get("type").and_then(serde_json::Value::as_str) != Some("reference") {
            continue;
        }
        if object.get("scrubbed").and_then(serde_json::Value::as_bool) == Some(true) {
            continue;
        }
        let store_path = object
            .get("store_path")
            .with_context(|| format!("reference without store_path: {line}"))?;
        let store_path = PathBuf::from(
            String::from_utf8(json_bytes(store_path)?).context("store path is not UTF-8")?,
        );
        let hash = hash_part(&store_path)?;
        let candidate = reference_tree
            .inputs
            .iter()
            .find(|input| hash_part(input).is_ok_and(|input_hash| input_hash == hash));
        found.insert(candidate.cloned().unwrap_or(store_path));
    }
    ensure!(
        found.is_empty() == (output.status.code() == Some(1)),
        "scan exit code {} does not match its findings {found:?}",
        output.status
    );
    Ok(found)
}

#[test]
fn scan_reports_exactly_what_nix_records() -> Result<()> {
    let nix = nix_judge_or_skip!("nix::scan_reports_exactly_what_nix_records");
    let dir = tempfile::tempdir()?;
    let reference_tree = reference_tree(&nix, dir.path())?;

    let out = nix.copy_with_inputs(&reference_tree.tree, &reference_tree.inputs)?;
    let recorded: BTreeSet<PathBuf> = nix.references(&out)?.into_iter().collect();
    // The fixture itself: Nix sees every kind of reference and ignores the unrelated input.
    assert_eq!(
        recorded,
        reference_tree.referenced.iter().cloned().collect(),
        "the fixture tree does not refer to what it is meant to"
    );

    let scanned = scan_store_paths(&nix, &reference_tree)?;
    assert_eq!(
        scanned, recorded,
        "storepatch scan (left) disagrees with nix-store -q --references (right)"
    );
    Ok(())
}

#[test]
fn scrub_satisfies_allowed_references_empty() -> Result<()> {
    let nix = nix_judge_or_skip!("nix::scrub_satisfies_allowed_references_empty");
    let dir = tempfile::tempdir()?;
    let reference_tree = reference_tree(&nix, dir.path())?;

    let before = nix
        .build_without_references(&reference_tree.tree, &reference_tree.inputs)
        .expect_err("the unscrubbed tree must not satisfy allowedReferences = [ ]");
    assert!(before.is_reference_violation(), "{before}");
    for referenced in &reference_tree.referenced {
        assert!(
            before.stderr.contains(path_str(referenced)?),
            "Nix does not list {} among the forbidden references:\n{before}",
            referenced.display()
        );
    }

    run_ok(
        storepatch()
            .arg("scrub")
            .arg("--store-dir")
            .arg(nix.store_dir())
            .arg("--candidates")
            .arg(&reference_tree.candidates)
            .arg(&reference_tree.tree),
    )?;

    let out = nix
        .build_without_references(&reference_tree.tree, &reference_tree.inputs)
        .map_err(|err| anyhow::anyhow!("the scrubbed tree still refers to an input: {err}"))?;
    assert_eq!(nix.references(&out)?, Vec::<PathBuf>::new());
    assert_eq!(
        scan_store_paths(&nix, &reference_tree)?,
        BTreeSet::new(),
        "scan still reports live references after scrub"
    );
    Ok(())
}

#[test]
fn every_nix_file_parses() -> Result<()> {
    let nix = nix_judge_or_skip!("nix::every_nix_file_parses");
    let mut files = Vec::new();
    for entry in walk(&repo_root().join("nix"))? {
        if entry
            .extension()
            .is_some_and(|extension| extension == "nix")
        {
            files.push(entry);
        }
    }
    files.sort();
    ensure!(
        files.len() >= 3,
        "expected package.nix and the examples, found {files:?}"
    );
    for file in &files {
        nix.parse(file)
            .with_context(|| format!("parsing {}", file.display()))?;
    }
    Ok(())
}

/// The few nixpkgs functions `package.nix` uses, as stubs that keep their arguments, so its
/// evaluation (attribute names, the finalAttrs fixed point, the hook wiring) is checked without
/// a nixpkgs checkout.
const STUB_NIXPKGS: &str = r#"
  let
    lib = {
      importTOML = file: builtins.fromTOML (builtins.readFile file);
      fileset = {
        toSource = { root, fileset }: { inherit root fileset; };
        unions = builtins.map toString;
        maybeMissing = file: file;
      };
      getExe = package: "${package.outPath}/bin/${package.meta.mainProgram}";
      optionalString = condition: string: if condition then string else "";
      licenses = { mit = "MIT"; asl20 = "Apache-2.0"; };
      platforms.linux = [ "x86_64-linux" "aarch64-linux" ];
    };
    rustPlatform.buildRustPackage = function:
      let
        attrs = function (attrs // { finalPackage = package; });
        package = attrs // { outPath = "/nix/store/00000000000000000000000000000000-storepatch"; };
      in package;
    makeSetupHook = arguments: script: arguments // { script = toString script; };
    installShellFiles = "installShellFiles";
    bintools = "bintools";
  in
    import PACKAGE ({ inherit lib rustPlatform makeSetupHook installShellFiles bintools; } // ARGUMENTS)
"#;

/// Evaluate `package.nix` against [`STUB_NIXPKGS`] with `arguments` (a Nix attribute set).
fn evaluate_package(nix: &NixJudge, arguments: &str) -> Result<serde_json::Value> {
    let package_file = repo_root().join("nix/package.nix").canonicalize()?;
    let expression = format!(
        "let package = {}; in {{
           inherit (package) pname version doCheck cargoBuildFlags cargoTestFlags postInstall meta
             nativeBuildInputs;
           lockFile = toString package.cargoLock.lockFile;
           sources = package.src.fileset;
           inherit (package.passthru) scrubHook relinkHook restoreHook;
         }}",
        STUB_NIXPKGS
            .replace("PACKAGE", path_str(&package_file)?)
            .replace("ARGUMENTS", arguments)
    );
    let output = run_ok(nix.command("nix-instantiate").args([
        "--eval",
        "--strict",
        "--json",
        "--expr",
        &expression,
    ]))?;
    Ok(serde_json::from_slice(&output.stdout)?)
}

#[test]
fn package_nix_evaluates_against_stub_nixpkgs() -> Result<()> {
    let nix = nix_judge_or_skip!("nix::package_nix_evaluates_against_stub_nixpkgs");
    let package = evaluate_package(&nix, "{ }")?;
    let root = repo_root().canonicalize()?;
    let exe = "/nix/store/00000000000000000000000000000000-storepatch/bin/storepatch";
    assert_eq!(package["pname"], "storepatch");
    assert_eq!(package["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(package["doCheck"], true);
    assert_eq!(package["meta"]["mainProgram"], "storepatch");
    assert_eq!(
        package["lockFile"],
        path_str(&root.join("Cargo.lock"))?,
        "cargoLock.lockFile must be the workspace's Cargo.lock"
    );
    // The check phase runs no crate whose tests need tools outside the build.
    let test_flags = package["cargoTestFlags"].to_string();
    for excluded in ["storepatch-test", "storepatch-benches"] {
        assert!(
            test_flags.contains(&format!(r#""--exclude","{excluded}""#)),
            "{test_flags}"
        );
    }
    assert_eq!(
        package["nativeBuildInputs"],
        serde_json::json!(["installShellFiles"])
    );
    // Man pages and completions are installed from the files in the repository, which exist.
    let post_install = package["postInstall"].as_str().context("postInstall")?;
    for file in [
        "bin/storepatch/doc/man/*.1",
        "bin/storepatch/doc/storepatch.bash",
        "bin/storepatch/doc/storepatch.zsh",
        "bin/storepatch/doc/storepatch.fish",
    ] {
        assert!(post_install.contains(file), "{post_install}");
        let path = root.join(file.trim_end_matches("*.1"));
        assert!(path.exists(), "{} is missing", path.display());
    }
    assert!(post_install.contains("installManPage"), "{post_install}");
    assert!(
        post_install.contains("installShellCompletion --cmd storepatch"),
        "{post_install}"
    );
    // No patchelf unless asked, and then a hard link, never a symlink.
    assert!(!post_install.contains("patchelf"), "{post_install}");
    let aliased = evaluate_package(&nix, "{ withPatchelfAlias = true; }")?;
    let aliased_install = aliased["postInstall"].as_str().context("postInstall")?;
    assert!(
        aliased_install.contains(r#"ln "$out/bin/storepatch" "$out/bin/patchelf""#),
        "{aliased_install}"
    );
    assert!(!aliased_install.contains("ln -s"), "{aliased_install}");

    for source in package["sources"].as_array().context("sources")? {
        let source = Path::new(source.as_str().context("source path")?);
        assert!(
            source.exists() || source.ends_with("testdata"),
            "{} is not in the repository",
            source.display()
        );
    }
    for (hook, name) in [
        ("scrubHook", "storepatch-scrub-hook"),
        ("relinkHook", "storepatch-relink-hook"),
        ("restoreHook", "storepatch-restore-hook"),
    ] {
        assert_eq!(package[hook]["name"], name);
        assert_eq!(package[hook]["substitutions"]["storepatch"], exe);
        assert_eq!(
            package[hook]["script"],
            path_str(&root.join(format!("nix/hooks/{name}.sh")))?
        );
    }
    // Like autoPatchelfHook, the relink hook brings bintools (the dynamic linker) along.
    assert_eq!(
        package["relinkHook"]["propagatedBuildInputs"],
        serde_json::json!(["bintools"])
    );
    Ok(())
}

#[test]
fn hard_linked_as_patchelf_it_is_patchelf() -> Result<()> {
    // What `withPatchelfAlias = true` installs: a hard link named patchelf. Scripts that resolve
    // `readlink -f $(command -v patchelf)` land on a file named patchelf that takes patchelf's
    // command line.
    let dir = tempfile::tempdir()?;
    let bin = dir.path().join("bin");
    fs_err::create_dir_all(&bin)?;
    fs_err::copy(env!("CARGO_BIN_EXE_storepatch"), bin.join("storepatch"))?;
    fs_err::hard_link(bin.join("storepatch"), bin.join("patchelf"))?;
    let source = dir.path().join("main.c");
    write(&source, "int main(void) { return 0; }\n")?;
    let program = dir.path().join("program");
    gcc(&[
        "-o",
        path_str(&program)?,
        path_str(&source)?,
        "-Wl,-rpath,/opt/somewhere/lib",
    ])?;
    let script = format!(
        r#"set -e; PATH="{bin}:$PATH"; real=$(readlink -f "$(command -v patchelf)"); \
           test "${{real##*/}}" = patchelf; "$real" --print-rpath "{program}""#,
        bin = path_str(&bin)?,
        program = path_str(&program)?,
    );
    let output = run_ok(Command::new("bash").arg("-c").arg(&script))?;
    assert_eq!(String::from_utf8(output.stdout)?, "/opt/somewhere/lib\n");
    Ok(())
}

fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs_err::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files.extend(walk(&path)?);
        } else {
            files.push(path);
        }
    }
    Ok(files)
}

// ---------------------------------------------------------------------------------------------
// Setup hooks.

/// The hook scripts as setup-hook packages under `dir` (`<dir>/<hook name>/nix-support/setup-hook`,
/// as makeSetupHook makes them), with `@storepatch@` replaced by `storepatch_bin`; the relink
/// hook propagates `bintools`, as package.nix does.
fn write_hook_packages(dir: &Path, storepatch_bin: &Path, bintools: &Path) -> Result<()> {
    for hook in [
        "storepatch-scrub-hook",
        "storepatch-relink-hook",
        "storepatch-restore-hook",
    ] {
        let text = fs_err::read_to_string(repo_root().join(format!("nix/hooks/{hook}.sh")))?;
        ensure!(
            text.contains("@storepatch@"),
            "{hook} does not call @storepatch@"
        );
        write(
            &dir.join(hook).join("nix-support/setup-hook"),
            text.replace("@storepatch@", path_str(storepatch_bin)?),
        )?;
    }
    write(
        &dir.join("storepatch-relink-hook/nix-support/propagated-build-inputs"),
        format!("{}\n", path_str(bintools)?),
    )
}

/// The store paths a hook test builds with.
struct Harness {
    /// The stdenv model (`storepatch_test::stdenv`) plus `bin/storepatch`, freshly built.
    model: PathBuf,
    /// `storepatch.scrubHook`: a setup-hook package.
    scrub_hook: PathBuf,
    /// `storepatch.relinkHook`: a setup-hook package propagating the model's bintools.
    relink_hook: PathBuf,
    /// `storepatch.restoreHook`: a setup-hook package.
    restore_hook: PathBuf,
}

/// Put the stdenv model with the freshly built `storepatch` into the store, then the three hook
/// packages calling it. The binary is linked against the host's glibc, which the sandbox exposes
/// through `extra-sandbox-paths`.
fn store_harness(nix: &NixJudge, dir: &Path) -> Result<Harness> {
    let staging = dir.join("storepatch-harness");
    fs_err::create_dir_all(staging.join("bin"))?;
    fs_err::copy(
        env!("CARGO_BIN_EXE_storepatch"),
        staging.join("bin/storepatch"),
    )?;
    stdenv::write_model(&staging)?;
    let model = nix.add(&staging)?;
    let hooks = dir.join("storepatch-hooks");
    write_hook_packages(
        &hooks,
        &model.join("bin/storepatch"),
        &model.join("bintools"),
    )?;
    Ok(Harness {
        scrub_hook: nix.add(&hooks.join("storepatch-scrub-hook"))?,
        relink_hook: nix.add(&hooks.join("storepatch-relink-hook"))?,
        restore_hook: nix.add(&hooks.join("storepatch-restore-hook"))?,
        model,
    })
}

/// A `builtins.derivation` built by the stdenv model with `hook` in its `nativeBuildInputs`,
/// copying `tree` to `$out` in its install phase. `extra` is spliced into the (recursive)
/// attribute set.
fn hook_derivation(harness: &Harness, hook: &Path, tree: &Path, extra: &str) -> Result<String> {
    Ok(format!(
        r#"builtins.derivation (rec {{
          name = "storepatch-hook-test";
          {model}
          nativeBuildInputs = [ (builtins.storePath {hook}) ];
          tree = builtins.storePath {tree};
          installPhase = ''
            runHook preInstall
            cp -R "$tree" "$out"
            chmod -R u+w "$out"
            runHook postInstall
          '';
          {extra}
        }})"#,
        model = stdenv::derivation_attributes(&harness.model)?,
        hook = nix_string(path_str(hook)?),
        tree = nix_string(path_str(tree)?),
    ))
}

/// The scrub hook, for a fixed-output-style derivation: the output must refer to none of the
/// inputs (`deps`). The name and bare-hash references are found because the hook passes
/// `--candidates-from-env`; `candidates` (the list as a store file) is there for tests that
/// pass `--candidates` through `scrubFlags` instead.
fn scrub_hook_derivation(
    nix: &NixJudge,
    harness: &Harness,
    reference_tree: &ReferenceTree,
    extra: &str,
) -> Result<String> {
    let tree = nix.add(&reference_tree.tree)?;
    let candidates = nix.add(&reference_tree.candidates)?;
    hook_derivation(
        harness,
        &harness.scrub_hook,
        &tree,
        &format!(
            "deps = {deps};\n candidates = builtins.storePath {candidates};\n{extra}",
            deps = store_path_list(&reference_tree.inputs),
            candidates = nix_string(path_str(&candidates)?),
        ),
    )
}

#[test]
fn scrub_hook_makes_the_output_reference_free() -> Result<()> {
    let nix = nix_judge_or_skip!("nix::scrub_hook_makes_the_output_reference_free");
    let dir = tempfile::tempdir()?;
    let reference_tree = reference_tree(&nix, dir.path())?;
    let harness = store_harness(&nix, dir.path())?;

    // Without the hook doing its work, the same derivation is rejected...
    let unscrubbed = nix
        .build(&scrub_hook_derivation(
            &nix,
            &harness,
            &reference_tree,
            "dontScrubStoreRefs = true; allowedReferences = [ ];",
        )?)
        .expect_err("dontScrubStoreRefs must leave the references in place");
    assert!(unscrubbed.is_reference_violation(), "{unscrubbed}");
    assert!(
        unscrubbed.stderr.contains("dontScrubStoreRefs is set"),
        "{unscrubbed}"
    );

    // ...and with it, it builds, says so in one line, and Nix records no reference at all.
    let build = nix.build_logged(&scrub_hook_derivation(
        &nix,
        &harness,
        &reference_tree,
        "allowedReferences = [ ];",
    )?)?;
    assert_eq!(nix.references(&build.out)?, Vec::<PathBuf>::new());
    let summaries: Vec<&str> = build
        .stderr
        .lines()
        .filter(|line| line.contains("storepatch-scrub-hook:"))
        .collect();
    assert_eq!(
        summaries.len(),
        1,
        "one summary line expected:\n{}",
        build.stderr
    );
    // All five referenced fixtures, none of them kept.
    assert!(
        summaries[0].contains(" reference(s) to 5 store path(s): "),
        "{}",
        summaries[0]
    );
    Ok(())
}

#[test]
fn scrub_hook_keeps_scrub_keep_refs() -> Result<()> {
    let nix = nix_judge_or_skip!("nix::scrub_hook_keeps_scrub_keep_refs");
    let dir = tempfile::tempdir()?;
    let reference_tree = reference_tree(&nix, dir.path())?;
    let harness = store_harness(&nix, dir.path())?;
    let kept = reference_tree
        .referenced
        .iter()
        .find(|path| path.to_string_lossy().ends_with("-interp"))
        .context("no interp fixture")?;

    let out = nix.build(&scrub_hook_derivation(
        &nix,
        &harness,
        &reference_tree,
        &format!(
            r#"scrubFlags = "--candidates ${{candidates}}";
               scrubKeepRefs = "${{builtins.storePath {kept}}}";
               allowedReferences = [ (builtins.storePath {kept}) ];"#,
            kept = nix_string(path_str(kept)?),
        ),
    )?)?;
    assert_eq!(nix.references(&out)?, vec![kept.clone()]);
    Ok(())
}

#[test]
fn scrub_hook_output_is_identical_for_any_thread_count() -> Result<()> {
    let nix = nix_judge_or_skip!("nix::scrub_hook_output_is_identical_for_any_thread_count");
    let dir = tempfile::tempdir()?;
    let reference_tree = reference_tree(&nix, dir.path())?;
    let harness = store_harness(&nix, dir.path())?;

    let mut hashes = Vec::new();
    for threads in [1, 2] {
        let out = nix.build(&scrub_hook_derivation(
            &nix,
            &harness,
            &reference_tree,
            &format!(
                r#"scrubFlags = "--threads {threads}";
                   allowedReferences = [ ];"#
            ),
        )?)?;
        hashes.push((threads, out.clone(), nix.nar_hash(&out)?));
    }
    assert_ne!(hashes[0].1, hashes[1].1, "two derivations expected");
    assert_eq!(
        hashes[0].2, hashes[1].2,
        "NAR hashes differ between --threads 1 and 2: {hashes:?}"
    );

    // The same as a real fixed-output derivation: the hash of the --threads 1 result is what
    // a --threads 2 run must produce, or Nix reports a hash mismatch.
    let fixed_output = nix.build(&scrub_hook_derivation(
        &nix,
        &harness,
        &reference_tree,
        &format!(
            r#"scrubFlags = "--threads 2";
               outputHashMode = "recursive";
               outputHashAlgo = "sha256";
               outputHash = "{hash}";
               allowedReferences = [ ];"#,
            hash = hashes[0].2,
        ),
    )?)?;
    assert!(nix.is_valid(&fixed_output)?, "{}", fixed_output.display());
    assert_eq!(nix.nar_hash(&fixed_output)?, hashes[0].2);
    assert_eq!(nix.references(&fixed_output)?, Vec::<PathBuf>::new());
    Ok(())
}

#[test]
fn scrub_hook_runs_last_under_the_stdenv() -> Result<()> {
    // Every stdenv fixup switched back on (the stdenv with bintools: strip too), a script that
    // patchShebangs points at a store path, references written by postFixup and by the install
    // check: the scrub, the last phase, still leaves none. no-broken-symlinks ran before it on
    // the unscrubbed tree (the scrubbed symlink into `linked` dangles by design).
    let nix = nix_judge_or_skip!("nix::scrub_hook_runs_last_under_the_stdenv");
    let dir = tempfile::tempdir()?;
    let reference_tree = reference_tree(&nix, dir.path())?;
    let harness = store_harness(&nix, dir.path())?;
    let interp = reference_tree
        .referenced
        .iter()
        .find(|path| path.to_string_lossy().ends_with("-interp"))
        .context("no interp fixture")?;
    let attributes = format!(
        r#"stdenvModelCC = "1";
           dontPatchShebangs = false;
           dontPatchELF = false;
           dontStrip = false;
           buildInputs = [ (builtins.storePath {interp}) ];
           postInstall = ''
             printf '#!/usr/bin/env interp\necho late\n' > "$out/bin/late-tool"
             chmod +x "$out/bin/late-tool"
           '';
           postFixup = ''
             echo "$buildInputs" > "$out/share/written-in-postFixup"
           '';
           doInstallCheck = true;
           installCheckPhase = ''
             echo "$buildInputs" > "$out/share/written-in-installCheck"
           '';"#,
        interp = nix_string(path_str(interp)?),
    );
    let build = nix.build_logged(&scrub_hook_derivation(
        &nix,
        &harness,
        &reference_tree,
        &format!("{attributes}\nallowedReferences = [ ];"),
    )?)?;
    assert_eq!(nix.references(&build.out)?, Vec::<PathBuf>::new());
    let log = &build.stderr;
    for expected in [
        "late-tool: interpreter directive changed from \"#!/usr/bin/env interp\"",
        "shrinking RPATHs of ELF executables",
        "Running phase: installCheckPhase",
        "Running phase: storepatchScrubPhase",
    ] {
        assert!(
            log.contains(expected),
            "{expected:?} not in the log:\n{log}"
        );
    }
    let position = |needle: &str| log.find(needle).unwrap_or(usize::MAX);
    assert!(
        position("Running phase: installCheckPhase") < position("storepatch-scrub-hook: /"),
        "{log}"
    );
    let late_tool = fs_err::read_to_string(build.out.join("bin/late-tool"))?;
    assert!(
        late_tool.starts_with(&format!(
            "#!{}/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-interp/bin/interp",
            nix.store_dir().display()
        )),
        "{late_tool}"
    );

    // The same as a real fixed-output derivation, judged by its printed path being valid and
    // free of references (Nix 2.8 would otherwise register it elsewhere and exit 0).
    let fixed_output = nix.build(&scrub_hook_derivation(
        &nix,
        &harness,
        &reference_tree,
        &format!(
            r#"{attributes}
               outputHashMode = "recursive";
               outputHashAlgo = "sha256";
               outputHash = "{hash}";"#,
            hash = nix.nar_hash(&build.out)?,
        ),
    )?)?;
    assert!(nix.is_valid(&fixed_output)?, "{}", fixed_output.display());
    assert_eq!(nix.references(&fixed_output)?, Vec::<PathBuf>::new());

    // no-broken-symlinks does run: a link into the store that is broken before the scrub fails
    // the build.
    let broken = nix
        .build(&scrub_hook_derivation(
            &nix,
            &harness,
            &reference_tree,
            r#"postInstall = "ln -s $NIX_STORE/nonexistent-target $out/broken";"#,
        )?)
        .expect_err("a dangling symlink must fail no-broken-symlinks");
    assert!(
        broken.stderr.contains(&format!(
            "points to a missing target: {}/nonexistent-target",
            nix.store_dir().display()
        )),
        "{broken}"
    );
    Ok(())
}

/// The default hooks that decide what reaches an output besides patchELF, patchShebangs and
/// strip, in the stdenv model as in nixpkgs, under the scrub hook: make-symlinks-relative (after
/// no-broken-symlinks, before the scrub) turns an absolute symlink into its own output into a
/// relative one, so the scrub finds no reference there and the link still resolves;
/// no-broken-symlinks leaves links outside the store alone but fails on one into `$TMPDIR`;
/// audit-tmpdir fails on a run path into `$TMPDIR`; move-lib64 leaves `lib64 -> lib`; strip
/// handles a hard-linked file once and both names end up stripped.
#[test]
fn stdenv_model_symlinks_tmpdir_and_lib64_as_nixpkgs() -> Result<()> {
    let nix = nix_judge_or_skip!("nix::stdenv_model_symlinks_tmpdir_and_lib64_as_nixpkgs");
    let dir = tempfile::tempdir()?;
    let harness = store_harness(&nix, dir.path())?;
    let tree = dir.path().join("payload");
    fs_err::create_dir_all(tree.join("bin"))?;
    fs_err::create_dir_all(tree.join("share"))?;
    write(&tree.join("share/data"), unique_marker())?;
    let source = dir.path().join("hello.c");
    write(&source, "int main(void) { return 0; }\n")?;
    gcc(&[
        "-g",
        "-o",
        path_str(&tree.join("bin/hello"))?,
        path_str(&source)?,
    ])?;
    let tree = nix.add(&tree)?;
    let derivation = |post_install: &str, extra: &str| {
        hook_derivation(
            &harness,
            &harness.scrub_hook,
            &tree,
            &format!("postInstall = {};\n{extra}", nix_string(post_install)),
        )
    };

    // With strip (the stdenv's bintools): strip runs once per inode, as nixpkgs' does, and
    // binutils writes a file with hard links in place, so both names end up stripped.
    let build = nix.build_logged(&derivation(
        r#"ln -s "$out/share" "$out/share-alias"
           ln -s /outside/the/store "$out/outside"
           mkdir -p "$out/lib64"
           cp "$out/share/data" "$out/lib64/data"
           ln "$out/bin/hello" "$out/bin/hello-again""#,
        r#"stdenvModelCC = "1";
           dontStrip = false;"#,
    )?)?;
    let has_debug_info = |path: &Path| -> Result<bool> {
        let sections = run_ok(Command::new("readelf").arg("-SW").arg(path))?;
        Ok(String::from_utf8_lossy(&sections.stdout).contains(".debug_info"))
    };
    assert!(!has_debug_info(&build.out.join("bin/hello"))?);
    assert!(!has_debug_info(&build.out.join("bin/hello-again"))?);
    let stripped_names = build
        .stderr
        .lines()
        .filter(|line| line.starts_with("stripping ") && line.contains("/bin/hello"))
        .count();
    assert_eq!(stripped_names, 1, "{}", build.stderr);
    assert_eq!(
        fs_err::read_link(build.out.join("share-alias"))?,
        Path::new("share")
    );
    assert!(build.out.join("share-alias/data").is_file());
    assert_eq!(
        fs_err::read_link(build.out.join("outside"))?,
        Path::new("/outside/the/store")
    );
    assert_eq!(
        fs_err::read_link(build.out.join("lib64"))?,
        Path::new("lib")
    );
    assert!(build.out.join("lib/data").is_file());
    assert_eq!(nix.references(&build.out)?, Vec::<PathBuf>::new());
    assert!(
        build.stderr.contains("0 symlink(s)"),
        "the scrub had a symlink to change:\n{}",
        build.stderr
    );

    let into_tmpdir = nix
        .build(&derivation(
            r#"ln -s "$TMPDIR/scratch" "$out/scratch""#,
            "",
        )?)
        .expect_err("a symlink into $TMPDIR must fail no-broken-symlinks");
    assert!(
        into_tmpdir.stderr.contains("/scratch points to /")
            && into_tmpdir.stderr.contains(" directory: /"),
        "{into_tmpdir}"
    );
    let run_path = nix
        .build(&derivation(
            r#"patchelf --set-rpath "$TMPDIR/lib" "$out/bin/hello""#,
            "",
        )?)
        .expect_err("a run path into $TMPDIR must fail audit-tmpdir");
    assert!(
        run_path
            .stderr
            .contains("/bin/hello contains a forbidden reference to /"),
        "{run_path}"
    );
    Ok(())
}

#[test]
fn scrub_hook_with_structured_attrs_and_outputs() -> Result<()> {
    // __structuredAttrs: the variables are bash arrays, the outputs an associative array; every
    // output is scrubbed.
    let nix = nix_judge_or_skip!("nix::scrub_hook_with_structured_attrs_and_outputs");
    let dir = tempfile::tempdir()?;
    let reference_tree = reference_tree(&nix, dir.path())?;
    let harness = store_harness(&nix, dir.path())?;
    let expression = scrub_hook_derivation(
        &nix,
        &harness,
        &reference_tree,
        r#"__structuredAttrs = true;
           outputs = [ "out" "lib" ];
           scrubFlags = [ "--threads" "2" ];
           postInstall = ''
             mkdir -p "$lib"
             printf '%s\n' "''${deps[@]}" > "$lib/deps.txt"
           '';"#,
    )?;
    let build = nix.build_logged(&expression)?;
    let lib = nix.build(&format!("({expression}).lib"))?;
    assert_ne!(build.out, lib);
    for output in [&build.out, &lib] {
        assert_eq!(
            nix.references(output)?,
            Vec::<PathBuf>::new(),
            "{}",
            output.display()
        );
    }
    assert_eq!(
        build.stderr.matches("storepatch-scrub-hook: /").count(),
        2,
        "{}",
        build.stderr
    );
    assert!(build.stderr.contains("--threads 2"), "{}", build.stderr);
    Ok(())
}

/// Store paths for the relink hook tests.
struct RelinkFixture {
    /// The stdenv model and the hooks.
    harness: Harness,
    /// A library package (`lib/libgreet.so.1`), given to the build as a build input.
    greet: PathBuf,
    /// The payload: `bin/hello` and an extension module, both needing `libgreet.so.1`.
    tree: PathBuf,
}

/// Build the relink fixture. The payload is linked against libgreet with no RUNPATH at all
/// (as a vendor tarball ships it) or, with `scrubbed_runpath`, with a RUNPATH into libgreet that
/// `storepatch scrub` has then turned into `<store>/eeee...-greet/lib` (as the FOD of
/// python-deps.nix leaves it).
fn relink_fixture(nix: &NixJudge, dir: &Path, scrubbed_runpath: bool) -> Result<RelinkFixture> {
    let marker = unique_marker();
    let harness = store_harness(nix, dir)?;

    let greet_root = dir.join("staging/greet");
    let greet_source = dir.join("greet.c");
    write(
        &greet_source,
        format!(
            "#include <stdio.h>\nvoid greet(void) {{ puts(\"hello from libgreet {marker}\"); }}\n"
        ),
    )?;
    fs_err::create_dir_all(greet_root.join("lib"))?;
    gcc(&[
        "-shared",
        "-fPIC",
        "-Wl,-soname,libgreet.so.1",
        "-o",
        path_str(&greet_root.join("lib/libgreet.so.1"))?,
        path_str(&greet_source)?,
    ])?;
    symlink(
        Path::new("libgreet.so.1"),
        &greet_root.join("lib/libgreet.so"),
    )?;
    let greet = nix.add(&greet_root)?;

    let tree = dir.join("tree");
    let main_source = dir.join("main.c");
    write(
        &main_source,
        "void greet(void);\nint main(void) { greet(); return 0; }\n",
    )?;
    let greet_lib = greet.join("lib");
    let mut link_flags = vec![format!("-L{}", path_str(&greet_lib)?), "-lgreet".to_owned()];
    if scrubbed_runpath {
        link_flags.push(format!("-Wl,-rpath,{}", path_str(&greet_lib)?));
    }
    let link_flags: Vec<&str> = link_flags.iter().map(String::as_str).collect();
    fs_err::create_dir_all(tree.join("bin"))?;
    fs_err::create_dir_all(tree.join("lib/python3.12/site-packages"))?;
    let hello = tree.join("bin/hello");
    let extension = tree.join("lib/python3.12/site-packages/_greet.so");
    gcc(&[
        // With debug info, for strip to remove.
        &["-g", "-o", path_str(&hello)?, path_str(&main_source)?],
        &link_flags[..],
    ]
    .concat())?;
    gcc(&[
        &[
            "-shared",
            "-fPIC",
            "-o",
            path_str(&extension)?,
            path_str(&main_source)?,
        ],
        &link_flags[..],
    ]
    .concat())?;
    write(&tree.join("marker"), &marker)?;
    if scrubbed_runpath {
        run_ok(
            storepatch()
                .arg("scrub")
                .arg("--store-dir")
                .arg(nix.store_dir())
                .arg(&tree),
        )?;
    }
    let tree = nix.add(&tree)?;
    Ok(RelinkFixture {
        harness,
        greet,
        tree,
    })
}

/// A derivation running the relink hook on the fixture under the stdenv model (stdenvNoCC: the
/// dynamic linker comes from the bintools the hook propagates), with `extra` attributes. Its
/// install check runs `bin/hello` and asks the dynamic loader to resolve the extension module.
fn relink_derivation(fixture: &RelinkFixture, extra_check: &str, extra: &str) -> Result<String> {
    hook_derivation(
        &fixture.harness,
        &fixture.harness.relink_hook,
        &fixture.tree,
        &format!(
            r#"buildInputs = [ (builtins.storePath {greet}) ];
               doInstallCheck = true;
               installCheckPhase = ''
                 LD_BIND_NOW=1 "$out/bin/hello" | grep "hello from libgreet"
                 resolved=$(/lib64/ld-linux-x86-64.so.2 --list \
                   "$out/lib/python3.12/site-packages/_greet.so")
                 echo "$resolved"
                 ! echo "$resolved" | grep -q "not found"
                 {extra_check}
               '';
               {extra}"#,
            greet = nix_string(path_str(&fixture.greet)?),
        ),
    )
}

#[test]
fn relink_fixture_needs_relinking() -> Result<()> {
    // The fixture is meaningful: without the hook, the loader cannot find libgreet.
    let nix = nix_judge_or_skip!("nix::relink_fixture_needs_relinking");
    let dir = tempfile::tempdir()?;
    for scrubbed_runpath in [false, true] {
        let fixture = relink_fixture(&nix, dir.path(), scrubbed_runpath)?;
        let err = nix
            .build(&relink_derivation(
                &fixture,
                "",
                "dontAutoPatchelf = true;",
            )?)
            .expect_err("hello must not run without relinking");
        assert!(
            err.stderr
                .contains("libgreet.so.1: cannot open shared object file"),
            "{err}"
        );
        fs_err::remove_dir_all(dir.path().join("staging"))?;
        fs_err::remove_dir_all(dir.path().join("storepatch-harness"))?;
        fs_err::remove_dir_all(dir.path().join("storepatch-hooks"))?;
        fs_err::remove_dir_all(dir.path().join("tree"))?;
    }
    Ok(())
}

#[test]
fn relink_hook_makes_binaries_run() -> Result<()> {
    let nix = nix_judge_or_skip!("nix::relink_hook_makes_binaries_run");
    let dir = tempfile::tempdir()?;
    let fixture = relink_fixture(&nix, dir.path(), false)?;
    let build = nix.build_logged(&relink_derivation(
        &fixture,
        "",
        r#"autoPatchelfIgnoreMissingDeps = [ "libnotthere.so.9" ];"#,
    )?)?;
    assert!(
        build.stderr.contains("autoPatchelf: storepatch relink"),
        "{}",
        build.stderr
    );
    assert_eq!(nix.references(&build.out)?, vec![fixture.greet]);
    Ok(())
}

/// The install check of the in-place restore: the RUNPATH is exactly `<greet>/lib` again, and
/// size, program headers and section headers are those of the scrubbed input.
fn restored_in_place_check(greet: &Path) -> Result<String> {
    Ok(format!(
        r#"for file in bin/hello lib/python3.12/site-packages/_greet.so; do
             readelf -dW "$out/$file" | grep -F "(RUNPATH)" | grep -F "[{greet}/lib]"
             test "$(stat -c %s "$tree/$file")" = "$(stat -c %s "$out/$file")"
             test "$(readelf -lW "$tree/$file" | grep -v '^Elf file type')" = \
                  "$(readelf -lW "$out/$file" | grep -v '^Elf file type')"
             test "$(readelf -SW "$tree/$file")" = "$(readelf -SW "$out/$file")"
           done"#,
        greet = path_str(greet)?,
    ))
}

#[test]
fn relink_hook_restores_scrubbed_runpath_in_place() -> Result<()> {
    // Under the stdenv model with patchELF active: the hook's pass before patchELF restores the
    // scrubbed entry, so shrink-rpath keeps it. Strip is off only because it rewrites the file.
    let nix = nix_judge_or_skip!("nix::relink_hook_restores_scrubbed_runpath_in_place");
    let dir = tempfile::tempdir()?;
    let fixture = relink_fixture(&nix, dir.path(), true)?;
    let build = nix.build_logged(&relink_derivation(
        &fixture,
        &restored_in_place_check(&fixture.greet)?,
        "dontStrip = true;",
    )?)?;
    assert!(
        build.stderr.contains("shrinking RPATHs of ELF executables"),
        "patchELF did not run:\n{}",
        build.stderr
    );
    assert_eq!(nix.references(&build.out)?, vec![fixture.greet.clone()]);

    // Without that pass (autoPatchelf called by hand in postFixup, after patchELF), shrink-rpath
    // has already deleted the scrubbed entry: the binaries still run, but not in place.
    let late = nix.build_logged(&relink_derivation(
        &fixture,
        r#"test "$(stat -c %s "$tree/bin/hello")" != "$(stat -c %s "$out/bin/hello")""#,
        r#"dontStrip = true;
           dontAutoPatchelf = true;
           postFixup = "dontAutoPatchelf= autoPatchelfPostFixup";"#,
    )?)?;
    assert!(
        !late.stderr.contains("before patchELF shrinks run paths"),
        "{}",
        late.stderr
    );
    Ok(())
}

#[test]
fn relink_hook_under_the_stdenv_with_strip() -> Result<()> {
    // The stdenv (with a compiler's bintools) strips after the relink passes: the restored
    // RUNPATH survives, the binaries run.
    let nix = nix_judge_or_skip!("nix::relink_hook_under_the_stdenv_with_strip");
    let dir = tempfile::tempdir()?;
    let fixture = relink_fixture(&nix, dir.path(), true)?;
    let out = nix.build(&relink_derivation(
        &fixture,
        &format!(
            r#"readelf -dW "$out/bin/hello" | grep -F "(RUNPATH)" | grep -F "[{greet}/lib]"
               readelf -SW "$tree/bin/hello" | grep -qF .debug_
               ! readelf -SW "$out/bin/hello" | grep -F .debug_"#,
            greet = path_str(&fixture.greet)?,
        ),
        r#"stdenvModelCC = "1";"#,
    )?)?;
    assert_eq!(nix.references(&out)?, vec![fixture.greet]);
    Ok(())
}

#[test]
fn relink_hook_with_structured_attrs_and_outputs() -> Result<()> {
    // __structuredAttrs (variables as bash arrays, outputs as an associative array) and a
    // second output holding the library: the outputs are indexed first, so `out` is linked
    // against `lib`'s copy, and both outputs are relinked in one run.
    let nix = nix_judge_or_skip!("nix::relink_hook_with_structured_attrs_and_outputs");
    let dir = tempfile::tempdir()?;
    let fixture = relink_fixture(&nix, dir.path(), false)?;
    let expression = hook_derivation(
        &fixture.harness,
        &fixture.harness.relink_hook,
        &fixture.tree,
        &format!(
            r#"__structuredAttrs = true;
               outputs = [ "out" "lib" ];
               greet = builtins.storePath {greet};
               autoPatchelfIgnoreMissingDeps = [ "libnotthere.so.9" "libalso-not.so.1" ];
               postInstall = ''
                 mkdir -p "$lib/lib"
                 cp "$greet/lib/libgreet.so.1" "$lib/lib/"
               '';
               doInstallCheck = true;
               installCheckPhase = ''
                 LD_BIND_NOW=1 "$out/bin/hello" | grep "hello from libgreet"
                 readelf -dW "$out/bin/hello" | grep -F "(RUNPATH)" | grep -F "[$lib/lib]"
               '';"#,
            greet = nix_string(path_str(&fixture.greet)?),
        ),
    )?;
    let build = nix.build_logged(&expression)?;
    let lib = nix.build(&format!("({expression}).lib"))?;
    assert_eq!(
        nix.references(&build.out)?,
        vec![lib.clone()],
        "{}",
        build.stderr
    );
    // One run over both outputs (in getAllOutputNames' order).
    let runs: Vec<&str> = build
        .stderr
        .lines()
        .filter(|line| line.starts_with("autoPatchelf: storepatch relink of "))
        .collect();
    assert_eq!(runs.len(), 2, "{}", build.stderr);
    for run in runs {
        assert!(
            run.contains(path_str(&build.out)?) && run.contains(path_str(&lib)?),
            "{run}"
        );
    }
    Ok(())
}

/// A store path holding `lib/lib<name>.so<suffix>` (soname the file name) exporting
/// `int <name>(void)` returning `value`, built by gcc under `dir/staging/<package>`.
fn library_package(
    nix: &NixJudge,
    dir: &Path,
    package: &str,
    libraries: &[(&str, &str, i32)],
) -> Result<PathBuf> {
    let root = dir.join("staging").join(package);
    fs_err::create_dir_all(root.join("lib"))?;
    let marker = unique_marker();
    for (name, suffix, value) in libraries {
        let source = dir.join(format!("{package}-{name}.c"));
        write(
            &source,
            format!(
                "int {name}(void) {{ return {value}; }}\nconst char *{name}_marker = \"{marker}\";\n"
            ),
        )?;
        let file = format!("lib{name}.so{suffix}");
        gcc(&[
            "-shared",
            "-fPIC",
            &format!("-Wl,-soname,{file}"),
            "-o",
            path_str(&root.join("lib").join(&file))?,
            path_str(&source)?,
        ])?;
    }
    nix.add(&root)
}

/// nixpkgs' own test of autoPatchelfHook (`pkgs/test/auto-patchelf-hook`, run with and without
/// `__structuredAttrs`), on a vendor program built here instead of a downloaded .deb: the
/// program has a foreign interpreter and needs a build input's library, two libraries that are
/// not supplied (`autoPatchelfIgnoreMissingDeps`), and a plugin it loads with dlopen from a
/// `runtimeDependencies` package. After the build (stdenv model, patchELF active) the
/// interpreter is the bintools' one, the run path is every runtime dependency's `lib` in order
/// (nonexistent ones too; one with a space only with structured attributes) followed by the
/// build input's `lib` and nothing else, and the program runs (the two ignored libraries given
/// at run time, as the system would).
#[test]
fn relink_hook_passes_nixpkgs_auto_patchelf_hook_test() -> Result<()> {
    let nix = nix_judge_or_skip!("nix::relink_hook_passes_nixpkgs_auto_patchelf_hook_test");
    let dir = tempfile::tempdir()?;
    let harness = store_harness(&nix, dir.path())?;
    let freetype = library_package(&nix, dir.path(), "freetype", &[("freetype", ".6", 40)])?;
    let curl = library_package(&nix, dir.path(), "curl-lib", &[("plugin", "", 1)])?;
    let system = library_package(
        &nix,
        dir.path(),
        "system-libs",
        &[("GL", ".1", 0), ("asound", ".2", 1)],
    )?;

    let tree = dir.path().join("tonelib");
    fs_err::create_dir_all(tree.join("bin"))?;
    let main_source = dir.path().join("vendor.c");
    write(
        &main_source,
        r#"#include <dlfcn.h>
#include <stdio.h>
int freetype(void); int GL(void); int asound(void);
int main(void) {
    void *plugin = dlopen("libplugin.so", RTLD_NOW);
    if (!plugin) { fprintf(stderr, "%s\n", dlerror()); return 1; }
    int (*call)(void) = (int (*)(void))dlsym(plugin, "plugin");
    printf("vendor %d\n", freetype() + GL() + asound() + call());
    return 0;
}
"#,
    )?;
    gcc(&[
        "-o",
        path_str(&tree.join("bin/ToneLib-Jam"))?,
        path_str(&main_source)?,
        "-Wl,--dynamic-linker=/opt/vendor/lib/ld-linux-x86-64.so.2",
        &format!("-L{}", path_str(&freetype.join("lib"))?),
        &format!("-L{}", path_str(&system.join("lib"))?),
        "-l:libfreetype.so.6",
        "-l:libGL.so.1",
        "-l:libasound.so.2",
        "-ldl",
    ])?;
    write(&tree.join("marker"), unique_marker())?;
    let tree = nix.add(&tree)?;

    for structured in [false, true] {
        let mut runtime_paths = vec![path_str(&curl)?, "/some/dep", "/some/other/dep"];
        if structured {
            runtime_paths.push("/some/dep with space");
        }
        // The package as an input of the build (a derivation in nixpkgs), the rest as strings.
        let runtime: Vec<String> = runtime_paths
            .iter()
            .enumerate()
            .map(|(index, path)| {
                if index == 0 {
                    format!("(builtins.storePath {})", nix_string(path))
                } else {
                    nix_string(path)
                }
            })
            .collect();
        let mut expected: Vec<String> = runtime_paths
            .iter()
            .map(|path| format!("{path}/lib"))
            .collect();
        expected.push(format!("{}/lib", path_str(&freetype)?));
        let expression = hook_derivation(
            &harness,
            &harness.relink_hook,
            &tree,
            &format!(
                r#"{structured_attrs}
                   buildInputs = [ (builtins.storePath {freetype}) ];
                   autoPatchelfIgnoreMissingDeps = [ "libGL.so.1" "libasound.so.2" ];
                   runtimeDependencies = [ {runtime} ];
                   expectedRunpath = {expected};
                   system_libs = builtins.storePath {system};
                   doInstallCheck = true;
                   installCheckPhase = ''
                     binary="$out/bin/ToneLib-Jam"
                     interpreter=$(patchelf --print-interpreter "$binary")
                     test "$interpreter" = "$(< "$NIX_BINTOOLS/nix-support/dynamic-linker")"
                     readelf -dW "$binary" | grep -F "(RUNPATH)" | grep -F "[$expectedRunpath]"
                     LD_LIBRARY_PATH="$system_libs/lib" "$binary" | grep -x "vendor 42"
                   '';"#,
                structured_attrs = if structured {
                    "__structuredAttrs = true;"
                } else {
                    ""
                },
                freetype = nix_string(path_str(&freetype)?),
                runtime = runtime.join(" "),
                expected = nix_string(&expected.join(":")),
                system = nix_string(path_str(&system)?),
            ),
        )?;
        let build = nix
            .build_logged(&expression)
            .map_err(|err| anyhow::anyhow!("structured attributes {structured}: {err}"))?;
        assert!(
            build.stderr.contains("shrinking RPATHs of ELF executables"),
            "patchELF did not run:\n{}",
            build.stderr
        );
        let mut wanted = vec![curl.clone(), freetype.clone()];
        wanted.sort();
        assert_eq!(nix.references(&build.out)?, wanted, "{}", build.stderr);
    }
    Ok(())
}

/// nixpkgs' `auto-patchelf-hook-preserve-origin` test: a bundle whose program finds its
/// libraries through `$ORIGIN/../lib` only, relinked by the hook with
/// `autoPatchelfFlags = [ "--preserve-origin" ]` under the stdenv model (patchELF active): the
/// output must refer neither to its source nor to itself (`disallowedReferences`, which Nix
/// enforces), and the program runs inside the build and from the store.
#[test]
fn relink_hook_passes_nixpkgs_preserve_origin_test() -> Result<()> {
    let nix = nix_judge_or_skip!("nix::relink_hook_passes_nixpkgs_preserve_origin_test");
    let dir = tempfile::tempdir()?;
    let harness = store_harness(&nix, dir.path())?;
    let bundle = dir.path().join("lib-check-bundle");
    fs_err::create_dir_all(bundle.join("lib"))?;
    fs_err::create_dir_all(bundle.join("bin"))?;
    let marker = unique_marker();
    for (name, value) in [("foo", 40), ("bar", 2)] {
        let source = dir.path().join(format!("{name}.c"));
        write(
            &source,
            format!("int {name}(void) {{ return {value}; }}\nconst char *marker = \"{marker}\";\n"),
        )?;
        gcc(&[
            "-shared",
            "-fPIC",
            "-o",
            path_str(&bundle.join(format!("lib/lib{name}.so")))?,
            path_str(&source)?,
        ])?;
    }
    let main_source = dir.path().join("lib-main.c");
    write(
        &main_source,
        "#include <stdio.h>\nint foo(void); int bar(void);\nint main(void) { printf(\"lib-check %d\\n\", foo() + bar()); return 0; }\n",
    )?;
    gcc(&[
        "-o",
        path_str(&bundle.join("bin/lib-check"))?,
        path_str(&main_source)?,
        &format!("-L{}", path_str(&bundle.join("lib"))?),
        "-lfoo",
        "-lbar",
        "-Wl,-rpath,$ORIGIN/../lib",
    ])?;
    let bundle = nix.add(&bundle)?;
    let out = nix.build(&hook_derivation(
        &harness,
        &harness.relink_hook,
        &bundle,
        r#"autoPatchelfFlags = [ "--preserve-origin" ];
           disallowedReferences = [ tree "out" ];
           doInstallCheck = true;
           installCheckPhase = ''
             readelf -dW "$out/bin/lib-check" | grep -F '(RUNPATH)' | grep -F '[$ORIGIN/../lib]'
             "$out/bin/lib-check" | grep -x "lib-check 42"
           '';"#,
    )?)?;
    assert_eq!(nix.references(&out)?, Vec::<PathBuf>::new());
    let ran = run_ok(&mut Command::new(out.join("bin/lib-check")))?;
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "lib-check 42\n");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The hooks' argument handling, on the host with a stub `storepatch` (no Nix needed).

/// Run `stdenv-lite.sh` on the host with `hook` sourced and a stub `storepatch` that records its
/// arguments, one per line, then return the recorded calls (separated by `--- call` lines).
fn run_hook_with_stub(hook: &str, variables: &[(&str, &str)]) -> Result<String> {
    let dir = tempfile::tempdir()?;
    let stub = dir.path().join("stub-storepatch");
    let calls = dir.path().join("calls");
    write(
        &stub,
        format!(
            "#!/bin/bash\n{{ echo '--- call'; printf '%s\\n' \"$@\"; }} >> '{}'\n\
             if [ \"$1\" = scrub ]; then echo '{}'; fi\n",
            path_str(&calls)?,
            r#"{"type":"summary","files":3,"names":0,"references":7,"store_paths":2,"symlinks":1}"#
        ),
    )?;
    make_executable(&stub)?;
    stdenv::write_model(dir.path())?;
    write_hook_packages(
        &dir.path().join("hooks"),
        &stub,
        &dir.path().join("bintools"),
    )?;
    let out = dir.path().join("out");
    let mut command = Command::new("bash");
    command
        .arg(dir.path().join("stdenv/default-builder.sh"))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("out", &out)
        .env("TMPDIR", dir.path())
        .env("nativeBuildInputs", dir.path().join("hooks").join(hook))
        .env("installPhase", "mkdir -p \"$out\"");
    for (name, value) in variables {
        command.env(name, value);
    }
    let output = run_ok(&mut command)?;
    // Only the hooks' own lines, not the phase headers or patchELF's.
    let mut log = String::new();
    for line in String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.starts_with("storepatch-") || line.starts_with("autoPatchelf"))
    {
        log.push_str(line);
        log.push('\n');
    }
    let recorded = if calls.exists() {
        fs_err::read_to_string(&calls)?
    } else {
        String::new()
    };
    let out = path_str(&out)?.to_owned();
    let dir_text = path_str(dir.path())?.to_owned();
    Ok(format!("{recorded}--- log\n{log}")
        .replace(&out, "$out")
        .replace(&dir_text, "$TMP"))
}

#[test]
fn scrub_hook_arguments() -> Result<()> {
    let recorded = run_hook_with_stub(
        "storepatch-scrub-hook",
        &[
            ("scrubFlags", "--threads 2  --candidates list.txt"),
            ("scrubKeepRefs", "/nix/store/a /nix/store/b"),
        ],
    )?;
    assert_eq!(
        recorded,
        "--- call\nscrub\n--json\n--candidates-from-env\n--threads\n2\n--candidates\nlist.txt\n--keep\n/nix/store/a\n\
         --keep\n/nix/store/b\n--\n$out\n--- log\nstorepatch-scrub-hook: $out: scrubbed 7 \
         reference(s) to 2 store path(s): 3 file(s), 1 symlink(s), 0 name(s) changed (flags: \
         --candidates-from-env --threads 2 --candidates list.txt --keep /nix/store/a --keep \
         /nix/store/b)\n"
    );

    let skipped = run_hook_with_stub("storepatch-scrub-hook", &[("dontScrubStoreRefs", "1")])?;
    assert_eq!(
        skipped,
        "--- log\nstorepatch-scrub-hook: dontScrubStoreRefs is set, leaving $out alone\n"
    );

    // With dontFixup, it still runs, as the last phase.
    let no_fixup = run_hook_with_stub("storepatch-scrub-hook", &[("dontFixup", "1")])?;
    assert!(
        no_fixup.starts_with("--- call\nscrub\n--json\n--candidates-from-env\n--\n$out\n"),
        "{no_fixup}"
    );
    Ok(())
}

#[test]
fn relink_hook_arguments() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("input");
    fs_err::create_dir_all(input.join("lib"))?;
    fs_err::create_dir_all(dir.path().join("no-lib"))?;
    let buildinputs = format!(
        "{} {}",
        path_str(&input)?,
        path_str(&dir.path().join("no-lib"))?
    );
    // Multi-line values with tabs split on all whitespace, as nixpkgs' concatTo does.
    let recorded = run_hook_with_stub(
        "storepatch-relink-hook",
        &[
            ("buildInputs", &buildinputs),
            (
                "autoPatchelfIgnoreMissingDeps",
                "libcuda.so.1\n\tlibnvidia-*.so",
            ),
            ("runtimeDependencies", "/nix/store/x-systemd"),
            ("appendRunpaths", "/run/opengl-driver/lib"),
            ("autoPatchelfFlags", "--keep-libc\n--no-recurse"),
            ("patchelfFlags", "--force-rpath  --page-size 65536"),
            (
                "installPhase",
                "mkdir -p \"$out/flat/deeper\" \"$out/vendor/a/b\" \"$out/vendor/c\"; \
                 touch \"$out/flat/libf.so.1\" \"$out/flat/deeper/libd.so\" \
                   \"$out/vendor/a/b/libv.so\" \"$out/vendor/c/libw.so.2.1\" \"$out/vendor/c/x.txt\"; \
                 addAutoPatchelfSearchPath \"$out/vendor\"; \
                 addAutoPatchelfSearchPath --no-recurse \"$out/flat\"; \
                 cd \"$out/vendor/c\"; addAutoPatchelfSearchPath",
            ),
        ],
    )?;
    let input_lib = format!("{}/lib", path_str(&input)?);
    let libraries = format!(
        "--follow-run-paths\n--library-path\n{input_lib}\n--library-path\n$out/vendor/a/b\n--library-path\n$out/vendor/c\n\
         --library-path\n$out/flat\n--library-path\n.\n--interpreter\n{}\n",
        stdenv::DYNAMIC_LINKER
    );
    assert_eq!(
        recorded,
        format!(
            // First the in-place restore before strip and patchELF's shrink-rpath, then
            // autoPatchelfPostFixup.
            "--- call\nrelink\n{libraries}--restore-only\n--ignore-missing\n*\n--keep-libc\n--no-recurse\n--\n$out\n\
             --- call\nrelink\n{libraries}\
             --runtime-dependency\n/nix/store/x-systemd/lib\n\
             --append-rpath\n/run/opengl-driver/lib\n\
             --ignore-missing\nlibcuda.so.1\n--ignore-missing\nlibnvidia-*.so\n\
             --patchelf-flag=--force-rpath\n--patchelf-flag=--page-size\n--patchelf-flag=65536\n\
             --keep-libc\n--no-recurse\n--\n$out\n--- log\n\
             autoPatchelf: storepatch relink of $out before patchELF shrinks run paths\n\
             autoPatchelf: storepatch relink of $out\n"
        )
    );

    // `true` arrives as "1" and means every missing dependency may stay; with dontPatchELF
    // there is no shrink-rpath to race, so only the post-fixup run happens.
    let ignore_all = run_hook_with_stub(
        "storepatch-relink-hook",
        &[
            ("autoPatchelfIgnoreMissingDeps", "1"),
            ("dontPatchELF", "1"),
        ],
    )?;
    assert_eq!(ignore_all.matches("--- call").count(), 1, "{ignore_all}");
    assert!(
        ignore_all.contains("--ignore-missing\n*\n--\n$out\n"),
        "{ignore_all}"
    );
    let disabled = run_hook_with_stub("storepatch-relink-hook", &[("dontAutoPatchelf", "1")])?;
    assert_eq!(disabled, "--- log\n");

    // autoPatchelf called by hand passes --no-recurse and its paths on; the automatic run covers
    // every existing output but `debug`.
    let by_hand = run_hook_with_stub(
        "storepatch-relink-hook",
        &[
            ("dontAutoPatchelf", "1"),
            (
                "installPhase",
                "mkdir -p \"$out/bin\"; autoPatchelf --no-recurse -- \"$out/bin\"",
            ),
        ],
    )?;
    assert!(
        by_hand.contains("--no-recurse\n--\n$out/bin\n--- log\n"),
        "{by_hand}"
    );
    // Without a bintools dynamic linker the compiler wrapper's is taken.
    let from_cc = run_hook_with_stub(
        "storepatch-relink-hook",
        &[
            ("dontPatchELF", "1"),
            (
                "installPhase",
                "mkdir -p \"$out\" \"$TMPDIR/cc/nix-support\"; \
                 echo /lib/ld-from-cc.so > \"$TMPDIR/cc/nix-support/dynamic-linker\"; \
                 NIX_BINTOOLS=/nonexistent; NIX_CC=\"$TMPDIR/cc\"",
            ),
        ],
    )?;
    assert!(
        from_cc.contains("--interpreter\n/lib/ld-from-cc.so\n"),
        "{from_cc}"
    );
    let debug = tempfile::tempdir()?;
    let outputs = run_hook_with_stub(
        "storepatch-relink-hook",
        &[
            ("outputs", "out lib debug"),
            ("lib", "/nonexistent-lib-output"),
            ("debug", path_str(debug.path())?),
        ],
    )?;
    assert!(
        outputs.contains("--\n$out\n--- log\n") && !outputs.contains(path_str(debug.path())?),
        "{outputs}"
    );

    // nixpkgs' CUDA hooks (deduplicateRunpathEntriesHook, nvccHook, cudaRunpathFixup) find the
    // hook by the name autoPatchelfPostFixup in postFixupHooks and require their own entry
    // after it: a hook sourced after this one passes their check.
    let order = run_hook_with_stub(
        "storepatch-relink-hook",
        &[(
            "installPhase",
            "mkdir -p \"$out\"; autoFixElfFiles() { :; }; \
             postFixupHooks+=('autoFixElfFiles deduplicateRunpathEntries'); \
             hooks=\"${postFixupHooks[*]}\"; \
             if [[ $hooks == *autoPatchelfPostFixup*'autoFixElfFiles deduplicateRunpathEntries'* ]]; \
             then echo 'autoPatchelf order: autoPatchelfPostFixup first'; fi",
        )],
    )?;
    assert!(
        order.contains("autoPatchelf order: autoPatchelfPostFixup first"),
        "{order}"
    );
    Ok(())
}

#[test]
fn hook_scripts_are_valid_bash() -> Result<()> {
    for hook in [
        "storepatch-scrub-hook.sh",
        "storepatch-relink-hook.sh",
        "storepatch-restore-hook.sh",
    ] {
        run_ok(
            Command::new("bash")
                .arg("-n")
                .arg(repo_root().join("nix/hooks").join(hook)),
        )?;
    }
    for model in [
        "setup.sh",
        "default-builder.sh",
        "patchelf-setup-hook.sh",
        "bintools-setup-hook.sh",
        "hooks/no-broken-symlinks.sh",
        "hooks/audit-tmpdir.sh",
        "hooks/make-symlinks-relative.sh",
        "hooks/move-lib64.sh",
        "hooks/patch-shebangs.sh",
        "hooks/strip.sh",
    ] {
        run_ok(
            Command::new("bash").arg("-n").arg(
                repo_root()
                    .join("crates/storepatch-test/src/stdenv")
                    .join(model),
            ),
        )?;
    }
    Ok(())
}

#[test]
fn nix_judge_rejects_what_it_should() -> Result<()> {
    // The judge itself: a tree with a reference fails allowedReferences = [ ], the same tree
    // without it builds.
    let nix = nix_judge_or_skip!("nix::nix_judge_rejects_what_it_should");
    let dir = tempfile::tempdir()?;
    let fixture_dir = dir.path().join("judge-fixture");
    write(&fixture_dir.join("marker"), unique_marker())?;
    let fixture = nix.add(&fixture_dir)?;
    let tree = dir.path().join("tree");
    write(&tree.join("ref.txt"), format!("{}\n", fixture.display()))?;
    let err = nix
        .build_without_references(&tree, std::slice::from_ref(&fixture))
        .expect_err("a reference must be rejected");
    assert!(err.stderr.contains(NOT_ALLOWED_TO_REFER), "{err}");
    write(&tree.join("ref.txt"), "nothing\n")?;
    let out = nix.build_without_references(&tree, std::slice::from_ref(&fixture))?;
    assert_eq!(nix.references(&out)?, Vec::<PathBuf>::new());
    assert_eq!(nix.nar_hash(&out)?, nix.nar_hash_of_tree(&out)?);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The whole round trip: a fixed-output derivation scrubs a venv, a main derivation with the
// restore and relink hooks makes it work again, with no hand-written repair.

/// The Debian interpreter (visible in the sandbox through `extra-sandbox-paths`), with headers.
const SANDBOX_PYTHON: &str = "/usr/bin/python3.11";

/// Where the fixed-output derivation builds the venv (`$NIX_BUILD_TOP/source/.venv`; Nix's
/// sandbox build directory is `/build`): what uv records in shebangs and `bin/activate`.
const BUILD_VENV: &str = "/build/source/.venv";

/// The store paths and the venv of the round trip.
struct RoundTripFixture {
    harness: Harness,
    /// `python3-<version>`: `bin/python3.11` (a symlink to the real interpreter) and
    /// `lib/python3.11` (a symlink to its standard library), so the store path is its prefix.
    python: PathBuf,
    /// `libfoo-1.0`: a gcc-built shared library.
    library: PathBuf,
    /// The venv as the FOD's `uv sync` would leave it in `/build/source/.venv`, in the store.
    venv: PathBuf,
}

/// [`SANDBOX_PYTHON`] as a store path of its own, and what the probe found.
struct SandboxPython {
    /// `python3-<version>`: `bin/python3.11` (a symlink to the real interpreter) and
    /// `lib/python3.11` (a symlink to its standard library), so the store path is its prefix.
    python: PathBuf,
    version: String,
    ext_suffix: String,
    include: String,
}

fn sandbox_python(nix: &NixJudge, dir: &Path) -> Result<SandboxPython> {
    let probe = run_ok(Command::new(SANDBOX_PYTHON).args([
        "-c",
        "import sys, sysconfig; print('%d.%d.%d' % sys.version_info[:3]); \
         print(sysconfig.get_config_var('EXT_SUFFIX')); print(sysconfig.get_paths()['include'])",
    ]))?;
    let probe = String::from_utf8(probe.stdout)?;
    let [version, ext_suffix, include] = probe.lines().collect::<Vec<_>>()[..] else {
        bail!("unexpected probe output {probe:?}");
    };

    let staging = dir.join("python-staging");
    let python_root = staging.join(format!("python3-{version}"));
    symlink(
        Path::new(SANDBOX_PYTHON),
        &python_root.join("bin/python3.11"),
    )?;
    symlink(Path::new("python3.11"), &python_root.join("bin/python3"))?;
    symlink(
        Path::new("/usr/lib/python3.11"),
        &python_root.join("lib/python3.11"),
    )?;
    let python = nix.add(&python_root)?;
    Ok(SandboxPython {
        python,
        version: version.to_owned(),
        ext_suffix: ext_suffix.to_owned(),
        include: include.to_owned(),
    })
}

/// Build the round-trip fixture. The venv is made here, outside Nix, and handed to the FOD as a
/// source: the package index cannot be reached from the sandbox. Its files are what uv writes
/// (DESIGN.md §8) for a venv at [`BUILD_VENV`]: a real `CPython` extension module whose RUNPATH
/// names the library's store path, a console script `#!/build/source/.venv/bin/python`, the
/// absolute `bin/python` symlink into the interpreter's store path, `pyvenv.cfg` with
/// `home = <python>/bin` and `bin/activate` with `VIRTUAL_ENV`.
fn round_trip_fixture(nix: &NixJudge, dir: &Path) -> Result<RoundTripFixture> {
    use storepatch_test::fixture_store::{LIBRARIES, write_library_package};

    let harness = store_harness(nix, dir)?;
    let SandboxPython {
        python,
        version,
        ext_suffix,
        include,
    } = sandbox_python(nix, dir)?;
    let staging = dir.join("staging");

    let spec = &LIBRARIES[0];
    let library_root = staging.join(spec.package);
    write_library_package(spec, &library_root)?;
    let library = nix.add(&library_root)?;

    let venv = dir.join("venv");
    let site = venv.join("lib/python3.11/site-packages");
    let extension_source = dir.join("fastdemo.c");
    write(
        &extension_source,
        r#"#define PY_SSIZE_T_CLEAN
#include <Python.h>
int foo_add(int a, int b);
static PyObject *add(PyObject *self, PyObject *args) {
    int a, b;
    (void)self;
    if (!PyArg_ParseTuple(args, "ii", &a, &b)) return NULL;
    return PyLong_FromLong(foo_add(a, b));
}
static PyMethodDef methods[] = {{"add", add, METH_VARARGS, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fastdemo", NULL, -1, methods};
PyMODINIT_FUNC PyInit__fastdemo(void) { return PyModule_Create(&module); }
"#,
    )?;
    fs_err::create_dir_all(&site)?;
    let library_lib = library.join("lib");
    gcc(&[
        "-shared",
        "-fPIC",
        &format!("-I{include}"),
        "-o",
        path_str(&site.join(format!("_fastdemo{ext_suffix}")))?,
        path_str(&extension_source)?,
        &format!("-L{}", path_str(&library_lib)?),
        &format!("-l{}", spec.link_name),
        &format!("-Wl,-rpath,{}", path_str(&library_lib)?),
    ])?;
    write(&site.join("demo/__init__.py"), "")?;
    write(
        &site.join("demo/_marker.py"),
        format!("MARKER = {:?}\n", unique_marker()),
    )?;
    write(
        &site.join("demo/cli.py"),
        "import sys\n\nimport _fastdemo\n\n\ndef main():\n    \
         print(f\"demo {_fastdemo.add(2, 3)} {sys.prefix}\")\n    return 0\n",
    )?;
    let script = venv.join("bin/demo");
    write(
        &script,
        format!(
            "#!{BUILD_VENV}/bin/python\n# -*- coding: utf-8 -*-\nimport sys\nfrom demo.cli import main\n\
             if __name__ == \"__main__\":\n    if sys.argv[0].endswith(\"-script.pyw\"):\n        \
             sys.argv[0] = sys.argv[0][:-11]\n    elif sys.argv[0].endswith(\".exe\"):\n        \
             sys.argv[0] = sys.argv[0][:-4]\n    sys.exit(main())\n"
        ),
    )?;
    make_executable(&script)?;
    symlink(&python.join("bin/python3.11"), &venv.join("bin/python"))?;
    symlink(Path::new("python"), &venv.join("bin/python3"))?;
    symlink(Path::new("python"), &venv.join("bin/python3.11"))?;
    write(
        &venv.join("bin/activate"),
        format!(
            "# This file must be used with \"source bin/activate\" *from bash*\n\
             VIRTUAL_ENV='{BUILD_VENV}'\nexport VIRTUAL_ENV\n_OLD_VIRTUAL_PATH=\"$PATH\"\n\
             PATH=\"$VIRTUAL_ENV/bin:$PATH\"\nexport PATH\n"
        ),
    )?;
    write(
        &venv.join("pyvenv.cfg"),
        format!(
            "home = {}/bin\nimplementation = CPython\nversion_info = {version}\n\
             include-system-site-packages = false\nprompt = demo\n",
            path_str(&python)?
        ),
    )?;
    let venv = nix.add(&venv)?;
    Ok(RoundTripFixture {
        harness,
        python,
        library,
        venv,
    })
}

/// The FOD (or, without `fixed`, the same build as a normal derivation): copy the venv to where
/// `uv sync` builds it, then to `$out`, as python-deps.nix does; the scrub hook does the rest.
/// The interpreter and the library are inputs, so the venv's symlinks resolve and their hashes
/// are candidates, as in a real build.
fn round_trip_fod(fixture: &RoundTripFixture, threads: u32, fixed: &str) -> Result<String> {
    venv_fod(
        &fixture.harness,
        &[fixture.python.clone(), fixture.library.clone()],
        &fixture.venv,
        threads,
        fixed,
    )
}

/// [`round_trip_fod`] for any venv in the store and its inputs `deps`.
fn venv_fod(
    harness: &Harness,
    deps: &[PathBuf],
    venv: &Path,
    threads: u32,
    fixed: &str,
) -> Result<String> {
    Ok(format!(
        r#"builtins.derivation (rec {{
          name = "storepatch-round-trip-deps";
          {model}
          nativeBuildInputs = [ (builtins.storePath {hook}) ];
          deps = {deps};
          venvSource = builtins.storePath {venv};
          scrubFlags = "--threads {threads}";
          installPhase = ''
            runHook preInstall
            mkdir -p "$NIX_BUILD_TOP/source"
            cp -R "$venvSource" "$NIX_BUILD_TOP/source/.venv"
            chmod -R u+w "$NIX_BUILD_TOP/source/.venv"
            test "$NIX_BUILD_TOP/source/.venv" = {build_venv}
            cp -R "$NIX_BUILD_TOP/source/.venv" "$out"
            runHook postInstall
          '';
          {fixed}
        }})"#,
        model = stdenv::derivation_attributes(&harness.model)?,
        hook = nix_string(path_str(&harness.scrub_hook)?),
        deps = store_path_list(deps),
        venv = nix_string(path_str(venv)?),
        build_venv = BUILD_VENV,
    ))
}

/// The main derivation of the round trip: copy the FOD's output `fod` to `$out` and nothing else
/// by hand, with the restore and relink hooks and the stdenv model's patchELF; `inputs` are its
/// `buildInputs`. `extra` is spliced into the attribute set.
fn venv_main_derivation(
    harness: &Harness,
    inputs: &[PathBuf],
    fod: &Path,
    extra: &str,
) -> Result<String> {
    Ok(format!(
        r#"builtins.derivation (rec {{
          name = "storepatch-round-trip-app";
          {model}
          nativeBuildInputs = [ (builtins.storePath {restore}) (builtins.storePath {relink}) ];
          buildInputs = {inputs};
          pythonDeps = builtins.storePath {fod};
          installPhase = ''
            runHook preInstall
            cp -r "$pythonDeps" "$out"
            chmod -R u+w "$out"
            runHook postInstall
          '';
          {extra}
        }})"#,
        model = stdenv::derivation_attributes(&harness.model)?,
        restore = nix_string(path_str(&harness.restore_hook)?),
        relink = nix_string(path_str(&harness.relink_hook)?),
        inputs = store_path_list(inputs),
        fod = nix_string(path_str(fod)?),
    ))
}

/// Builds a fixed-output derivation reference-free and deterministically, judged as DESIGN.md
/// §7 says: `expression(threads, attributes)` is first built as a normal derivation with
/// `allowedReferences = [ ]` and one thread for the NAR hash, then as the real FOD with that hash
/// and two threads (its printed path must be valid and refer to nothing), then rebuilt with one
/// thread under `--check`, which fails unless the output is identical. Returns the output.
fn reference_free_fod(
    nix: &NixJudge,
    expression: impl Fn(u32, &str) -> Result<String>,
) -> Result<PathBuf> {
    let probe = nix.build(&expression(1, "allowedReferences = [ ];")?)?;
    let hash = nix.nar_hash(&probe)?;
    let fixed = |threads| {
        expression(
            threads,
            &format!(
                r#"outputHashMode = "recursive"; outputHashAlgo = "sha256"; outputHash = "{hash}";"#
            ),
        )
    };
    let fod = nix.build(&fixed(2)?)?;
    assert!(nix.is_valid(&fod)?, "{} is not valid", fod.display());
    assert_eq!(nix.references(&fod)?, Vec::<PathBuf>::new());
    assert_eq!(nix.nar_hash(&fod)?, hash);
    let check =
        run_ok(
            nix.command("nix-build")
                .args(["--check", "--no-out-link", "--expr", &fixed(1)?]),
        )?;
    assert_eq!(
        String::from_utf8(check.stdout)?.trim(),
        path_str(&fod)?,
        "the --threads 1 rebuild is another path"
    );
    Ok(fod)
}

#[test]
fn fod_scrub_then_restore_and_relink_hooks_round_trip_a_venv() -> Result<()> {
    let nix = nix_judge_or_skip!("nix::fod_scrub_then_restore_and_relink_hooks_round_trip_a_venv");
    let dir = tempfile::tempdir()?;
    let fixture = round_trip_fixture(&nix, dir.path())?;

    // 1. The FOD. First as a normal derivation with `allowedReferences = [ ]` and one thread,
    // for the NAR hash; then as a real FOD with that hash and two threads, judged as DESIGN.md
    // §7 says (valid printed path, no references); then rebuilt with one thread (`--check`),
    // which fails unless the output is identical.
    let fod = reference_free_fod(&nix, |threads, attributes| {
        round_trip_fod(&fixture, threads, attributes)
    })?;
    let scrubbed_shebang = fs_err::read_to_string(fod.join("bin/demo"))?;
    assert!(
        scrubbed_shebang.starts_with(&format!("#!{BUILD_VENV}/bin/python\n")),
        "{scrubbed_shebang}"
    );
    assert!(
        fs_err::read_link(fod.join("bin/python"))?
            .to_string_lossy()
            .contains("/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-python3-"),
        "bin/python is not scrubbed"
    );

    // 2. The main derivation: copy the FOD's output, and nothing else by hand. patchELF (the
    // model's default) is active.
    let main_derivation = |extra: &str| {
        venv_main_derivation(
            &fixture.harness,
            &[fixture.python.clone(), fixture.library.clone()],
            &fod,
            extra,
        )
    };
    // The control: without the restore, the copy is broken (bin/python dangles), and
    // no-broken-symlinks fails the build.
    let unrestored = nix
        .build(&main_derivation("dontStorepatchRestore = true;")?)
        .expect_err("the scrubbed venv must not pass no-broken-symlinks unrestored");
    assert!(
        unrestored
            .stderr
            .contains("/bin/python points to a missing target"),
        "{unrestored}"
    );
    let build = nix.build_logged(&main_derivation("")?)?;
    let out = &build.out;
    let log = &build.stderr;
    for expected in [
        "storepatchRestore: storepatch restore of ",
        "shrinking RPATHs of ELF executables",
        "autoPatchelf: storepatch relink of ",
    ] {
        assert!(
            log.contains(expected),
            "{expected:?} not in the log:\n{log}"
        );
    }
    let out_text = path_str(out)?;

    // The shebang names the output's interpreter; the activate script the output.
    let shebang = fs_err::read_to_string(out.join("bin/demo"))?;
    assert!(
        shebang.starts_with(&format!("#!{out_text}/bin/python\n")),
        "{shebang}"
    );
    let activate = fs_err::read_to_string(out.join("bin/activate"))?;
    assert!(
        activate.contains(&format!("VIRTUAL_ENV='{out_text}'\n")),
        "{activate}"
    );
    let pyvenv = fs_err::read_to_string(out.join("pyvenv.cfg"))?;
    assert!(
        pyvenv.contains(&format!("home = {}/bin\n", path_str(&fixture.python)?)),
        "{pyvenv}"
    );

    // Everything runs, with no help from the environment.
    let run_clean = |program: &Path, args: &[&str]| -> Result<String> {
        let output = run_ok(
            Command::new(program)
                .args(args)
                .env_clear()
                .env("PATH", "/usr/bin:/bin")
                .env("LD_LIBRARY_PATH", ""),
        )?;
        Ok(String::from_utf8(output.stdout)?)
    };
    assert_eq!(
        run_clean(&out.join("bin/demo"), &[])?,
        format!("demo 6 {out_text}\n")
    );
    assert_eq!(
        run_clean(
            &out.join("bin/python"),
            &[
                "-c",
                "import sys, _fastdemo; print(sys.prefix); print(_fastdemo.__file__); \
                 print(_fastdemo.add(40, 1))"
            ]
        )?,
        format!(
            "{out_text}\n{out_text}/lib/python3.11/site-packages/_fastdemo{}\n42\n",
            fs_err::read_dir(out.join("lib/python3.11/site-packages"))?
                .filter_map(Result::ok)
                .find_map(|entry| entry
                    .file_name()
                    .to_str()
                    .and_then(|name| name.strip_prefix("_fastdemo"))
                    .map(str::to_owned))
                .context("no extension module in the output")?
        )
    );

    // Nix records exactly the interpreter, the library and the output itself.
    let mut expected = vec![fixture.python.clone(), fixture.library.clone(), out.clone()];
    expected.sort();
    assert_eq!(nix.references(out)?, expected, "{log}");

    // storepatch's own audit agrees: nothing left scrubbed, no problem.
    let audit = run_ok(storepatch().arg("audit").arg(out))?;
    let audit_text = format!(
        "{}{}",
        String::from_utf8_lossy(&audit.stdout),
        String::from_utf8_lossy(&audit.stderr)
    );
    assert!(
        audit_text.contains("healthy: 0 problems") && audit_text.contains(" and 0 scrubbed "),
        "{audit_text}"
    );

    // No dangling symlink (no-broken-symlinks ran in the build; check it here as well).
    for entry in walk_all(out)? {
        if entry.is_symlink() {
            assert!(
                fs_err::metadata(&entry).is_ok(),
                "{} dangles",
                entry.display()
            );
        }
    }
    Ok(())
}

/// The host's certificate authorities (the package index may be reached through a TLS-inspecting
/// proxy, whose authority only the host's bundle has).
fn host_ca_bundle() -> PathBuf {
    std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .filter(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from("/etc/ssl/certs/ca-certificates.crt"))
}

/// The real `uv` executable behind `uv` on `PATH` (which may be a shim script): uv names itself
/// in `UV` for the commands it runs.
fn uv_executable(uv: &Path) -> Result<PathBuf> {
    let output = run_ok(
        Command::new(uv)
            .args(["run", "--no-project", "--no-python-downloads", "--python"])
            .arg(SANDBOX_PYTHON)
            .args(["--", "/bin/sh", "-c", "printf %s \"$UV\""]),
    )?;
    let path = PathBuf::from(String::from_utf8(output.stdout)?);
    ensure!(path.is_file(), "uv named itself {}", path.display());
    Ok(path)
}

/// What the fixed-output derivation of the real venv builds with, in the store.
struct UvInputs {
    /// `uv-<version>/bin/uv`.
    uv: PathBuf,
    /// `ca-bundle/ca-bundle.crt`: [`host_ca_bundle`].
    ca_bundle: PathBuf,
    /// `uv-compiled-project`: `pyproject.toml` and `uv.lock` of [`crate::common::uv_project`].
    project: PathBuf,
}

fn uv_inputs(nix: &NixJudge, uv: &Path, dir: &Path) -> Result<UvInputs> {
    let staging = dir.join("uv-staging");
    let version = String::from_utf8(run_ok(Command::new(uv).arg("--version"))?.stdout)?;
    let version = version
        .split_whitespace()
        .nth(1)
        .with_context(|| format!("unexpected uv --version {version:?}"))?
        .to_owned();
    let uv_root = staging.join(format!("uv-{version}"));
    fs_err::create_dir_all(uv_root.join("bin"))?;
    fs_err::copy(uv_executable(uv)?, uv_root.join("bin/uv"))?;
    let ca_root = staging.join("ca-bundle");
    fs_err::create_dir_all(&ca_root)?;
    fs_err::copy(host_ca_bundle(), ca_root.join("ca-bundle.crt"))?;
    let project_root = staging.join("uv-compiled-project");
    fs_err::create_dir_all(&project_root)?;
    for file in ["pyproject.toml", "uv.lock"] {
        fs_err::copy(
            crate::common::uv_project().join(file),
            project_root.join(file),
        )?;
    }
    Ok(UvInputs {
        uv: nix.add(&uv_root)?,
        ca_bundle: nix.add(&ca_root)?,
        project: nix.add(&project_root)?,
    })
}

/// Where the sandbox sees the shared uv cache ([`crate::common::uv_cache`]).
const SANDBOX_UV_CACHE: &str = "/uv-cache";

/// Let the sandbox of `nix`'s builds see the shared uv cache at [`SANDBOX_UV_CACHE`] (read and
/// written: the wheels are verified against the lock's hashes, so the cache only saves
/// downloads).
fn share_uv_cache(nix: &NixJudge) -> Result<()> {
    let cache = crate::common::uv_cache();
    fs_err::create_dir_all(&cache)?;
    let cache = fs_err::canonicalize(&cache)?;
    let mut conf = fs_err::OpenOptions::new()
        .append(true)
        .open(nix.conf_dir().join("nix.conf"))?;
    std::io::Write::write_all(
        &mut conf,
        format!(
            "extra-sandbox-paths = {SANDBOX_UV_CACHE}={}\n",
            path_str(&cache)?
        )
        .as_bytes(),
    )?;
    Ok(())
}

/// The fixed-output derivation of python-deps.nix for real: `uv sync --frozen
/// --no-install-project --no-dev` of the project in `$NIX_BUILD_TOP/source` (so the venv is
/// [`BUILD_VENV`]) with the interpreter in the store, byte-compiled, from the package index; then
/// `.venv` is copied to `$out` and the scrub hook runs last. `SOURCE_DATE_EPOCH` (nixpkgs' stdenv
/// sets it) makes the bytecode hash-based, so it does not depend on when it was built.
fn uv_sync_fod(
    harness: &Harness,
    python: &Path,
    inputs: &UvInputs,
    threads: u32,
    fixed: &str,
) -> Result<String> {
    Ok(format!(
        r#"builtins.derivation (rec {{
          name = "storepatch-uv-deps";
          {model}
          nativeBuildInputs = [ (builtins.storePath {hook}) ];
          python = builtins.storePath {python};
          uv = builtins.storePath {uv};
          caBundle = builtins.storePath {ca_bundle};
          project = builtins.storePath {project};
          scrubFlags = "--threads {threads}";
          SOURCE_DATE_EPOCH = "315532800";
          SSL_CERT_FILE = "${{caBundle}}/ca-bundle.crt";
          UV_CACHE_DIR = "{cache}";
          UV_NO_CONFIG = "1";
          UV_NO_PROGRESS = "1";
          UV_PYTHON_DOWNLOADS = "never";
          UV_COMPILE_BYTECODE = "1";
          UV_LINK_MODE = "copy";
          installPhase = ''
            runHook preInstall
            mkdir -p "$NIX_BUILD_TOP/source"
            cd "$NIX_BUILD_TOP/source"
            cp "$project/pyproject.toml" "$project/uv.lock" .
            chmod u+w pyproject.toml uv.lock
            "$uv/bin/uv" sync --frozen --no-install-project --no-dev --python "$python/bin/python3.11"
            test "$PWD/.venv" = {build_venv}
            cp -R .venv "$out"
            runHook postInstall
          '';
          {fixed}
        }})"#,
        model = stdenv::derivation_attributes(&harness.model)?,
        hook = nix_string(path_str(&harness.scrub_hook)?),
        python = nix_string(path_str(python)?),
        uv = nix_string(path_str(&inputs.uv)?),
        ca_bundle = nix_string(path_str(&inputs.ca_bundle)?),
        project = nix_string(path_str(&inputs.project)?),
        cache = SANDBOX_UV_CACHE,
        build_venv = BUILD_VENV,
    ))
}

/// Builds a fixed-output derivation that needs the network (so it cannot be probed as a normal
/// derivation first): built with a hash that cannot match for the NAR hash Nix reports, then with
/// that hash and two threads (the printed path must be valid and refer to nothing: DESIGN.md §7),
/// then rebuilt with one thread under `--check`, which fails unless the output is identical.
/// Returns the output and its hash.
fn networked_fod(
    nix: &NixJudge,
    expression: impl Fn(u32, &str) -> Result<String>,
) -> Result<(PathBuf, String)> {
    let fixed = |threads, hash: &str| {
        expression(
            threads,
            &format!(
                r#"outputHashMode = "recursive"; outputHashAlgo = "sha256"; outputHash = "{hash}";"#
            ),
        )
    };
    let probe = nix
        .build(&fixed(
            1,
            "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        )?)
        .expect_err("the probe's hash cannot match");
    let hash = probe
        .stderr
        .lines()
        .find_map(|line| line.trim().strip_prefix("got:"))
        .map(|hash| hash.trim().to_owned())
        .with_context(|| format!("no hash mismatch reported: {probe}"))?;
    let fod = nix.build(&fixed(2, &hash)?)?;
    assert!(nix.is_valid(&fod)?, "{} is not valid", fod.display());
    assert_eq!(nix.references(&fod)?, Vec::<PathBuf>::new());
    let check = run_ok(nix.command("nix-build").args([
        "--check",
        "--no-out-link",
        "--expr",
        &fixed(1, &hash)?,
    ]))?;
    assert_eq!(
        String::from_utf8(check.stdout)?.trim(),
        path_str(&fod)?,
        "the --threads 1 rebuild is another path"
    );
    Ok((fod, hash))
}

/// The round trip of a real venv, made as authentik's python-deps.nix makes it: the FOD runs `uv
/// sync --frozen` of `testdata/venvs/uv-compiled` (compiled wheels bundling their own libraries,
/// console scripts, byte-compiled) itself, from the package index, with the interpreter in the
/// store, and its NAR hash is the same for two builds and thread counts; the restore hook
/// relocates the location uv recorded (`/build/source/.venv`) to `$out`.
#[test]
fn real_uv_venv_through_fod_scrub_then_restore_and_relink_hooks() -> Result<()> {
    use crate::common::uv_or_skip;

    let nix =
        nix_judge_or_skip!("nix::real_uv_venv_through_fod_scrub_then_restore_and_relink_hooks");
    let Some(uv) = uv_or_skip("nix::real_uv_venv_through_fod_scrub_then_restore_and_relink_hooks")
    else {
        return Ok(());
    };
    share_uv_cache(&nix)?;
    let dir = tempfile::tempdir()?;
    let harness = store_harness(&nix, dir.path())?;
    let SandboxPython { python, .. } = sandbox_python(&nix, dir.path())?;
    let uv_inputs = uv_inputs(&nix, &uv, dir.path())?;
    let built_text = BUILD_VENV.to_owned();
    // psycopg-binary's bundled libcrypto and libssl need `libz.so.1`, which the wheel does not
    // bundle: the main derivation needs a zlib, as a real one would. The host's, in the store.
    let host_zlib = fs_err::canonicalize("/usr/lib/x86_64-linux-gnu/libz.so.1")?;
    let zlib_file = host_zlib
        .file_name()
        .and_then(|name| name.to_str())
        .context("libz.so.1's target has no name")?
        .to_owned();
    let zlib_version = zlib_file
        .strip_prefix("libz.so.")
        .with_context(|| format!("unexpected zlib file {zlib_file}"))?;
    let zlib_root = dir.path().join(format!("zlib-staging/zlib-{zlib_version}"));
    fs_err::create_dir_all(zlib_root.join("lib"))?;
    fs_err::copy(&host_zlib, zlib_root.join("lib").join(&zlib_file))?;
    symlink(Path::new(&zlib_file), &zlib_root.join("lib/libz.so.1"))?;
    let zlib = nix.add(&zlib_root)?;

    // 1. The FOD: uv itself, from the index, with the hash it first reports, two threads, and
    // `--check` with one.
    let (fod, _) = networked_fod(&nix, |threads, attributes| {
        uv_sync_fod(&harness, &python, &uv_inputs, threads, attributes)
    })?;
    let shebang = fs_err::read_to_string(fod.join("bin/markdown_py"))?;
    assert!(
        shebang.starts_with(&format!("#!{built_text}/bin/python\n")),
        "{shebang}"
    );

    // 2. The main derivation, with the interpreter and zlib as its inputs and no hand repair.
    let inputs = [python.clone(), zlib.clone()];
    // A fresh derivation each run (the FOD's output is the same every time), so it is built
    // and its log can be read.
    let build = nix.build_logged(&venv_main_derivation(
        &harness,
        &inputs,
        &fod,
        &format!("testRun = {};", nix_string(&unique_marker())),
    )?)?;
    let out = &build.out;
    let log = &build.stderr;
    let out_text = path_str(out)?;
    for expected in [
        "storepatchRestore: storepatch restore of ",
        "autoPatchelf: storepatch relink of ",
    ] {
        assert!(
            log.contains(expected),
            "{expected:?} not in the log:\n{log}"
        );
    }

    // Every package imports and the prefix is the output, with no help from the environment.
    let run_clean = |program: &Path, args: &[&str]| -> Result<String> {
        let output = run_ok(
            Command::new(program)
                .args(args)
                .env_clear()
                .env("PATH", "/usr/bin:/bin")
                .env("PYTHONNOUSERSITE", "1")
                .env("LD_LIBRARY_PATH", ""),
        )?;
        Ok(String::from_utf8(output.stdout)?)
    };
    assert_eq!(
        run_clean(
            &out.join("bin/python"),
            &[
                "-c",
                "import sys, lxml.etree, cryptography.hazmat.bindings._rust, pydantic_core, \
                 psycopg, psycopg_binary, yaml, markdown, pygments; print(sys.prefix); \
                 print(psycopg.pq.__impl__)"
            ]
        )?,
        format!("{out_text}\nbinary\n")
    );
    // Every console script runs, through its restored shebang.
    let mut scripts = Vec::new();
    for entry in fs_err::read_dir(out.join("bin"))? {
        let path = entry?.path();
        let text = fs_err::read(&path)?;
        if text.starts_with(b"#!") && !path.to_string_lossy().contains("activate") {
            assert!(
                text.starts_with(format!("#!{out_text}/bin/python\n").as_bytes()),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&text[..text.len().min(200)])
            );
            scripts.push(path);
        }
    }
    scripts.sort();
    let names: Vec<String> = scripts
        .iter()
        .filter_map(|path| path.file_name()?.to_str().map(str::to_owned))
        .collect();
    assert_eq!(
        names,
        ["cffi-gen-src", "markdown_py", "pygmentize"],
        "{names:?}"
    );
    assert!(
        run_clean(&out.join("bin/cffi-gen-src"), &["--help"])?.starts_with("usage: cffi-gen-src"),
        "cffi-gen-src --help"
    );
    assert!(
        run_clean(
            &out.join("bin/markdown_py"),
            &[path_str(&out.join("pyvenv.cfg"))?]
        )?
        .contains("home = "),
        "markdown_py"
    );
    assert!(
        run_clean(&out.join("bin/pygmentize"), &["-V"])?.starts_with("Pygments version "),
        "pygmentize -V"
    );

    let pyvenv = fs_err::read_to_string(out.join("pyvenv.cfg"))?;
    assert!(
        pyvenv.contains(&format!("home = {}/bin\n", path_str(&python)?)),
        "{pyvenv}"
    );

    // Nix records exactly the interpreter, zlib (now in the RUNPATH of psycopg-binary's
    // libcrypto and libssl) and the output itself: the wheels bundle their other libraries
    // (`$ORIGIN`-relative), and the host's glibc is not a store path.
    let libcrypto_runpath = run_ok(
        Command::new("patchelf").arg("--print-rpath").arg(
            fs_err::read_dir(out.join("lib/python3.11/site-packages/psycopg_binary.libs"))?
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .find(|path| path.to_string_lossy().contains("/libcrypto-"))
                .context("no bundled libcrypto")?,
        ),
    )?;
    assert!(
        String::from_utf8(libcrypto_runpath.stdout)?.contains(&format!("{}/lib", path_str(&zlib)?)),
        "libcrypto's run path does not name zlib"
    );
    let mut expected = vec![python.clone(), zlib.clone(), out.clone()];
    expected.sort();
    assert_eq!(nix.references(out)?, expected, "{log}");

    // Nothing names uv's location any more, the byte-compiled files' code objects included;
    // storepatch's audit finds the venv healthy.
    let grep = run(Command::new("grep").arg("-rlF").arg(&built_text).arg(out))?;
    assert_eq!(String::from_utf8(grep.stdout)?, "");
    // The interpreter finds the output in every code object and imports the (hash-based)
    // bytecode as it is; every RECORD line matches its file, the relocated scripts' included
    // (but the ELF files', which patchELF and the relink hook change after the restore).
    let python_out = out.join("bin/python");
    crate::restore::assert_code_filenames(&python_out, out, out)?;
    crate::restore::assert_imports_from_bytecode(
        &python_out,
        "markdown",
        &out.join("lib/python3.11/site-packages/markdown/__pycache__/__init__.cpython-311.pyc"),
    )?;
    crate::restore::assert_records_match_except_elf(&python_out, out)?;
    let audit = run_ok(storepatch().arg("audit").arg(out))?;
    let audit_text = format!(
        "{}{}",
        String::from_utf8_lossy(&audit.stdout),
        String::from_utf8_lossy(&audit.stderr)
    );
    assert!(
        audit_text.contains("healthy: 0 problems") && audit_text.contains(" and 0 scrubbed "),
        "{audit_text}"
    );
    Ok(())
}

/// Every entry below `dir`, symlinks included (not followed).
fn walk_all(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries = Vec::new();
    for entry in fs_err::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            entries.extend(walk_all(&path)?);
        }
        entries.push(path);
    }
    Ok(entries)
}
