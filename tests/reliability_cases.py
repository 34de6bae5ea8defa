"""The bad and hostile inputs of docs/reliability.md, one row each, run by tests/test_reliability.py and rendered
into the doc by ci/reliability_table.py (so the table is what the suite proves).

Every case runs the real entry point (a bundle run through MONAI's bundle API or `python -m monai.bundle run`, the
data / zoo / evaluation command lines, a pipeline) with its output under ``tmp/out``, and returns the one line the
user sees. The test asserts the expected words are in that line, that it is one line, and that nothing was
written under ``tmp/out``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TINY_OCT = {"autoencoder_def#channels": [8, 16, 16], "autoencoder_def#norm_num_groups": 8,
            "diffusion_def#channels": [16, 16, 32], "diffusion_def#num_head_channels": [0, 16, 16],
            "diffusion_def#norm_num_groups": 8, "discriminator_def#num_layers_d": 1,
            "discriminator_def#channels": 8, "image_size": [64, 64]}


@dataclass(frozen=True)
class Case:
    id: str
    area: str
    command: str  # what the user typed (for the doc)
    expect: str  # words the one line must contain
    run: Callable[[Path, dict], str] = field(repr=False, compare=False)


# ----------------------------------------------------------------------------------------------- runners
def _one_line(exc: BaseException) -> str:
    from common.cli import one_line

    return one_line(exc)


def bundle(name: str, configs: tuple[str, ...] = ("inference.json",), run_id: str = "run",
           root: Callable[[Path, dict], Path] | None = None, **overrides: Any) -> Callable[[Path, dict], str]:
    """A bundle run in-process (MONAI's bundle API), output under tmp/out; returns the error line it raised."""

    def go(tmp: Path, fx: dict) -> str:
        from monai.bundle import run

        bundle_root = root(tmp, fx) if root else REPO / "bundles" / name
        values = {k: (v(tmp, fx) if callable(v) else v) for k, v in overrides.items()}
        values.setdefault("output_dir", str(tmp / "out"))
        values.setdefault("progress", False)
        try:
            with contextlib.redirect_stderr(io.StringIO()) as err:
                run(run_id, config_file=[str(bundle_root / "configs" / c) for c in configs], logging_file=None,
                    bundle_root=str(bundle_root), **values)
        except SystemExit:  # evaluate.json's run_cli prints its line and exits 2
            return _error_line(err.getvalue())
        except BaseException as exc:
            return _one_line(exc)
        return "(no error)"

    return go


def cli(*args: str) -> Callable[[Path, dict], str]:
    """`python -m monai.bundle run ...` as a subprocess (checks made on the command line itself)."""

    def go(tmp: Path, fx: dict) -> str:
        argv = [a.replace("{out}", str(tmp / "out")) for a in args]
        r = subprocess.run([sys.executable, "-m", "monai.bundle", "run", *argv], cwd=REPO, capture_output=True,
                           text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1"))
        if r.returncode == 0:
            return "(no error)"
        return r.stderr.strip().splitlines()[-1].removeprefix("error: ").split("  [ZOO_DEBUG")[0]

    return go


def _error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    return lines[-1].removeprefix("error: ") if len(lines) == 1 else f"(expected one error line, got: {stderr!r})"


def module_main(module: str, *args: str) -> Callable[[Path, dict], str]:
    """A project command line (`python -m common.data ...`, `common.zoo`, `common.evaluation`) in-process."""

    def go(tmp: Path, fx: dict) -> str:
        import importlib

        main = importlib.import_module(f"{module}.__main__").main
        argv = [a.format(out=tmp / "out", tmp=tmp, **{k: v for k, v in fx.items() if isinstance(v, (str, Path))})
                for a in args]
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                code = main(argv)
        except SystemExit as exc:
            code = exc.code
        if code == 0:
            return "(no error)"
        return _error_line(err.getvalue())

    return go


def pipeline(name: str, **overrides: Any) -> Callable[[Path, dict], str]:
    def go(tmp: Path, fx: dict) -> str:
        from monai.bundle import run

        values = {k: (v(tmp, fx) if callable(v) else v) for k, v in overrides.items()}
        values.setdefault("output_dir", str(tmp / "out"))
        cwd = os.getcwd()
        os.chdir(REPO)
        try:
            run(config_file=str(REPO / "pipelines" / f"{name}.json"), logging_file=None, **values)
        except BaseException as exc:
            return _one_line(exc)
        finally:
            os.chdir(cwd)
        return "(no error)"

    return go


# ----------------------------------------------------------------------------------------------- inputs
def write(name: str, text: str) -> Callable[[Path, dict], str]:
    def make(tmp: Path, fx: dict) -> str:
        path = tmp / "in" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return str(path)

    return make


def png(name: str, shape: tuple[int, ...]) -> Callable[[Path, dict], str]:
    def make(tmp: Path, fx: dict) -> str:
        import numpy as np
        from PIL import Image

        path = tmp / "in" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full(shape, 128, np.uint8)).save(path)
        return str(path)

    return make


def folder(name: str, files: dict[str, Callable[[Path, dict], str]] | None = None) -> Callable[[Path, dict], str]:
    def make(tmp: Path, fx: dict) -> str:
        path = tmp / "in" / name
        path.mkdir(parents=True, exist_ok=True)
        for fn in (files or {}).values():
            src = Path(fn(tmp, fx))
            shutil.move(str(src), path / src.name)
        return str(path)

    return make


def nifti(name: str, shape: tuple[int, ...]) -> Callable[[Path, dict], str]:
    def make(tmp: Path, fx: dict) -> str:
        import nibabel as nib
        import numpy as np

        path = tmp / "in" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(np.random.default_rng(0).random(shape).astype(np.float32), np.eye(4)), str(path))
        return str(path)

    return make


