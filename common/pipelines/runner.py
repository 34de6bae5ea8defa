"""Run a pipeline's steps in order, in-process, each into its own folder, recording provenance.

Bundles run through MONAI's ``ConfigWorkflow`` (initialize, run, finalize), exactly as ``python -m monai.bundle
run`` runs them, with the step's overrides. A step writes into a hidden temp folder under OUT that replaces
``OUT/<step>`` only when the step succeeded; a failing step leaves the finished steps and their provenance as
they were and stops the pipeline with one line. A rerun skips finished, unchanged steps (``--force`` redoes them).
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import sys
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from common.io.writers import current_umask
from common.pipelines.provenance import Provenance, fingerprint, folder_files, input_digests
from common.pipelines.steps import PipelineError, Step, parse_steps, substitute
from common.zoo.index import sha256_file


def find_bundle(name: str, bundle_dirs: Sequence[str | os.PathLike]) -> Path:
    """The folder of bundle ``name`` in the first of ``bundle_dirs`` that has it."""
    for folder in bundle_dirs:
        candidate = Path(folder) / name
        if (candidate / "configs" / "metadata.json").is_file():
            return candidate
    where = " or ".join(str(Path(f)) for f in bundle_dirs)
    raise PipelineError(f"bundle '{name}' is not in {where}: fetch it with `python -m common.zoo download {name}` "
                        "(or pass --bundle_dirs)")


def bundle_identity(bundle_dir: Path, configs: Sequence[str], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Name, version, sha256 of its config files and of the weights it will load (``model_dir`` or models/)."""
    import json

    meta = json.loads((bundle_dir / "configs" / "metadata.json").read_text())
    missing = [c for c in configs if not (bundle_dir / "configs" / c).is_file()]
    if missing:
        raise PipelineError(f"bundle '{bundle_dir.name}' has no configs/{missing[0]}: check the step's configs")
    model_dir = Path(str(overrides.get("model_dir", bundle_dir / "models")))
    weights = {p.name: sha256_file(p) for p in sorted(model_dir.glob("*.safetensors"))} if model_dir.is_dir() else {}
    return {"bundle": bundle_dir.name, "version": meta.get("version"),
            "configs_sha256": {c: sha256_file(bundle_dir / "configs" / c) for c in configs}, "weights_sha256": weights}


def run_bundle(bundle_dir: Path, configs: Sequence[str], overrides: Mapping[str, Any]) -> Any:
    """One bundle run through MONAI's ConfigWorkflow; returns what the config's ``run`` returned."""
    from monai.bundle import ConfigWorkflow

    quiet = logging.getLogger("monai.bundle.workflows")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "logging file set to False" and property notices: not the user's concern
    try:
        workflow = ConfigWorkflow(
            config_file=[str(bundle_dir / "configs" / c) for c in configs],
            meta_file=str(bundle_dir / "configs" / "metadata.json"), logging_file=False, workflow_type=None,
            bundle_root=str(bundle_dir), **dict(overrides))
    finally:
        quiet.setLevel(level)
    workflow.initialize()
    try:
        return workflow.run()
    finally:
        workflow.finalize()


