# Example: authentik's Django application, from the scrubbed dependency tree of python-deps.nix,
# with storepatch's restore and relink hooks (the relink hook instead of autoPatchelfHook).
#
# This is the "final-image" stage of authentik's Dockerfile: the virtualenv, the in-tree
# workspace packages (packages/*), and the application (authentik/, lifecycle/, manage.py,
# blueprints, schemas, locale).
#
# - storepatch.restoreHook (`storepatch restore`, see nix/hooks/storepatch-restore-hook.sh) puts
#   the virtualenv's scrubbed text references back: `bin/python*` symlinks, `home =` in
#   pyvenv.cfg, console script shebangs. Nothing is repaired by hand here.
# - storepatch.relinkHook resolves every NEEDED library against the library directories of
#   buildInputs and, where a scrubbed RUNPATH entry (`/nix/store/eeee...-libxml2-2.13.8/lib`)
#   names exactly one supplied package, restores it in place. It runs before stdenv's patchELF
#   shrinks run paths, and again in postFixup like autoPatchelfHook.
#
#   authentik-django = pkgs.callPackage ./nix/examples/authentik-django.nix {
#     storepatch = pkgs.callPackage ./nix/package.nix { };
#     pythonDeps = <the derivation from python-deps.nix>;
#     src = ./.;
#   };
{
  lib,
  stdenv,
  python313,
  storepatch,
  pythonDeps,
  src,
  libxml2,
  libxslt,
  xmlsec,
  openssl,
  krb5,
  libpq,
  zlib,
  libffi,
  libtool,
  libmaxminddb,
}:

let
  python = python313;
  sitePackages = "$out/lib/${python.libPrefix}/site-packages";
in
stdenv.mkDerivation {
  pname = "authentik-django";
  version = "0";
  inherit src;

  nativeBuildInputs = [
    storepatch.restoreHook
    storepatch.relinkHook
  ];

  # What the compiled extensions load at run time (authentik's image installs libpq5,
  # libmaxminddb0, libkrb5-3 and the kadm5 libraries, libltdl7, libxslt1.1), each contributing
  # its lib/ to the library search path in this order, as with autoPatchelfHook.
  buildInputs = [
    python
    libxml2
    libxslt
    xmlsec
    openssl
    krb5
    libpq
    zlib
    libffi
    libtool
    libmaxminddb
  ];

  dontConfigure = true;
  dontBuild = true;

  installPhase = ''
    runHook preInstall

    mkdir -p "$out"
    cp -r ${pythonDeps}/. "$out/"
    chmod -R u+w "$out"

    # The application, laid out as in authentik's image (its working directory is the root).
    mkdir -p "$out/share/authentik"
    cp -r authentik lifecycle manage.py blueprints schemas locale packages \
      "$out/share/authentik/"

    # The application and the in-tree workspace packages (flat layout, pure Python) on sys.path.
    {
      echo "$out/share/authentik"
      for package in "$out"/share/authentik/packages/*/; do
        if [ -f "$package/pyproject.toml" ]; then echo "''${package%/}"; fi
      done
    } > "${sitePackages}/authentik.pth"

    runHook postInstall
  '';

  # Byte-compile here, not in the FOD (see python-deps.nix), once the tree is final: after the
  # restore, so the recorded source paths are the real ones.
  postFixup = ''
    ${python.interpreter} -m compileall -q -j "$NIX_BUILD_CORES" \
      "${sitePackages}" "$out/share/authentik" >/dev/null
  '';

  # --- restore hook knobs --------------------------------------------------------------------

  # More OLD=NEW relocations for text files (the venv's own build location is found by itself).
  #   storepatchRelocate = [ "/build/source=${placeholder "out"}/share/authentik" ];
  # Set to true to skip the automatic restore.
  dontStorepatchRestore = false;

  # --- relink hook knobs (same names as autoPatchelfHook) ----------------------------------

  # Every library the extensions need is in buildInputs: nothing may stay unresolved.
  autoPatchelfIgnoreMissingDeps = [ ];

  # libpq loads krb5's GSSAPI library with dlopen() only: it never appears as NEEDED.
  runtimeDependencies = [ (lib.getLib krb5) ];

  # --- checks ------------------------------------------------------------------------------

  doInstallCheck = true;
  installCheckPhase = ''
    runHook preInstallCheck
    export HOME="$TMPDIR"
    # The venv's own interpreter, as the image runs it; every compiled extension loads.
    "$out/bin/python" -c '
    import lxml.etree, xmlsec, psycopg, cryptography.hazmat.bindings._rust, kadmin, maxminddb
    import guardian, akql, channels_postgres
    import authentik
    print("authentik", authentik.__version__)
    '
    runHook postInstallCheck
  '';

  # Nothing may point back into the FOD.
  disallowedReferences = [ pythonDeps ];

  meta = {
    description = "authentik's Django application with its Python dependencies";
    platforms = lib.platforms.linux;
  };
}
