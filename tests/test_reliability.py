"""docs/reliability.md, proved: every bad or hostile input of tests/reliability_cases.py gives one line naming the
problem and the fix, and writes nothing (a failing pipeline step keeps only the steps finished before it)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reliability_cases import CASES, KEEPS_FINISHED_STEPS  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    """Shared inputs: a tiny OCT datalist, a tiny 3D brain datalist, a broken index file."""
    import torch

    from common.data.make import make

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("reliability")
    broken = root / "broken_index.json"
    broken.write_text("{not json")
    a_file = root / "a_file"
    a_file.write_text("x")
    return {"oct_datalist": make("oct", 10, root / "oct", seed=1, size="64", progress=False),
            "brain_datalist": make("brain", 10, root / "brain", seed=1, dims=3, progress=False),
            "broken_index": str(broken), "a_file": str(a_file)}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_writes_nothing(case, fx, tmp_path):
    line = case.run(tmp_path, fx)
    assert case.expect in line, f"{case.id}: {line!r}"
    assert "\n" not in line and 0 < len(line) < 400, line
    out = tmp_path / "out"
    if case.id in KEEPS_FINISHED_STEPS:
        steps = json.loads((out / "provenance.json").read_text())["steps"]
        assert [s["name"] for s in steps] == ["sample", "datalist"] and all(s["status"] == "complete" for s in steps)
        assert sorted(p.name for p in out.iterdir()) == ["datalist", "provenance.json", "sample"]
    elif case.id == "checkpoints-all-corrupt":
        assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["autoencoder_checkpoint_iteration=100.pt"]
    elif case.id == "output-is-file":
        assert Path(tmp_path / "in" / "a_file").read_text() == "x"
    else:
        assert not out.exists() or not any(out.rglob("*")), sorted(out.rglob("*"))


def test_the_doc_lists_every_case():
    doc = (REPO / "docs" / "reliability.md").read_text()
    rows = [line for line in doc.splitlines() if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == [c.id for c in CASES]
    assert len(CASES) >= 60