# a folder no user may create, root included (sysfs refuses new entries with EPERM)
DENIED = "/sys/zoo_denied/out"


def fixture(key: str) -> Callable[[Path, dict], str]:
    return lambda tmp, fx: str(fx[key])


def tampered_oct(tmp: Path, fx: dict) -> Path:
    root = tmp / "in" / "oct_ldm"
    shutil.copytree(REPO / "bundles" / "oct_ldm", root)
    weights = root / "models" / "diffusion_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0x01
    weights.write_bytes(bytes(data))
    return root


def corrupt_checkpoints(tmp: Path, fx: dict) -> str:
    ckpt = tmp / "out" / "autoencoder" / "checkpoints"
    ckpt.mkdir(parents=True)
    (ckpt / "autoencoder_checkpoint_iteration=100.pt").write_bytes(b"cut short")
    return str(tmp / "out")


def rgb_datalist(tmp: Path, fx: dict) -> str:
    png("rgb.png", (64, 64, 3))(tmp, fx)
    path = tmp / "in" / "rgb.json"
    path.write_text(json.dumps({"training": [{"image": "rgb.png", "label": 0}]}))
    return str(path)


def old_population(tmp: Path, fx: dict) -> str:
    data = json.loads(Path(fx["oct_datalist"]).read_text())
    data["population"]["version"] = 0
    path = Path(fx["oct_datalist"]).parent / "old_datalist.json"
    path.write_text(json.dumps(data))
    return str(path)


def steps_with(change: Callable[[list], None]) -> Callable[[Path, dict], list]:
    def make(tmp: Path, fx: dict) -> list:
        steps = json.loads((REPO / "pipelines" / "synthetic_cohort.json").read_text())["steps"]
        change(steps)
        return steps

    return make


GOOD_CSV = "gender,age,ventricular_vol,brain_vol\n1,0.5,0.5,0.5\n0,0.4,0.5,0.6\n"
OCT_TRAIN = ("inference.json", "train.json")
CXR_SCORE = ("inference.json", "score.json")
SCORE_ARGS = "--config_file \"['.../inference.json','.../score.json']\""


def _cohort(**kw: Any) -> Callable[[Path, dict], str]:
    kw.setdefault("conditions", write("c.csv", GOOD_CSV))
    kw.setdefault("real_datalist", fixture("brain_datalist"))
    return pipeline("synthetic_cohort", num_inference_steps=2, **kw)


