# Example: the main (normal) derivation that turns the scrubbed dependency tree of
# python-deps.nix into a working virtualenv, with the relink hook instead of autoPatchelfHook.
#
# The FOD's RUNPATHs read `/nix/store/eeee...-libxml2-2.13.8/lib`. `storepatch relink` resolves
# every NEEDED library against the library directories of buildInputs and, where a scrubbed entry
# names exactly one supplied package, restores it in place without touching the ELF layout.
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
    # Replaces autoPatchelfHook: runs `storepatch relink` on every output in postFixup.
    storepatch.relinkHook
  ];

  # Every package here contributes its lib/ to the library search path (in this order), exactly
  # as with autoPatchelfHook.
  buildInputs = [
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

    # The virtualenv's interpreter: the FOD's pyvenv.cfg and bin/python point at a scrubbed path.
    rm -f "$out"/bin/python "$out"/bin/python3 "$out"/bin/python3.12
    ln -s ${python312.interpreter} "$out/bin/python"
    ln -s python "$out/bin/python3"
    ln -s python "$out/bin/python3.12"
    sed -i "s|^home = .*|home = ${python312}/bin|" "$out/pyvenv.cfg"

    # The project itself.
    mkdir -p "$out/src"
    cp -r ./authentik ./lifecycle ./manage.py "$out/src/"

    runHook postInstall
  '';

  # Console scripts in bin/ start with `#!/nix/store/eeee...-python3.12/bin/python3.12`, which
  # patchShebangs cannot resolve: point them at the virtualenv's interpreter (a store path, so
  # patchShebangs leaves it alone).
  postInstall = ''
    for script in "$out"/bin/*; do
      if [ ! -L "$script" ] && head -n 1 "$script" | grep -q '^#!.*python'; then
        sed -i "1s|^#!.*|#!$out/bin/python|" "$script"
      fi
    done
  '';

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
