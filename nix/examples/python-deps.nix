# Example: the Python dependencies of a project (here authentik) as a fixed-output derivation.
#
# `uv sync` needs the network, so it can only run in a fixed-output derivation (FOD), and an FOD
# must not refer to any store path. But a virtualenv is full of them: the interpreter in every
# shebang, `home =` in pyvenv.cfg, `bin/python` symlinks, RUNPATHs of wheels built from source.
# The scrub hook rewrites the hash part of every such reference to `eeee...` (same length), after
# everything else has run. The main derivation (authentik-django.nix) puts the real paths back.
#
#   deps = pkgs.callPackage ./nix/examples/python-deps.nix {
#     storepatch = pkgs.callPackage ./nix/package.nix { };
#     src = ./.;
#     hash = "sha256-...";   # start with lib.fakeHash; the first build prints the real one
#   };
{
  lib,
  stdenvNoCC,
  uv,
  python312,
  cacert,
  storepatch,
  src,
  hash ? lib.fakeHash,
}:

stdenvNoCC.mkDerivation {
  pname = "authentik-python-deps";
  version = "0";

  # Only the lock file and the project metadata matter to `uv sync --no-install-project`; a
  # narrower src keeps the hash stable while the code changes.
  src = lib.fileset.toSource {
    root = src;
    fileset = lib.fileset.unions [
      (src + "/pyproject.toml")
      (src + "/uv.lock")
    ];
  };

  nativeBuildInputs = [
    uv
    python312
    cacert
    # Registers `storepatch scrub` as a fixup hook for every output.
    storepatch.scrubHook
  ];

  # The fixed-output part: the result is identified by its content alone.
  outputHashMode = "recursive";
  outputHashAlgo = "sha256";
  outputHash = hash;

  env = {
    # Use the interpreter from nixpkgs; never let uv download one.
    UV_PYTHON = python312.interpreter;
    UV_PYTHON_DOWNLOADS = "never";
    # Real copies, not hard links into a cache that is gone after the build.
    UV_LINK_MODE = "copy";
    UV_NO_CACHE = "1";
    # Byte-compiled files embed timestamps and absolute paths; the main derivation compiles.
    UV_COMPILE_BYTECODE = "0";
    SSL_CERT_FILE = "${cacert}/etc/ssl/certs/ca-bundle.crt";
  };

  buildPhase = ''
    runHook preBuild
    uv sync --frozen --no-install-project --no-dev --no-editable
    runHook postBuild
  '';

  installPhase = ''
    runHook preInstall
    cp -r .venv "$out"
    runHook postInstall
  '';

  # --- scrub hook knobs -------------------------------------------------------------------

  # Set to true to see what Nix would reject (the build then fails with
  # "... is not allowed to refer to the following paths" on newer Nix).
  dontScrubStoreRefs = false;

  # Store paths that may stay: none in an FOD. (In a normal derivation, e.g. [ "$out" ]-like
  # self references or a runtime dependency you mean to keep.)
  scrubKeepRefs = [ ];

  # Extra flags for `storepatch scrub`. The output is identical for any thread count, so this
  # cannot change the hash.
  scrubFlags = [
    "--threads"
    "4"
  ];

  # --- stdenv fixup knobs -----------------------------------------------------------------

  # patchShebangs would point scripts at the build-time python: pointless in an FOD, since the
  # scrub hook removes it again. Stripping would make the content depend on the binutils
  # version, and so would the hash.
  dontPatchShebangs = true;
  dontStrip = true;
}
