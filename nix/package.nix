# storepatch, built from this repository with nixpkgs' Rust tooling.
#
#   storepatch = pkgs.callPackage ./nix/package.nix { };
#
# Installs `bin/storepatch` and `bin/patchelf` (a symlink: invoked under that name, storepatch
# accepts patchelf's command line). Two setup hooks ride along in passthru:
#
#   storepatch.scrubHook    for fixed-output derivations: scrub every store reference
#   storepatch.relinkHook   a drop-in replacement for autoPatchelfHook
#
# Needs a nixpkgs whose buildRustPackage takes a function of finalAttrs (25.05 or later) and has
# lib.fileset (23.11 or later).
{
  lib,
  rustPlatform,
  makeSetupHook,
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

  # Build just the binary; the benches crate is a workspace member but not a product.
  cargoBuildFlags = [
    "--package"
    "storepatch"
  ];

  # Unit tests of every crate. The integration tests need gcc, python and the real Nix (they
  # run in CI, see nix/README.md), which a sandboxed build does not have.
  doCheck = true;
  cargoTestFlags = [
    "--workspace"
    "--lib"
    "--bins"
  ];

  postInstall = ''
    ln -s storepatch "$out/bin/patchelf"
  '';

  passthru = {
    # `storepatch scrub` on every output; see nix/hooks/storepatch-scrub-hook.sh.
    scrubHook = makeSetupHook {
      name = "storepatch-scrub-hook";
      substitutions.storepatch = lib.getExe finalAttrs.finalPackage;
    } ./hooks/storepatch-scrub-hook.sh;

    # autoPatchelfHook's interface on top of `storepatch relink`; see
    # nix/hooks/storepatch-relink-hook.sh.
    relinkHook = makeSetupHook {
      name = "storepatch-relink-hook";
      substitutions.storepatch = lib.getExe finalAttrs.finalPackage;
    } ./hooks/storepatch-relink-hook.sh;
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
