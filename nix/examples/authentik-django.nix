# Example: the main (normal) derivation that turns the scrubbed dependency tree of
# python-deps.nix into a working virtualenv, with the relink hook instead of autoPatchelfHook.
#
# No hand-written repair: the restore hook (a fixupOutputHook, so before patchShebangs and
# patchELF) gives every scrubbed `/nix/store/eeee...-NAME` whose NAME belongs to exactly one input
# (python312, the libraries below) its hash back: `bin/python`, `home =` in pyvenv.cfg, RUNPATHs.
# It also relocates the venv from where the FOD built it (read from bin/activate) to $out, so
# console-script shebangs and activate scripts name $out. Then the relink hook (postFixup)
# resolves every NEEDED library against the library directories of buildInputs.
#
#   authentik-django = pkgs.callPackage ./nix/examples/authentik-django.nix {
#     storepatch = pkgs.callPackage ./nix/package.nix { };
#     pythonDeps = <the derivation from python-deps.nix>;
#     src = ./.;
#   };
{
  lib,
  stdenv,
  python312,
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
}:

stdenv.mkDerivation {
  pname = "authentik-django";
  version = "0";
  inherit src;

  nativeBuildInputs = [
    # `storepatch restore --candidates-from-env` on every output, early in fixup.
    storepatch.restoreHook
    # Replaces autoPatchelfHook: runs `storepatch relink` on every output in postFixup.
    storepatch.relinkHook
  ];

  # Every package here contributes its lib/ to the library search path (in this order), exactly
  # as with autoPatchelfHook.
  buildInputs = [
    # The interpreter the FOD's venv was made with: the restore hook finds it here by name.
    python312
    libxml2
    libxslt
    xmlsec
    openssl
    krb5
    libpq
    zlib
    libffi
  ];

  dontConfigure = true;
  dontBuild = true;

  installPhase = ''
    runHook preInstall

    mkdir -p "$out"
    cp -r ${pythonDeps}/. "$out/"
    chmod -R u+w "$out"

    # The project itself.
    mkdir -p "$out/src"
    cp -r ./authentik ./lifecycle ./manage.py "$out/src/"

    runHook postInstall
  '';

  # --- restore hook knobs --------------------------------------------------------------------

  # More OLD=NEW relocations for text files (the venv's own build location is found by itself).
  #   storepatchRelocate = [ "/build/source=${placeholder "out"}/src" ];
  # Set to true to skip the automatic restore.
  dontStorepatchRestore = false;

  # --- relink hook knobs (same names as autoPatchelfHook) ----------------------------------

  # Sonames that may stay unresolved (glob patterns). `true` (or "*") accepts every missing
  # library, which hides real problems: list them instead.
  autoPatchelfIgnoreMissingDeps = [
    # Provided by the graphics driver at run time, never by a package.
    "libcuda.so.1"
  ];

  # Packages whose lib/ is added to every RUNPATH: for libraries that are only dlopen()ed and so
  # never appear as NEEDED (e.g. libgssapi from krb5, loaded by libpq's GSSAPI support).
  runtimeDependencies = [ (lib.getLib krb5) ];

  # Directories appended to every RUNPATH as they are (nothing is checked there).
  appendRunpaths = [ "/run/opengl-driver/lib" ];

  # Extra flags for `storepatch relink` (see `storepatch relink --help`).
  autoPatchelfFlags = [ ];

  # Set to true to skip the automatic run (call `autoPatchelf DIR...` yourself, e.g. in
  # postFixup, to patch only part of the tree).
  dontAutoPatchelf = false;

  # More library directories outside the outputs and buildInputs, searched recursively (or,
  # with --no-recurse, just the directory itself), e.g. a vendor SDK. The outputs themselves are
  # always indexed first, so wheel-vendored libraries (`pillow.libs/`) need nothing here.
  #   preFixup = ''
  #     addAutoPatchelfSearchPath ${someVendorSdk}/lib64
  #   '';

  # Nothing may point back into the FOD or at the build-time tools.
  disallowedReferences = [ pythonDeps ];

  meta = {
    description = "authentik's Django application with its Python dependencies";
    platforms = lib.platforms.linux;
  };
}
