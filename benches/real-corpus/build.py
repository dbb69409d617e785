#!/usr/bin/env python3
"""Builds the real benchmark corpus: authentik's dependency set installed from PyPI by uv into a
venv for Debian's python3.11, made to look like the output of a Nix fixed-output derivation.

usage: build.py [--cache DIR] [--print-dir]

Everything lands in one directory under the cache (default `$STOREPATCH_BENCH_CACHE`, else
`~/.cache/storepatch-bench`), named after a hash of pylock.toml and this script, so a changed lock
or recipe builds a new corpus and an unchanged one is reused. `--print-dir` prints that directory
and exits (status 1 when it is not built yet). benches/README.md ("Real corpus") says what is
built.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
LOCK = HERE / "pylock.toml"
PYTHON = Path("/usr/bin/python3.11")
STORE = "/nix/store"
ALPHABET = "0123456789abcdfghijklmnpqrsvwxyz"
# authentik builds these from source (pyproject.toml, [tool.uv] no-binary-package); psycopg-c and
# gssapi have no wheel for Linux at all.
FROM_SOURCE = ["xmlsec", "psycopg-c", "gssapi"]
# The Nix packages the source builds link against (authentik-django.nix's buildInputs), named
# after the Debian packages that hold the same libraries on this machine.
NIX_NAMES = {
    "libc6": "glibc",
    "libgcc-s1": "gcc-lib",
    "libstdc++6": "gcc-lib",
    "libxml2": "libxml2",
    "libxslt1.1": "libxslt",
    "libxmlsec1": "xmlsec",
    "libxmlsec1-openssl": "xmlsec",
    "libssl3": "openssl",
    "libkrb5-3": "krb5",
    "libgssapi-krb5-2": "krb5",
    "libk5crypto3": "krb5",
    "libkrb5support0": "krb5",
    "libcom-err2": "krb5",
    "libpq5": "libpq",
    "zlib1g": "zlib",
    "libffi8": "libffi",
    "libltdl7": "libtool-lib",
}
# glibc's libraries: in the fake glibc package, and left to the dynamic linker by both relinkers.
GLIBC_SONAMES = {
    "libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1", "libutil.so.1",
    "libresolv.so.2", "libnsl.so.1", "ld-linux-x86-64.so.2", "libanl.so.1",
}
LINK_DIRS = ["libxml2", "libxslt", "xmlsec", "openssl", "krb5", "libpq", "zlib", "libffi"]


def store_hash(name):
    """A fixed, valid-looking 32-character hash part for a fake store path NAME."""
    digest = hashlib.sha256(b"storepatch-bench:" + name.encode()).digest()
    return "".join(ALPHABET[byte % 32] for byte in digest)


def store_name(name):
    return f"{store_hash(name)}-{name}"


def corpus_dir(cache):
    key = hashlib.sha256(LOCK.read_bytes() + Path(__file__).read_bytes()).hexdigest()[:12]
    return cache / f"real-{key}"


def run(*args, **kwargs):
    print("+", " ".join(str(a) for a in args), file=sys.stderr, flush=True)
    return subprocess.run([str(a) for a in args], check=True, **kwargs)


def is_elf(path):
    with open(path, "rb") as handle:
        return handle.read(4) == b"\x7fELF"


def dynamic(path):
    """(NEEDED sonames, RUNPATH) of an ELF file, from readelf."""
    output = subprocess.run(
        ["readelf", "-d", "-W", str(path)], capture_output=True, text=True, check=False
    ).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.*)\]", output)
    runpath = re.search(r"\((?:RUNPATH|RPATH)\)\s+Library (?:runpath|rpath): \[(.*)\]", output)
    return needed, runpath.group(1) if runpath else None


def debian_version(package):
    version = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", package],
        capture_output=True, text=True, check=True,
    ).stdout
    version = version.split(":", 1)[-1]
    version = version.rsplit("-", 1)[0] if "-" in version else version
    return re.sub(r"[+~.](dfsg|ds|repack).*$", "", version)


def system_library(soname):
    """The real file behind SONAME in the system library dirs, and its Debian package."""
    for directory in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64"):
        candidate = Path(directory) / soname
        if candidate.exists():
            owner = subprocess.run(
                ["dpkg", "-S", str(candidate)], capture_output=True, text=True, check=False
            ).stdout
            if not owner:
                owner = subprocess.run(
                    ["dpkg", "-S", str(candidate.resolve())],
                    capture_output=True, text=True, check=False,
                ).stdout
            package = owner.split(":", 1)[0] if owner else "unknown"
            return candidate.resolve(), package
    return None, None


# The Debian package whose version a Nix package gets (krb5's com_err comes from e2fsprogs).
VERSION_OF = {
    "glibc": "libc6", "gcc-lib": "libgcc-s1", "libxml2": "libxml2", "libxslt": "libxslt1.1",
    "xmlsec": "libxmlsec1", "openssl": "libssl3", "krb5": "libkrb5-3", "libpq": "libpq5",
    "zlib": "zlib1g", "libffi": "libffi8",
}


def nix_package(debian_package):
    name = NIX_NAMES.get(debian_package, debian_package)
    return f"{name}-{debian_version(VERSION_OF.get(name, debian_package))}"


def fake_store_lib_dirs(store):
    """The lib dirs of the fake store's packages that source builds link against."""
    return [f"{store}/{store_name(nix_package(VERSION_OF[name]))}/lib" for name in LINK_DIRS]


