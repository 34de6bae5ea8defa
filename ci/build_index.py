#!/usr/bin/env python
"""Rebuild ``model_zoo_index.json`` from ``bundles/`` (names, versions, files with size + sha256, sources).

Usage: ``python ci/build_index.py [--bundles-dir bundles] [--out model_zoo_index.json] [--check]``.
``--check`` writes nothing and exits 1 when the index on disk differs from a rebuild.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from common.zoo.index import (  # noqa: E402
    DEFAULT_BUNDLES_DIR,
    DEFAULT_INDEX_PATH,
    ZooIndexError,
    build_index,
    dumps_index,
    write_index,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundles-dir", type=Path, default=None, help="folder of bundles (default: repo bundles/)")
    parser.add_argument("--out", type=Path, default=DEFAULT_INDEX_PATH, help="index file to write")
    parser.add_argument("--check", action="store_true", help="only compare with the file on disk; exit 1 if stale")
    args = parser.parse_args(argv)
    if args.bundles_dir is None:
        args.bundles_dir = DEFAULT_BUNDLES_DIR  # may not exist yet in a fresh checkout: an empty index
    elif not args.bundles_dir.is_dir():
        print(f"error: {args.bundles_dir}: bundles folder not found: pass --bundles-dir", file=sys.stderr)
        return 1
    try:
        if args.check:
            fresh = dumps_index(build_index(args.bundles_dir))
            current = args.out.read_text(encoding="utf-8") if args.out.is_file() else None
            if current != fresh:
                print(f"error: {args.out} is stale: run python ci/build_index.py", file=sys.stderr)
                return 1
            print(f"{args.out}: up to date")
            return 0
        index = write_index(args.out, args.bundles_dir)
    except (ZooIndexError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    n_files = sum(len(b["files"]) for b in index["bundles"].values())
    print(f"wrote {args.out}: {len(index['bundles'])} bundle(s), {n_files} file(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
