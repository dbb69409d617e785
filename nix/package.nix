# storepatch, built from this repository with nixpkgs' Rust tooling.
#
#   storepatch = pkgs.callPackage ./nix/package.nix { };
#   storepatch-as-patchelf = pkgs.callPackage ./nix/package.nix { withPatchelfAlias = true; };
#
# Installs `bin/storepatch`, its man pages and its bash, zsh and fish completions. With
# `withPatchelfAlias = true` also `bin/patchelf`, a hard link to the same executable (invoked
# under that name, storepatch accepts patchelf's command line; a hard link, not a symlink, so
# `readlink -f $(command -v patchelf)` still ends in `patchelf`). It is off by default so that
# installing storepatch never shadows the real patchelf in a profile.
#
# Setup hooks in passthru:
#
#   storepatch.scrubHook    for fixed-output derivations: scrub every store reference, last
#   storepatch.relinkHook   a drop-in replacement for autoPatchelfHook (propagates bintools)
#   storepatch.restoreHook  restore a scrubbed virtualenv (`storepatch restore`); reads
#                           hooks/storepatch-restore-hook.sh
#
# Needs a nixpkgs whose rustc is 1.88 or newer (the workspace's rust-version: let chains, and
# proptest for the check phase): nixos-25.11 or later; nixos-25.05 as released has rustc 1.86
# and cannot build it (nix/README.md says what is known of later 25.05 revisions). The
# `finalAttrs` form of buildRustPackage and lib.fileset are older than that.
{
  lib,
  rustPlatform,
  makeSetupHook,
  installShellFiles,
  bintools,
  withPatchelfAlias ? false,
}:

let
  root = ../.;
  workspace = lib.importTOML ../Cargo.toml;
in
rustPlatform.buildRustPackage (finalAttrs: {
  pname = "storepatch";
  inherit (workspace.workspace.package) version;

  # Only what cargo needs: editing nix/, docs or CI scripts must not cause a rebuild.
  src = lib.fileset.toSource {
    inherit root;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../bin
      ../crates
      ../benches
      (lib.fileset.maybeMissing ../testdata)
    ];
  };

  cargoLock.lockFile = ../Cargo.lock;

  nativeBuildInputs = [ installShellFiles ];

  # Build just the binary; the benches crate is a workspace member but not a product.
  cargoBuildFlags = [
    "--package"
    "storepatch"
  ];

  # Unit tests that need nothing outside the build. storepatch-test (fixture builders: gcc,
  # Python headers, nix-store) and the benches are excluded; the integration tests need gcc,
  # Python, patchelf and the real Nix and run in CI (see nix/README.md).
  doCheck = true;
  cargoTestFlags = [
    "--workspace"
    "--exclude"
    "storepatch-test"
    "--exclude"
    "storepatch-benches"
    "--lib"
    "--bins"
  ];

  # The man pages and completions are generated from the command-line definitions and kept in
  # the repository (a test checks they are current), so nothing here runs the binary.
  postInstall = ''
    installManPage bin/storepatch/doc/man/*.1
    installShellCompletion --cmd storepatch \
      --bash bin/storepatch/doc/storepatch.bash \
      --zsh bin/storepatch/doc/storepatch.zsh \
      --fish bin/storepatch/doc/storepatch.fish
  ''
  + lib.optionalString withPatchelfAlias ''
    ln "$out/bin/storepatch" "$out/bin/patchelf"
  '';

  passthru = {
    # `storepatch scrub` on every output as the last phase; see nix/hooks/storepatch-scrub-hook.sh.
    scrubHook = makeSetupHook {
      name = "storepatch-scrub-hook";
      substitutions.storepatch = lib.getExe finalAttrs.finalPackage;
    } ./hooks/storepatch-scrub-hook.sh;

    # autoPatchelfHook's interface on top of `storepatch relink`; see
    # nix/hooks/storepatch-relink-hook.sh. Like autoPatchelfHook it propagates bintools, whose
    # nix-support/dynamic-linker names the interpreter, so it works under stdenvNoCC too.
    relinkHook = makeSetupHook {
      name = "storepatch-relink-hook";
      propagatedBuildInputs = [ bintools ];
      substitutions.storepatch = lib.getExe finalAttrs.finalPackage;
    } ./hooks/storepatch-relink-hook.sh;

    # `storepatch restore` of a scrubbed virtualenv; see nix/hooks/storepatch-restore-hook.sh.
    restoreHook = makeSetupHook {
      name = "storepatch-restore-hook";
      substitutions.storepatch = lib.getExe finalAttrs.finalPackage;
    } ./hooks/storepatch-restore-hook.sh;
  };

  meta = {
    description = "Finds, scrubs and relinks Nix store references in Python virtual environments and ELF files";
    homepage = "https://github.com/storepatch/storepatch";
    license = with lib.licenses; [
      mit
      asl20
    ];
    mainProgram = "storepatch";
    platforms = lib.platforms.linux;
  };
})
