#!/usr/bin/env python
"""Check every bundle against the zoo's bundle contract and the index; one line per broken rule.

Usage: ``python ci/verify_bundles.py [--bundles-dir bundles] [--index model_zoo_index.json] [bundle ...]``.
Prints ``<bundle>: <file>: <rule>: <detail>`` per failure and a summary line; exits 1 on any failure.
The rules are listed in common/zoo/verify.py and docs/verify.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # so that `common.*` targets in the configs resolve

from common.zoo.verify import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
