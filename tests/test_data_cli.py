"""`python -m common.data make`: bad input fails in one line with nothing written; same seed, same bytes;
datalists load through MONAI like real data."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common.data import make as make_mod
from common.data.__main__ import main
from common.data.make import make, split_counts

REPO = Path(__file__).resolve().parents[1]


def _tree(p: Path) -> dict:
    return {str(f.relative_to(p)): hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(p.rglob("*")) if f.is_file()}


@pytest.mark.parametrize("argv, needle", [
    (["make", "liver", "--n", "2", "--out", "{tmp}/o"], "unknown population"),
    (["make", "cxr", "--n", "0", "--out", "{tmp}/o"], "--n must be a positive integer"),
    (["make", "cxr", "--n", "-3", "--out", "{tmp}/o"], "--n must be a positive integer"),
    (["make", "cxr", "--n", "2", "--out", "{tmp}/o", "--size", "8"], "--size '8' is impossible"),
    (["make", "oct", "--n", "2", "--out", "{tmp}/o", "--size", "abc"], "is not a size"),
    (["make", "mammo", "--n", "2", "--out", "{tmp}/o", "--size", "128x0"], "is impossible"),
    (["make", "brain", "--n", "2", "--out", "{tmp}/o", "--dims", "4"], "--dims must be 2 or 3"),
    (["make", "brain", "--n", "2", "--out", "{tmp}/o", "--spacing", "3"], "--spacing must be 1 or 2"),
    (["make", "brain", "--n", "2", "--out", "{tmp}/o", "--size", "64"], "--size does not apply to brain"),
    (["make", "cxr", "--n", "two", "--out", "{tmp}/o"], "invalid int value"),
    (["make", "cxr", "--n", "2"], "required: --out"),
    (["make", "cxr", "--n", "2", "--out", "{tmp}/afile/o"], "is not an existing folder"),
    (["make", "cxr", "--n", "2", "--out", "/proc/zoo_data_out"], "pick a writable --out"),
])
def test_bad_input_one_line_nonzero_nothing_written(tmp_path, capsys, argv, needle):
    (tmp_path / "afile").write_text("x")
    before = _tree(tmp_path)
    rc = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err.strip()
    assert rc != 0
    assert len(err.splitlines()) == 1 and needle in err
    assert _tree(tmp_path) == before
    assert not list(tmp_path.glob(".*staging*"))


def test_cli_process_exit_code(tmp_path):
    r = subprocess.run([sys.executable, "-m", "common.data", "make", "cxr", "--n", "0", "--out", str(tmp_path / "o")],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().startswith("error: --n must be a positive integer")
    assert not (tmp_path / "o").exists()


def test_failure_midway_leaves_nothing(tmp_path, monkeypatch):
    real = make_mod._writer

    def flaky(*a, **k):
        write, header = real(*a, **k)

        def w(seed, i, path):
            if i == 2:
                raise RuntimeError("disk full")
            return write(seed, i, path)
        return w, header

    monkeypatch.setattr(make_mod, "_writer", flaky)
    with pytest.raises(RuntimeError):
        make("cxr", 4, tmp_path / "o", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        assert main(["make", "cxr", "--n", "3", "--out", str(tmp_path / name), "--seed", str(seed), "--no-progress"]) == 0
        make("brain", 1, tmp_path / name / "brain", seed=seed, dims=3, progress=False)
    a, b, c = (_tree(tmp_path / n) for n in "abc")
    assert a == b and len(a) == 9  # 3 PNG + datalist; 4 NIfTI + brain datalist
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a if k.endswith(".png"))


def test_case_does_not_depend_on_n(tmp_path):
    make("oct", 2, tmp_path / "two", seed=7, progress=False)
    make("oct", 5, tmp_path / "five", seed=7, progress=False)
    for f in ("oct-00000.png", "oct-00001.png"):
        assert (tmp_path / "two" / f).read_bytes() == (tmp_path / "five" / f).read_bytes()


def test_splits():
    assert split_counts(1) == (1, 0, 0)
    assert split_counts(3) == (1, 1, 1)
    assert split_counts(100) == (80, 10, 10)


def test_datalists_load_through_monai(tmp_path):
    from monai.data import load_decathlon_datalist
    from monai.transforms import LoadImage

    dl = make("mammo", 3, tmp_path / "m", seed=0, progress=False)
    items = load_decathlon_datalist(str(dl), data_list_key="training", base_dir=str(dl.parent))
    assert Path(items[0]["image"]).is_file()
    img = LoadImage(image_only=True)(items[0]["image"])
    assert tuple(img.shape) == (128, 160)  # MONAI reads PNGs as (W, H)
    dl3 = make("brain", 1, tmp_path / "b", seed=0, dims=3, progress=False)
    it = load_decathlon_datalist(str(dl3), data_list_key="training", base_dir=str(dl3.parent))[0]
    t1 = LoadImage(image_only=True)(it["image"])
    assert tuple(t1.shape) == (80, 112, 80)
    np.testing.assert_allclose(t1.pixdim, (2.0, 2.0, 2.0))
    d = json.loads(dl3.read_text())
    assert d["population"]["name"] == "brain" and d["population"]["spacing_mm"] == 2.0


def test_figure_grid(tmp_path):
    from PIL import Image

    assert main(["figure", "oct", "--n", "4", "--out", str(tmp_path / "g.png")]) == 0
    g = Image.open(tmp_path / "g.png")
    assert g.mode == "L" and g.width == 4 * (128 + 4) and g.height == 128 + 14 + 4
    assert main(["figure", "liver", "--out", str(tmp_path / "h.png")]) == 2
    assert not (tmp_path / "h.png").exists()