CASES: list[Case] = [
    # ---- inference
    Case("class-unknown", "inference", "oct_ldm --class amd", "unknown class 'amd': use --class with one of",
         bundle("oct_ldm", **{"class": "amd"})),
    Case("guidance-negative", "inference", "oct_ldm --guidance_scale -1", "guidance_scale must be a finite number in [0, 50]",
         bundle("oct_ldm", guidance_scale=-1)),
    Case("guidance-huge", "inference", "oct_ldm --guidance_scale 1e12", "guidance_scale must be a finite number in [0, 50]",
         bundle("oct_ldm", guidance_scale=1e12)),
    Case("guidance-nan", "inference", "cxr_text_ldm --guidance_scale nan", "guidance_scale must be a finite number",
         bundle("cxr_text_ldm", guidance_scale=float("nan"))),
    Case("steps-fraction", "inference", "oct_ldm --num_inference_steps 2.5", "num_inference_steps must be an integer, got 2.5",
         bundle("oct_ldm", num_inference_steps=2.5)),
    Case("steps-zero", "inference", "oct_ldm --num_inference_steps 0", "num_inference_steps must be an integer in [1, 1000]",
         bundle("oct_ldm", num_inference_steps=0)),
    Case("steps-huge", "inference", "oct_ldm --num_inference_steps 5000", "num_inference_steps must be an integer in [1, 1000]",
         bundle("oct_ldm", num_inference_steps=5000)),
    Case("steps-text", "inference", "brain_ldm_3d --num_inference_steps abc", "num_inference_steps must be an integer, got 'abc'",
         bundle("brain_ldm_3d", num_inference_steps="abc")),
    Case("samples-zero", "inference", "oct_ldm --num_samples 0", "num_samples must be an integer in [1, 100000]",
         bundle("oct_ldm", num_samples=0, **{"class": "cnv"})),
    Case("samples-negative", "inference", "brain_ldm_3d --num_samples -3", "num_samples must be an integer in [1, 100000]",
         bundle("brain_ldm_3d", num_samples=-3)),
    Case("batch-zero", "inference", "oct_ldm --batch_size 0", "batch_size must be an integer >= 1",
         bundle("oct_ldm", batch_size=0, num_inference_steps=2)),
    Case("seed-negative", "inference", "oct_ldm --seed -1", "seed must be an integer in [0, ",
         bundle("oct_ldm", seed=-1, num_inference_steps=2)),
    Case("progress-maybe", "inference", "oct_ldm --progress maybe", "progress must be true or false",
         bundle("oct_ldm", progress="maybe", num_inference_steps=2)),
    Case("scheduler-unknown", "inference", "oct_ldm --scheduler euler", "unknown scheduler 'euler'; valid names: ddpm, ddim, pndm, dpmpp2m",
         bundle("oct_ldm", scheduler="euler")),
    Case("format-unknown", "inference", "oct_ldm --output_format jpg", "file_format must be one of nifti, png, got 'jpg'",
         bundle("oct_ldm", output_format="jpg", num_inference_steps=2)),
    Case("model-dir-missing", "inference", "oct_ldm --model_dir /nonexistent", "weights file not found",
         bundle("oct_ldm", model_dir="/nonexistent/models")),
    Case("output-is-file", "inference", "oct_ldm --output_dir A_FILE", "is a file; give a folder",
         bundle("oct_ldm", num_inference_steps=2, **{"class": "cnv"}, output_dir=write("a_file", "x"))),
    Case("output-permission-denied", "inference", "oct_ldm --output_dir (a folder this user may not create)",
         "permission denied on", bundle("oct_ldm", num_inference_steps=1, num_samples=1, **{"class": "cnv"},
                                        output_dir=DENIED)),
    Case("translate-two-channels", "inference", "flair2t1_controlnet --input_image (a 2-channel 4D NIfTI)",
         "with 2 channel(s); this model takes single-channel 2D or 3D images",
         bundle("flair2t1_controlnet", input_image=nifti("two.nii.gz", (8, 8, 8, 2)))),
    Case("translate-not-nifti", "inference", "flair2t1_controlnet --input_image flair.nii.gz (not an image)",
         "not a readable NIfTI image", bundle("flair2t1_controlnet", input_image=write("flair.nii.gz", "not nifti"))),
    Case("translate-scale-huge", "inference", "flair2t1_controlnet --conditioning_scale 1e6",
         "conditioning_scale must be a finite number in [0, 10]",
         bundle("flair2t1_controlnet", input_image=nifti("a.nii.gz", (80, 112, 2)), conditioning_scale=1e6)),
    Case("translate-output-permission-denied", "inference", "flair2t1_controlnet --output_dir (a folder this user may not create)",
         "permission denied on", bundle("flair2t1_controlnet", input_image=nifti("a.nii.gz", (80, 112, 1)),
                                        num_inference_steps=1, output_dir=DENIED)),
    Case("weights-tampered", "inference", "oct_ldm (one byte of models/diffusion_model.safetensors changed)",
         "is not that of the oct_ldm", bundle("oct_ldm", root=tampered_oct, num_inference_steps=2)),
    Case("covariate-out-of-range", "inference", "brain_ldm_3d --age 1.5", "outside [0, 1]",
         bundle("brain_ldm_3d", age=1.5)),
    Case("covariate-text", "inference", "brain_ldm_3d --gender abc", "covariate 'gender'='abc' is not a number",
         bundle("brain_ldm_3d", gender="abc")),
    Case("covariate-negative", "inference", "brain_ldm_3d --ventricular_vol -0.1", "outside [0, 1]",
         bundle("brain_ldm_3d", ventricular_vol=-0.1)),
    Case("mammo-class", "inference", "mammo_ldm --class huge", "unknown class 'huge'",
         bundle("mammo_ldm", **{"class": "huge"})),
    Case("prior-unknown", "inference", "cxr_vqvae_transformer --prior gan", "--prior 'gan' is unknown: use one of diffusion, transformer",
         bundle("cxr_vqvae_transformer", prior="gan")),
    Case("temperature-zero", "inference", "cxr_vqvae_transformer --temperature 0", "temperature must be a finite number in [0.001, 100]",
         bundle("cxr_vqvae_transformer", temperature=0)),
    Case("top-k-fraction", "inference", "cxr_vqvae_transformer --top_k 2.5", "top_k must be an integer, got 2.5",
         bundle("cxr_vqvae_transformer", top_k=2.5)),
    Case("top-k-huge", "inference", "cxr_vqvae_transformer --top_k 99999", "top_k must be an integer in [0, 256]",
         bundle("cxr_vqvae_transformer", top_k=99999)),
    Case("override-misspelled", "inference", "oct_ldm --guidance 9.0 (command line)",
         "unknown override --guidance: this bundle has no id 'guidance'; did you mean --guidance_scale?",
         cli("--config_file", "bundles/oct_ldm/configs/inference.json", "--bundle_root", "bundles/oct_ldm",
             "--output_dir", "{out}", "--guidance", "9.0")),
    Case("override-nested-misspelled", "training", "oct_ldm train --autoencoder_train#max_epoch 1 (command line)",
         "did you mean --autoencoder_train#max_epochs?",
         cli("train_autoencoder", "--config_file", "['bundles/oct_ldm/configs/inference.json','bundles/oct_ldm/configs/train.json']",
             "--bundle_root", "bundles/oct_ldm", "--output_dir", "{out}", "--autoencoder_train#max_epoch", "1")),
    Case("device-cuda-missing", "inference", "oct_ldm --device cuda (no GPU)", "--device cuda: PyTorch sees no CUDA GPU",
         cli("--config_file", "bundles/oct_ldm/configs/inference.json", "--bundle_root", "bundles/oct_ldm",
             "--output_dir", "{out}", "--device", "cuda")),
    # ---- scoring (likelihoods)
    Case("score-no-input", "scoring", f"cxr_vqvae_transformer {SCORE_ARGS}", "give exactly one of --input_image",
         bundle("cxr_vqvae_transformer", CXR_SCORE)),
    Case("score-missing-image", "scoring", f"... {SCORE_ARGS} --input_image missing.png", "does not exist: fix the path",
         bundle("cxr_vqvae_transformer", CXR_SCORE, input_image="/nonexistent/missing.png")),
    Case("score-empty-folder", "scoring", f"... {SCORE_ARGS} --input_dir EMPTY", "holds no .png files",
         bundle("cxr_vqvae_transformer", CXR_SCORE, input_dir=folder("empty"))),
    Case("score-wrong-size", "scoring", f"... {SCORE_ARGS} --input_image 96x96.png", "is 96x96 pixels: this model scores 128x128 images; resize it first",
         bundle("cxr_vqvae_transformer", CXR_SCORE, input_image=png("big.png", (96, 96)))),
    Case("score-rgb", "scoring", f"... {SCORE_ARGS} --input_image rgb.png", "has 3 channels: this model scores single-channel (grey) images",
         bundle("cxr_vqvae_transformer", CXR_SCORE, input_image=png("rgb.png", (128, 128, 3)))),
    Case("score-not-png", "scoring", f"... {SCORE_ARGS} --input_image broken.png (not an image)", "cannot read",
         bundle("cxr_vqvae_transformer", CXR_SCORE, input_image=write("broken.png", "not a png"))),
    Case("score-two-inputs", "scoring", f"... {SCORE_ARGS} --input_image a.png --input_dir B", "give exactly one of",
         bundle("cxr_vqvae_transformer", CXR_SCORE, input_image=png("a.png", (128, 128)), input_dir=folder("b"))),
    Case("score-map-range", "scoring", f"... {SCORE_ARGS} --map_max_nats -1", "map_max_nats must be a finite number",
         bundle("cxr_vqvae_transformer", CXR_SCORE, input_image=png("a.png", (128, 128)), map_max_nats=-1)),
    # ---- training
    Case("datalist-missing", "training", "oct_ldm train --datalist missing.json", "datalist not found",
         bundle("oct_ldm", OCT_TRAIN, "train_autoencoder", datalist="/nonexistent/datalist.json", **TINY_OCT)),
    Case("datalist-not-json", "training", "oct_ldm train --datalist broken.json", "is not valid JSON",
         bundle("oct_ldm", OCT_TRAIN, "train_autoencoder", datalist=write("broken.json", "{nope"), **TINY_OCT)),
    Case("datalist-no-training", "training", "oct_ldm train --datalist {\"test\": [...]}", "has no non-empty 'training' list",
         bundle("oct_ldm", OCT_TRAIN, "train_autoencoder", datalist=write("t.json", '{"test": []}'), **TINY_OCT)),
    Case("datalist-missing-image", "training", "oct_ldm train --datalist (names a missing image)",
         "names 1 file(s) that do not exist", bundle("oct_ldm", OCT_TRAIN, "train_autoencoder",
         datalist=write("m.json", '{"training": [{"image": "missing.png", "label": 0}]}'), **TINY_OCT)),
    Case("datalist-old-population", "training", "oct_ldm train --datalist (made by an older generator)",
         "regenerate it with `python -m common.data make oct",
         bundle("oct_ldm", OCT_TRAIN, "train_autoencoder", datalist=old_population, **TINY_OCT)),
    Case("train-2d-into-3d", "training", "brain_ldm_3d train --datalist (2D OCT images)",
         "this bundle trains on 3D images with 1 channel(s)",
         bundle("brain_ldm_3d", ("inference.json", "train.json"), "train_autoencoder", datalist=fixture("oct_datalist"))),
    Case("train-rgb", "training", "oct_ldm train --datalist (an RGB PNG)", "(2D with 3 channel(s)); this bundle trains on 2D images with 1 channel(s)",
         bundle("oct_ldm", OCT_TRAIN, "train_autoencoder", datalist=rgb_datalist, **TINY_OCT)),
    Case("resume-maybe", "training", "oct_ldm train --resume maybe", "resume must be true or false",
         bundle("oct_ldm", OCT_TRAIN, "train_autoencoder", datalist=fixture("oct_datalist"), resume="maybe", **TINY_OCT)),
    Case("checkpoints-all-corrupt", "training", "oct_ldm train (every checkpoint in OUTPUT_DIR cut short)",
         "loads", bundle("oct_ldm", OCT_TRAIN, "train_autoencoder", datalist=fixture("oct_datalist"),
                         output_dir=corrupt_checkpoints, **TINY_OCT)),
    Case("train-output-permission-denied", "training", "oct_ldm train --output_dir (a folder this user may not create)",
         "permission denied on", bundle("oct_ldm", OCT_TRAIN, "train_autoencoder", datalist=fixture("oct_datalist"),
                                        output_dir=DENIED, **TINY_OCT)),
    Case("init-weights-missing", "training", "oct_ldm train --autoencoder_train#init_weights missing.safetensors",
         "weights file not found", bundle("oct_ldm", OCT_TRAIN, "train_autoencoder", datalist=fixture("oct_datalist"),
                                          **{"autoencoder_train#init_weights": "/nonexistent/w.safetensors"}, **TINY_OCT)),
    # ---- data
    Case("data-unknown-population", "data", "python -m common.data make lungs --n 2 --out OUT", "unknown population 'lungs'",
         module_main("common.data", "make", "lungs", "--n", "2", "--out", "{out}")),
    Case("data-n-zero", "data", "python -m common.data make cxr --n 0 --out OUT", "--n",
         module_main("common.data", "make", "cxr", "--n", "0", "--out", "{out}")),
    Case("data-size-tiny", "data", "python -m common.data make cxr --size 10", "is impossible",
         module_main("common.data", "make", "cxr", "--n", "2", "--size", "10", "--out", "{out}")),
    Case("data-size-text", "data", "python -m common.data make cxr --size big", "is not a size",
         module_main("common.data", "make", "cxr", "--n", "2", "--size", "big", "--out", "{out}")),
    Case("data-size-brain", "data", "python -m common.data make brain --size 64", "--size does not apply to brain",
         module_main("common.data", "make", "brain", "--n", "2", "--size", "64", "--out", "{out}")),
    Case("data-dims", "data", "python -m common.data make brain --dims 4", "--dims",
         module_main("common.data", "make", "brain", "--n", "2", "--dims", "4", "--out", "{out}")),
    Case("data-spacing", "data", "python -m common.data make brain --spacing 3", "--spacing",
         module_main("common.data", "make", "brain", "--n", "2", "--spacing", "3", "--out", "{out}")),
    Case("data-out-permission-denied", "data", "python -m common.data make cxr --n 2 --out (a folder this user may not create)",
         "pick a writable --out", module_main("common.data", "make", "cxr", "--n", "2", "--out", DENIED)),
    Case("data-out-under-file", "data", "python -m common.data make cxr --out A_FILE/x", "a file is in the way",
         module_main("common.data", "make", "cxr", "--n", "2", "--out", "{a_file}/x")),
    # ---- evaluation
    Case("eval-samples-missing", "evaluation", "oct_ldm evaluate --samples_dir missing", "samples folder",
         bundle("oct_ldm", ("inference.json", "evaluate.json"), samples_dir="/nonexistent/samples",
                datalist=fixture("oct_datalist"), report_path=lambda t, f: str(t / "out" / "r.json"))),
    Case("eval-samples-empty", "evaluation", "oct_ldm evaluate --samples_dir EMPTY", "holds no",
         bundle("oct_ldm", ("inference.json", "evaluate.json"), samples_dir=folder("none"),
                datalist=fixture("oct_datalist"), report_path=lambda t, f: str(t / "out" / "r.json"))),
    Case("eval-one-sample-fid", "evaluation", "oct_ldm evaluate (one sample, FID)", "at least 2",
         bundle("oct_ldm", ("inference.json", "evaluate.json"), samples_dir=folder("one", {"a": png("s.png", (64, 64))}),
                datalist=fixture("oct_datalist"), metrics=["fid"], report_path=lambda t, f: str(t / "out" / "r.json"))),
    Case("eval-metric-unknown", "evaluation", "oct_ldm evaluate --metrics \"['fidd']\"", "fidd",
         bundle("oct_ldm", ("inference.json", "evaluate.json"), samples_dir=folder("two", {"a": png("s1.png", (64, 64)), "b": png("s2.png", (64, 64))}),
                datalist=fixture("oct_datalist"), metrics=["fidd"], report_path=lambda t, f: str(t / "out" / "r.json"))),
    Case("eval-datalist-missing", "evaluation", "oct_ldm evaluate --datalist missing.json", "datalist",
         bundle("oct_ldm", ("inference.json", "evaluate.json"), samples_dir=folder("two", {"a": png("s1.png", (64, 64)), "b": png("s2.png", (64, 64))}),
                datalist="/nonexistent/datalist.json", report_path=lambda t, f: str(t / "out" / "r.json"))),
    Case("eval-shapes-differ", "evaluation", "oct_ldm evaluate (samples of two sizes)", "different shapes",
         bundle("oct_ldm", ("inference.json", "evaluate.json"), samples_dir=folder("mixed", {"a": png("s1.png", (64, 64)), "b": png("s2.png", (32, 32))}),
                datalist=fixture("oct_datalist"), report_path=lambda t, f: str(t / "out" / "r.json"))),
    # ---- downloads
    Case("zoo-unknown-bundle", "downloads", "python -m common.zoo download nope --dir OUT", "nope",
         module_main("common.zoo", "download", "nope", "--dir", "{out}")),
    Case("zoo-wrong-version", "downloads", "python -m common.zoo download oct_ldm --version 9.9.9", "9.9.9",
         module_main("common.zoo", "download", "oct_ldm", "--version", "9.9.9", "--dir", "{out}")),
    Case("zoo-unknown-pipeline", "downloads", "python -m common.zoo download --pipeline nope", "pipeline",
         module_main("common.zoo", "download", "--pipeline", "nope", "--dir", "{out}")),
    Case("zoo-name-and-pipeline", "downloads", "python -m common.zoo download oct_ldm --pipeline cxr_qc",
         "give a bundle name or --pipeline NAME (not both)",
         module_main("common.zoo", "download", "oct_ldm", "--pipeline", "cxr_qc", "--dir", "{out}")),
    Case("zoo-verify-no-folder", "downloads", "python -m common.zoo verify --dir missing", "folder not found",
         module_main("common.zoo", "verify", "--dir", "{out}")),
    Case("zoo-index-broken", "downloads", "python -m common.zoo --index broken.json list", "not valid JSON",
         module_main("common.zoo", "--index", "{broken_index}", "list")),
    # ---- pipelines
    Case("pipeline-conditions-missing", "pipelines", "synthetic_cohort --conditions missing.csv", "conditions file",
         _cohort(conditions="/nonexistent/c.csv")),
    Case("pipeline-conditions-range", "pipelines", "synthetic_cohort (a CSV age of 1.5)", "is outside [0, 1]: normalise it",
         _cohort(conditions=write("c.csv", "gender,age,ventricular_vol,brain_vol\n1,1.5,0.5,0.5\n"))),
    Case("pipeline-conditions-column", "pipelines", "synthetic_cohort (a CSV without brain_vol)", "lacks column(s) brain_vol",
         _cohort(conditions=write("c.csv", "gender,age,ventricular_vol\n1,0.5,0.5\n"))),
    Case("pipeline-conditions-text", "pipelines", "synthetic_cohort (a CSV age of 'old')", "age='old' is not a number",
         _cohort(conditions=write("c.csv", "gender,age,ventricular_vol,brain_vol\n1,old,0.5,0.5\n"))),
    Case("pipeline-prompts-missing", "pipelines", "cxr_qc --prompts_file missing.txt", "prompt file",
         pipeline("cxr_qc", prompts_file="/nonexistent/p.txt")),
    Case("pipeline-prompts-empty", "pipelines", "cxr_qc --prompts_file EMPTY.txt", "has no non-empty lines",
         pipeline("cxr_qc", prompts_file=write("p.txt", "\n  \n"))),
    Case("pipeline-real-datalist-missing", "pipelines", "cxr_qc --real_datalist missing.json", "does not exist",
         pipeline("cxr_qc", prompts_file=write("p.txt", "Small left pleural effusion.\n"),
                  real_datalist="/nonexistent/datalist.json")),
    Case("pipeline-unknown-bundle", "pipelines", "synthetic_cohort with a step naming bundle no_such",
         "bundle 'no_such' is not in bundles: fetch it with `python -m common.zoo download no_such`",
         _cohort(steps=steps_with(lambda s: s[0].update(bundle="no_such")))),
    Case("pipeline-duplicate-step", "pipelines", "synthetic_cohort with two steps named sample", "is used twice",
         _cohort(steps=steps_with(lambda s: s[1].update(name="sample")))),
    Case("pipeline-forward-reference", "pipelines", "synthetic_cohort with a step reading a later step",
         "which is not an earlier step", _cohort(steps=steps_with(lambda s: s.insert(0, s.pop(1))))),
    Case("pipeline-step-fails", "pipelines", "synthetic_cohort with one condition (MS-SSIM diversity needs two samples)",
         "step 'evaluate'", _cohort(conditions=write("c.csv", "gender,age,ventricular_vol,brain_vol\n1,0.5,0.5,0.5\n"),
                                    metrics=["ms_ssim_diversity"])),
]

# cases whose run leaves finished pipeline steps behind by design (they are kept, marked complete)
KEEPS_FINISHED_STEPS = {"pipeline-step-fails"}