class _FinalPaths(io.TextIOBase):
    """stdout for a running step: the temp folder's path printed as the step's final folder (where the files
    will be once the step succeeded). Forwards to the real stdout, so a logging handler that keeps it stays valid."""

    def __init__(self, stream: Any, tmp: Path, final: Path) -> None:
        super().__init__()
        self.stream = stream
        self.pairs = [(str(tmp.resolve()), str(final.resolve())), (str(tmp), str(final))]

    def write(self, text: str) -> int:
        for old, new in self.pairs:
            text = text.replace(old, new)
        self.stream.write(text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def _flat(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _flat(v)]
    return [value]


def _relative(value: Any, folder: Path) -> Any:
    """Paths inside the step's temp folder as paths relative to it (what a step returned, for provenance)."""
    if isinstance(value, (list, tuple)):
        return [_relative(v, folder) for v in _flat(value)]
    if isinstance(value, (str, os.PathLike)):
        try:
            return Path(value).resolve().relative_to(folder.resolve()).as_posix()
        except ValueError:
            return str(value)
    return None if value is None else str(type(value).__name__)


def _execute(step: Step, bundle_dir: Path | None, tmp: Path, folders: Mapping[str, str]) -> list[dict[str, Any]]:
    """Run one step into ``tmp``; returns one record per bundle run (its overrides, what it returned)."""
    if step.kind == "call":
        call = step.call
        assert call is not None
        if isinstance(call, functools.partial):
            result = call.func(*call.args, **substitute(call.keywords, str(tmp), folders))
        else:
            result = call(output_dir=str(tmp))
        return [{"returned": _relative(result, tmp)}]
    assert bundle_dir is not None
    items = []
    for item in step.foreach or ({},):
        overrides = substitute({**step.overrides, **item}, str(tmp), folders)
        result = run_bundle(bundle_dir, step.configs, overrides)
        items.append({"overrides": {**step.overrides, **item}, "returned": _relative(result, tmp)})
    return items


def _replace_folder(tmp: Path, final: Path) -> None:
    """Move a finished step's folder into place, replacing an older one."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(tmp, final)
    os.chmod(final, 0o777 & ~current_umask())
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def run_pipeline(
    name: str,
    steps: Sequence[Mapping[str, Any]],
    output_dir: str | os.PathLike,
    force: bool = False,
    bundle_dirs: Sequence[str | os.PathLike] | str = ("bundles",),
) -> dict[str, Any]:
    """Run the steps of pipeline ``name`` into ``output_dir``; returns the provenance record of the run."""
    from common.cli import one_line
    from common.sampling.settings import check_bool

    force = check_bool("force", force)
    dirs = [bundle_dirs] if isinstance(bundle_dirs, (str, os.PathLike)) else list(bundle_dirs)
    parsed = parse_steps(steps)
    located = {s.name: find_bundle(s.bundle, dirs) for s in parsed if s.bundle}  # all found before any runs
    out_dir = Path(output_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise PipelineError(f"output_dir {out_dir} is a file: give a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    provenance = Provenance(out_dir, name)
    folders = {s.name: str((out_dir / s.name).resolve()) for s in parsed}
    total = len(parsed)
    for index, step in enumerate(parsed, start=1):
        final = out_dir / step.name
        description = step.describe()
        description["upstream"] = {u: provenance.fingerprint_of(u) for u in step.upstream()}
        description["inputs"] = input_digests([step.overrides, list(step.foreach), description.get("keywords", {})])
        if step.bundle:
            description.update(bundle_identity(located[step.name], step.configs, step.overrides))
        print_ = fingerprint(description)
        if not force and provenance.is_current(step.name, print_, final):
            print(f"[{index}/{total}] {step.name}: up to date, skipped ({final})", flush=True)
            continue
        print(f"[{index}/{total}] {step.name}: {step.label} ...", flush=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{step.name}.tmp-", dir=out_dir))
        start = time.perf_counter()
        try:
            with contextlib.redirect_stdout(_FinalPaths(sys.stdout, tmp, final)):
                items = _execute(step, located.get(step.name), tmp, folders)
            _replace_folder(tmp, final)
        except (Exception, SystemExit) as exc:
            why = f"exited with status {exc.code} (its error is above)" if isinstance(exc, SystemExit) else one_line(exc)
            raise PipelineError(f"step '{step.name}' ({step.label}) failed: {why} -- the steps before it "
                                f"are kept in {out_dir} and a rerun skips them") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        seconds = time.perf_counter() - start
        provenance.record({
            "name": step.name, "status": "complete", "fingerprint": print_, "wall_seconds": round(seconds, 3),
            "folder": step.name, **{k: v for k, v in description.items() if k != "label"}, "step": step.label,
            "items": items, "outputs": folder_files(final),
        })
        print(f"[{index}/{total}] {step.name}: done in {seconds:.1f} s -> {final}", flush=True)
    print(provenance.path, flush=True)
    return {"pipeline": name, "output_dir": str(out_dir), "steps": list(provenance.steps.values())}
