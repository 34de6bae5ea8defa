"""Write docs/reliability.md from tests/reliability_cases.py: run every case as the suite does and record the
line the user sees and whether anything was written. The suite (tests/test_reliability.py) proves each row.

    python ci/reliability_table.py        # about 3 minutes on 2 cores
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

HEADER = """# Reliability: bad and hostile inputs

Every row is a case of `tests/reliability_cases.py`, run by `tests/test_reliability.py` (one parametrized test
per row): the real entry point gets the input in the second column and must answer with one line containing the
expected words, exit non-zero, and write nothing under its output folder (a failing pipeline step keeps the steps
finished before it, marked complete in `provenance.json`; a training run with only corrupt checkpoints keeps
them). The third column is the line the user saw when this table was written (`python ci/reliability_table.py`),
printed as `error: <line>` by the command line. Tracebacks show only with `ZOO_DEBUG=1`.

| case | area | input | the line the user sees | written |
|---|---|---|---|---|
"""


def main() -> int:
    import torch

    from common.data.make import make
    from common.io.writers import write_bytes
    from reliability_cases import CASES, KEEPS_FINISHED_STEPS

    torch.set_num_threads(1)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp_root:
        root = Path(tmp_root)
        (root / "broken_index.json").write_text("{not json")
        (root / "a_file").write_text("x")
        fx = {"oct_datalist": make("oct", 10, root / "oct", seed=1, size="64", progress=False),
              "brain_datalist": make("brain", 10, root / "brain", seed=1, dims=3, progress=False),
              "broken_index": str(root / "broken_index.json"), "a_file": str(root / "a_file")}
        rows = []
        for i, case in enumerate(CASES):
            tmp = root / f"case{i}"
            tmp.mkdir()
            line = case.run(tmp, fx)
            out = tmp / "out"
            written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) if out.is_dir() else []
            if case.id in KEEPS_FINISHED_STEPS:
                note = "finished steps kept"
            elif case.id == "checkpoints-all-corrupt":
                note = "nothing new"
            else:
                note = "nothing" if not written else f"{len(written)} file(s)!"
            ok = case.expect in line and "\n" not in line
            rows.append(f"| `{case.id}` | {case.area} | {case.command.replace('|', '/')} | "
                        f"{'' if ok else '**MISMATCH** '}`{line.replace('|', '/').replace('`', chr(39))}` | {note} |")
            print(f"{'ok ' if ok else 'BAD'} {case.id}: {line}", flush=True)
    text = HEADER + "\n".join(rows) + f"\n\n{len(CASES)} cases, written in {time.perf_counter() - start:.0f} s.\n"
    write_bytes(text.encode(), REPO / "docs" / "reliability.md")
    print(REPO / "docs" / "reliability.md")
    return 0 if all("MISMATCH" not in r for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
