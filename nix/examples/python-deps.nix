# Example: the Python dependencies of authentik as a fixed-output derivation.
#
# This is the "python-deps" stage of authentik's Dockerfile: `uv sync --frozen
# --no-install-project --no-dev` with the lock file, with the same packages built from source
# (UV_NO_BINARY_PACKAGE) and the same build tools. `--no-install-workspace` also leaves out the
# in-tree workspace packages (packages/*); like the project itself they are source, not
# downloads, and authentik-django.nix installs them.
#
# `uv sync` needs the network, so it can only run in a fixed-output derivation (FOD), and an FOD
# must not refer to any store path. But a virtualenv is full of them: the interpreter in every
# shebang, `home =` in pyvenv.cfg, `bin/python` symlinks, RUNPATHs of the extensions built from
# source against libxml2, libxslt, xmlsec, openssl, krb5. The scrub hook rewrites the hash part of
# every such reference to `eeee...` (same length) as the very last phase. authentik-django.nix
# puts the real paths back.
#
#   deps = pkgs.callPackage ./nix/examples/python-deps.nix {
#     storepatch = pkgs.callPackage ./nix/package.nix { };
#     src = ./.;               # an authentik checkout
#     hash = "sha256-...";     # start with lib.fakeHash; the first build prints the real one
#   };
#
# When is the result right? Not when nix-build exits 0: with Nix 2.8 an FOD whose output still
# refers to store paths is registered under another path. Check that the printed path is valid
# and that `nix-store -q --references` prints nothing.
{
  lib,
  stdenv,
  uv,
  python313,
  cacert,
  git,
  pkg-config,
  rustc,
  cargo,
  clang,
  libffi,
  libxml2,
  libxslt,
  zlib,
  libpq,
  krb5,
  xmlsec,
  openssl,
  libtool,
  storepatch,
  src,
  hash ? lib.fakeHash,
}:

stdenv.mkDerivation {
  pname = "authentik-python-deps";
  version = "0";

  # Only what `uv sync --no-install-project --no-install-workspace` reads: the lock file and the
  # project and workspace metadata. A narrower src keeps the hash stable while the code changes.
  src = lib.fileset.toSource {
    root = src;
    fileset = lib.fileset.unions [
      (src + "/pyproject.toml")
      (src + "/uv.lock")
      (lib.fileset.fileFilter (file: file.name == "pyproject.toml") (src + "/packages"))
    ];
  };

  nativeBuildInputs = [
    uv
    python313
    cacert
    git
    pkg-config
    # python-kadmin-rs is a Rust extension; its bindgen needs clang.
    rustc
    cargo
    clang
    # Scrubs every output as the last phase; see nix/hooks/storepatch-scrub-hook.sh.
    storepatch.scrubHook
  ];

  # What the packages built from source link against (authentik's Dockerfile installs the same
  # -dev packages): lxml (libxml2, libxslt, zlib), xmlsec (xmlsec, libtool's libltdl, openssl),
  # psycopg (libpq), python-kadmin-rs (krb5), cffi (libffi), cryptography (openssl).
  buildInputs = [
    libffi
    libxml2
    libxslt
    zlib
    libpq
    krb5
    xmlsec
    openssl
    libtool
  ];

  # The fixed-output part: the result is identified by its content alone.
  outputHashMode = "recursive";
  outputHashAlgo = "sha256";
  outputHash = hash;

  env = {
    # Use the interpreter from nixpkgs; never let uv download one.
    UV_PYTHON = python313.interpreter;
    UV_PYTHON_DOWNLOADS = "never";
    # Real copies, not hard links into a cache that is gone after the build.
    UV_LINK_MODE = "copy";
    UV_NO_CACHE = "1";
    # As authentik builds them.
    UV_NO_BINARY_PACKAGE = "cryptography lxml python-kadmin-rs xmlsec";
    # Byte-compiled files record source paths and would make the hash depend on them; the main
    # derivation compiles instead (authentik's image sets UV_COMPILE_BYTECODE=1 at this step).
    UV_COMPILE_BYTECODE = "0";
    SSL_CERT_FILE = "${cacert}/etc/ssl/certs/ca-bundle.crt";
  };

  dontConfigure = true;

  buildPhase = ''
    runHook preBuild
    uv sync --frozen --no-install-project --no-install-workspace --no-dev
    runHook postBuild
  '';

  installPhase = ''
    runHook preInstall
    cp -r .venv "$out"
    runHook postInstall
  '';

  # --- scrub hook knobs -------------------------------------------------------------------

  # Set to true to see what Nix would reject.
  dontScrubStoreRefs = false;

  # Store paths that may stay: none in an FOD.
  scrubKeepRefs = [ ];

  # Extra flags for `storepatch scrub`. The output is identical for any thread count, so this
  # cannot change the hash.
  scrubFlags = [
    "--threads"
    "4"
  ];

  # The hook already turns off patchELF, strip and patchShebangs (their results would tie the
  # hash to the nixpkgs revision's tool versions); set one to false to have it anyway.
  # no-broken-symlinks stays on: it runs before the scrub, on links that still resolve.
}
