"""Small functions pipelines call between bundle runs: read the user's inputs, turn outputs into the next input.

Each raises ``PipelineError`` with one line naming the file and the fix. Functions used as ``call`` steps take
``output_dir`` (the step's folder) and write there atomically.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common.pipelines.steps import PipelineError

COVARIATES = ("gender", "age", "ventricular_vol", "brain_vol")


def read_lines(path: str | os.PathLike, what: str = "prompt") -> list[str]:
    """Non-empty, stripped lines of a text file (e.g. one report sentence per line)."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{what} file {path} does not exist: give a text file with one {what} per line")
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError:
        raise PipelineError(f"{what} file {path} is not UTF-8 text: give a text file with one {what} per line") from None
    lines = [line for line in lines if line]
    if not lines:
        raise PipelineError(f"{what} file {path} has no non-empty lines")
    return lines


def read_conditions(path: str | os.PathLike, samples_per_condition: int = 1, seed: int = 0) -> list[dict[str, Any]]:
    """Rows of a conditions CSV (columns gender, age, ventricular_vol, brain_vol in [0, 1]; optional n) as
    brain_ldm_3d overrides, one per row, each with its own seed (seed + row index) and num_samples."""
    from common.sampling.settings import check_int

    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"conditions file {path} does not exist: give a CSV with columns {', '.join(COVARIATES)}")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in reader.fieldnames or []]
        missing = [c for c in COVARIATES if c not in header]
        if missing:
            raise PipelineError(f"conditions file {path} lacks column(s) {', '.join(missing)}: its header must name "
                                f"{', '.join(COVARIATES)} (and optionally n)")
        rows = []
        for line, raw in enumerate(reader, start=2):
            raw = {k.strip(): (v or "").strip() for k, v in raw.items() if k}
            row: dict[str, Any] = {}
            for key in COVARIATES:
                try:
                    value = float(raw[key])
                except ValueError:
                    raise PipelineError(f"{path} line {line}: {key}={raw[key]!r} is not a number in [0, 1]") from None
                if not 0.0 <= value <= 1.0:
                    raise PipelineError(f"{path} line {line}: {key}={value} is outside [0, 1]: normalise it")
                row[key] = value
            try:
                n = int(raw.get("n") or samples_per_condition)
                row["num_samples"] = check_int("n", n, 1, 10_000)
            except ValueError as err:
                raise PipelineError(f"{path} line {line}: {err}") from None
            row["seed"] = int(seed) + len(rows)
            rows.append(row)
    if not rows:
        raise PipelineError(f"conditions file {path} has a header but no rows")
    return rows


def datalist_images(datalist: str | os.PathLike, split: str = "test", key: str = "image") -> list[str]:
    """Absolute image paths of one split of a Decathlon-style datalist (e.g. held-out reals to calibrate on), read
    by the training room's loader (population version and missing files checked)."""
    from common.training.data import load_datalist

    path = Path(datalist)
    if not path.is_file():
        raise PipelineError(f"datalist {path} does not exist: make it with `python -m common.data make ...` or pass "
                            "another --real_datalist")
    try:
        return [str(entry[key]) for entry in load_datalist(str(path), split)]
    except (ValueError, FileNotFoundError) as err:
        raise PipelineError(str(err)) from None
    except KeyError:
        raise PipelineError(f"datalist {path}: entries of {split!r} lack the key {key!r}") from None


def _provenance_items(step_dir: Path) -> list[dict[str, Any]]:
    """The per-run records (overrides, returned files) of the earlier step that wrote ``step_dir``
    (``OUT/<step>``), from ``OUT/provenance.json``."""
    from common.pipelines.provenance import FILE_NAME

    step = step_dir.name
    path = step_dir.parent / FILE_NAME
    try:
        steps = {s["name"]: s for s in json.loads(path.read_text())["steps"]}
        return steps[step]["items"]
    except (OSError, ValueError, KeyError):
        raise PipelineError(f"no finished step '{step}' in {path}: run the pipeline from the start") from None


def cohort_datalist(output_dir: str, samples_dir: str, keys: Sequence[str] = COVARIATES) -> str:
    """``datalist.json`` (Decathlon style, all under ``training``) of the samples an earlier brain_ldm_3d step
    wrote into ``samples_dir`` (``{step:NAME}``), each entry carrying the covariates it was sampled with; paths
    relative to the datalist, so the datalist trains any bundle's train.json as it is."""
    from common.io.writers import write_json

    out = Path(output_dir)
    samples = Path(samples_dir)
    samples_step = samples.name
    entries = []
    for item in _provenance_items(samples):
        for rel in item.get("returned") or []:
            image = samples / rel
            if not image.is_file():
                raise PipelineError(f"step '{samples_step}' lists {rel}, which is not in {samples}: rerun with --force")
            entry = {"image": os.path.relpath(image, out)}
            entry.update({k: float(item["overrides"][k]) for k in keys})
            entries.append(entry)
    if not entries:
        raise PipelineError(f"step '{samples_step}' wrote no samples")
    path = out / "datalist.json"
    write_json({"name": "synthetic cohort", "description": f"samples of step '{samples_step}' with the covariates "
                "they were sampled with", "training": entries}, path)
    return str(path)


def _csv_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise PipelineError(f"{path} does not exist: the scoring step did not write it")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "log_likelihood_sum" not in rows[0]:
        raise PipelineError(f"{path} is not a likelihoods CSV of score.json (no log_likelihood_sum column)")
    return rows


def flag_low_likelihood(output_dir: str, samples_csv: str, reference_csv: str, quantile: float = 0.05,
                        prompts_dir: str | None = None) -> str:
    """``qc.csv``: each sample's summed log-likelihood, the threshold (the ``quantile`` of the held-out real
    images' likelihoods: that share of real images would be flagged too) and whether it falls below it; with
    ``prompts_dir`` (``{step:NAME}`` of the sampling step) each sample's prompt from that step's provenance."""
    import numpy as np

    from common.io.writers import write_bytes
    from common.sampling.settings import check_float

    quantile = check_float("quantile", quantile, 0.0, 1.0, "0.05")
    reference = np.array([float(r["log_likelihood_sum"]) for r in _csv_rows(Path(reference_csv))])
    threshold = float(np.quantile(reference, quantile))
    prompts: dict[str, str] = {}
    out = Path(output_dir)
    if prompts_dir:
        for item in _provenance_items(Path(prompts_dir)):
            for rel in item.get("returned") or []:
                prompts[Path(rel).name] = str(item["overrides"].get("prompt", ""))
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["file", "prompt", "log_likelihood_sum", "threshold", "flagged"])
    flagged = 0
    for row in _csv_rows(Path(samples_csv)):
        value = float(row["log_likelihood_sum"])
        low = value < threshold
        flagged += low
        name = Path(row["file"]).name
        writer.writerow([name, prompts.get(name, ""), f"{value:.4f}", f"{threshold:.4f}", str(low).lower()])
    path = out / "qc.csv"
    write_bytes(text.getvalue().encode(), path)
    print(f"quality control: {flagged} flagged below {threshold:.1f} nats (the {quantile:.0%} quantile of "
          f"{len(reference)} real images)", flush=True)
    return str(path)
