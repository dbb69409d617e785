#!/usr/bin/env python3
"""Prints the run path directories of every ELF file in a tree, one line per file, so that two
relinked copies of a tree can be compared (benches/real.sh compares storepatch relink's result
with auto-patchelf.py's).

usage: runpaths.py TREE

Each line is `RELATIVE PATH<TAB>DIR:DIR...`, sorted by path. The run path is DT_RUNPATH, else
DT_RPATH, as readelf prints it; `$ORIGIN` is expanded to the file's directory and every directory
normalised, and directories inside TREE are written as `<tree>/RELATIVE`, so that a kept
`$ORIGIN/../x.libs` and an absolute path to the same directory compare equal.
"""

import os
import re
import subprocess
import sys
from pathlib import Path


def main():
    tree = Path(sys.argv[1]).resolve()
    for path in sorted(p for p in tree.rglob("*") if p.is_file() and not p.is_symlink()):
        with open(path, "rb") as handle:
            if handle.read(4) != b"\x7fELF":
                continue
        dynamic = subprocess.run(
            ["readelf", "-d", "-W", str(path)], capture_output=True, text=True, check=False
        ).stdout
        found = re.search(r"\((?:RUNPATH|RPATH)\)\s+Library (?:runpath|rpath): \[(.*)\]", dynamic)
        dirs = []
        for entry in (found.group(1).split(":") if found else []):
            entry = entry.replace("${ORIGIN}", "$ORIGIN").replace("$ORIGIN", str(path.parent))
            entry = os.path.realpath(entry) if os.path.exists(entry) else os.path.normpath(entry)
            if entry == str(tree) or entry.startswith(str(tree) + "/"):
                entry = "<tree>" + entry[len(str(tree)):]
            dirs.append(entry)
        print(f"{path.relative_to(tree)}\t{':'.join(dirs)}")


if __name__ == "__main__":
    main()