def rewrite_text(path, old, new):
    """Replaces OLD with NEW in PATH if it is a text file holding OLD; True if it changed."""
    data = path.read_bytes()
    if old not in data or b"\0" in data[:8192]:
        return False
    path.write_bytes(data.replace(old, new))
    return True


def record_hash(data):
    import base64

    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def fix_records(site_packages, changed):
    """Updates the RECORD entries (hash, size) of the files in CHANGED, as a real install has them."""
    for record in site_packages.glob("*.dist-info/RECORD"):
        lines = record.read_text().splitlines()
        out = []
        dirty = False
        for line in lines:
            name, _, rest = line.partition(",")
            target = (site_packages / name).resolve()
            if rest and target in changed:
                data = target.read_bytes()
                line = f"{name},{record_hash(data)},{len(data)}"
                dirty = True
            out.append(line)
        if dirty:
            record.write_text("\n".join(out) + "\n")


def build(final, cache):
    staging = final.with_name(final.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    tree = staging / "tree"
    fake_store = staging / "store"
    fake_store.mkdir()
    out_path = f"{STORE}/{store_name('authentik-deps')}"
    python_name = store_name(f"python3-{debian_version('python3.11')}")
    python_store = f"{STORE}/{python_name}"

    # The source of a local package (its sdist, unpacked as Nix's fetchurl + unpack would give it),
    # so that its direct_url.json names a store path as in a Nix build.
    source_name = store_name("opencontainers-0.0.15-source")
    env = dict(os.environ)
    env["UV_CACHE_DIR"] = str(cache / "uv")
    env.pop("UV_COMPILE_BYTECODE", None)
    env["UV_NO_PROGRESS"] = "1"
    # Real copies: uv hard-links files from its cache by default, and the tree is edited below
    # (an FOD's output shares no inodes with anything either).
    env["UV_LINK_MODE"] = "copy"
    # The source builds link with the fake store's lib dirs as run paths (as Nix's ld-wrapper adds
    # every buildInput's lib dir); after the build each run path is cut to the dirs that hold a
    # NEEDED library, as the fixup's patchelf --shrink-rpath does.
    link_dirs = fake_store_lib_dirs(STORE)
    env["LDFLAGS"] = "-Wl,--enable-new-dtags -Wl,-rpath," + ":".join(link_dirs)

    run("uv", "venv", "--quiet", "--python", PYTHON, tree, env=env)
    run("uv", "pip", "install", "--quiet", "--python", tree / "bin" / "python",
        "--no-binary", "xmlsec", "-r", LOCK, env=env)

    # opencontainers again, from its unpacked sdist in the fake store (a local install).
    sdist = next(p for p in tomllib.loads(LOCK.read_text())["packages"]
                 if p["name"] == "opencontainers")["sdist"]
    archive = cache / "sdists" / sdist["url"].rsplit("/", 1)[1]
    if not archive.exists() or hashlib.sha256(archive.read_bytes()).hexdigest() != sdist["hashes"]["sha256"]:
        archive.parent.mkdir(parents=True, exist_ok=True)
        run("python3", "-c", "import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])",
            sdist["url"], archive)
        if hashlib.sha256(archive.read_bytes()).hexdigest() != sdist["hashes"]["sha256"]:
            sys.exit(f"build.py: {archive}: sha256 does not match pylock.toml")
    unpack = staging / "unpack"
    unpack.mkdir()
    shutil.unpack_archive(archive, unpack)
    (source_dir,) = list(unpack.iterdir())
    source_dir.rename(fake_store / source_name)
    unpack.rmdir()
    run("uv", "pip", "install", "--quiet", "--python", tree / "bin" / "python", "--no-deps",
        "--reinstall-package", "opencontainers", fake_store / source_name, env=env)

    site_packages = tree / "lib" / "python3.11" / "site-packages"
    # The fake store: every library an ELF file of the tree needs that the tree does not bundle,
    # copied from this machine into a store-like package dir named after its Nix package.
    elf_files = sorted(p for p in tree.rglob("*") if p.is_file() and not p.is_symlink() and is_elf(p))
    bundled = {p.name for p in elf_files}
    sonames = set()
    dynamic_of = {}
    for path in elf_files:
        needed, runpath = dynamic(path)
        dynamic_of[path] = (needed, runpath)
        sonames.update(n for n in needed if n not in bundled)
    soname_dir = {}
    for soname in sorted(sonames | {"ld-linux-x86-64.so.2"}):
        real, package = system_library(soname)
        if real is None:
            sys.exit(f"build.py: no system library {soname} (needed in the tree)")
        package_dir = fake_store / store_name(nix_package(package)) / "lib"
        package_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(real, package_dir / soname)
        soname_dir[soname] = f"{STORE}/{package_dir.parent.name}/lib"
    for directory in link_dirs:
        (fake_store / Path(directory).relative_to(STORE)).mkdir(parents=True, exist_ok=True)
    glibc = next(d for d in fake_store.iterdir() if d.name.split("-", 1)[1].startswith("glibc-"))

    # Shrink the source builds' run paths to the store dirs that hold a NEEDED library.
    for path, (needed, runpath) in dynamic_of.items():
        if runpath and runpath.startswith(STORE):
            dirs = []
            for soname in needed:
                directory = soname_dir.get(soname)
                if directory and soname not in GLIBC_SONAMES and directory not in dirs:
                    dirs.append(directory)
            if dirs:
                run("patchelf", "--set-rpath", ":".join(dirs), path)
            else:
                run("patchelf", "--remove-rpath", path)

    # Make it the FOD's output: the venv's path becomes $out wherever uv wrote it (console script
    # shebangs, activate scripts), bin/python points into the store, pyvenv.cfg's home too.
    changed = set()
    old = str(tree).encode()
    for path in sorted(tree.rglob("*")):
        if path.is_file() and not path.is_symlink() and not is_elf(path):
            if rewrite_text(path, old, out_path.encode()):
                changed.add(path.resolve())
    local_store = str(fake_store).encode()
    for path in sorted(site_packages.glob("*.dist-info/direct_url.json")):
        if rewrite_text(path, local_store, STORE.encode()):
            changed.add(path.resolve())
    fix_records(site_packages, changed)
    cfg = tree / "pyvenv.cfg"
    cfg.write_text(re.sub(r"(?m)^home = .*$", f"home = {python_store}/bin", cfg.read_text()))
    (tree / "bin" / "python").unlink()
    (tree / "bin" / "python").symlink_to(f"{python_store}/bin/python3.11")
    python_dir = fake_store / python_name / "bin"
    python_dir.mkdir(parents=True)
    (python_dir / "python3.11").symlink_to(PYTHON)

    # Bytecode with $out in co_filename, as UV_COMPILE_BYTECODE writes it when uv runs in $out.
    run(PYTHON, "-m", "compileall", "-q", "-j", "0", "-s", tree, "-p", out_path, site_packages,
        stdout=subprocess.DEVNULL)

    # What relink and auto-patchelf.py need: the dynamic linker and libc's dir as Nix's bintools
    # wrapper names them.
    support = staging / "bintools" / "nix-support"
    support.mkdir(parents=True)
    glibc_final = final / glibc.relative_to(staging)
    (support / "dynamic-linker").write_text(f"{glibc_final}/lib/ld-linux-x86-64.so.2\n")
    (support / "orig-libc").write_text(f"{glibc_final}\n")
    entries = sorted(d.name for d in fake_store.iterdir())
    (staging / "candidates.txt").write_text(
        "".join(f"{STORE}/{name}\n" for name in entries + [out_path.rsplit('/', 1)[1]])
    )
    (staging / "library-dirs.txt").write_text(
        "".join(f"{fake_store}/{name}/lib\n".replace(str(staging), str(final))
                for name in entries if (fake_store / name / "lib").is_dir())
    )

    files = [p for p in tree.rglob("*") if p.is_file() and not p.is_symlink()]
    summary = {
        "out": out_path,
        "python": python_store,
        "distributions": len(list(site_packages.glob("*.dist-info"))),
        "files": len(files),
        "entries": sum(1 for _ in tree.rglob("*")),
        "bytes": sum(p.stat().st_size for p in files),
        "elf": sum(1 for p in files if is_elf(p)),
        "pyc": sum(1 for p in files if p.suffix == ".pyc"),
        "elf_with_store_runpath": sum(1 for _, r in dynamic_of.values() if r and r.startswith(STORE)),
        "fake_store_entries": entries,
    }
    (staging / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    return summary


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_cache = os.environ.get("STOREPATCH_BENCH_CACHE") or Path.home() / ".cache" / "storepatch-bench"
    parser.add_argument("--cache", type=Path, default=Path(default_cache))
    parser.add_argument("--print-dir", action="store_true")
    args = parser.parse_args()
    cache = args.cache.resolve()
    final = corpus_dir(cache)
    if args.print_dir:
        print(final)
        sys.exit(0 if (final / "summary.json").exists() else 1)
    for tool in ("uv", "readelf", "patchelf", "gcc", "dpkg-query", "krb5-config", "pg_config",
                 "xmlsec1-config"):
        if shutil.which(tool) is None:
            sys.exit(f"build.py: {tool} is required (Debian: apt-get install uv/binutils/gcc, "
                     "libkrb5-dev libpq-dev libxmlsec1-dev for the source builds)")
    if not PYTHON.exists():
        sys.exit(f"build.py: {PYTHON} is required (Debian's python3.11 with python3.11-dev)")
    if (final / "summary.json").exists():
        print(final)
        return
    summary = build(final, cache)
    print(json.dumps({k: v for k, v in summary.items() if k != "fake_store_entries"}), file=sys.stderr)
    print(final)


if __name__ == "__main__":
    main()
