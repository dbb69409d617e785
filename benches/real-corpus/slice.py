#!/usr/bin/env python3
"""Copies a slice of a tree of about BYTES bytes: its regular files in sorted path order until
the sum of their sizes reaches BYTES, keeping their relative paths (symlinks are left out). The
cliff benchmark scans such a slice of the real venv next to an input of the same size.

usage: slice.py TREE OUT BYTES
"""

import shutil
import sys
from pathlib import Path


def main():
    tree, out, limit = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    shutil.rmtree(out, ignore_errors=True)
    total = 0
    for path in sorted(p for p in tree.rglob("*") if p.is_file() and not p.is_symlink()):
        if total >= limit:
            break
        target = out / path.relative_to(tree)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
        total += path.stat().st_size
    print(f"slice.py: {out}: {total} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
