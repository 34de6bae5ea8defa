"""ci/verify_bundles.py: every rule is broken in a copy of the fixture bundle and the exact message is checked."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from common.zoo import METADATA_SCHEMA_PATH
from common.zoo.index import write_index
from common.zoo.verify import check_models_size, main, verify_bundles

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "tiny_ldm"
B = "tiny_ldm"
HINT = "run python ci/build_index.py"


class Zoo:
    """A copy of the fixture bundle in tmp_path with a fresh index."""

    def __init__(self, root: Path):
        self.bundles = root / "bundles"
        self.bundle = self.bundles / B
        self.index = root / "index.json"
        shutil.copytree(FIXTURE, self.bundle)
        write_index(self.index, self.bundles)

    def rebuild(self) -> None:
        write_index(self.index, self.bundles)

    def messages(self, rebuild: bool = True) -> list[str]:
        """Verifier lines; ``rebuild`` first refreshes the index so only the rule under test fails."""
        if rebuild:
            self.rebuild()
        failures, _ = verify_bundles(self.bundles, self.index)
        return [str(f) for f in failures]

    def edit_json(self, rel: str, fn) -> None:
        path = self.bundle / rel
        data = json.loads(path.read_text())
        fn(data)
        path.write_text(json.dumps(data, indent=2))


@pytest.fixture()
def zoo(tmp_path: Path) -> Zoo:
    return Zoo(tmp_path)


def test_fixture_bundle_passes_and_cli_summary(zoo: Zoo, capsys):
    assert zoo.messages(rebuild=False) == []
    assert main(["--bundles-dir", str(zoo.bundles), "--index", str(zoo.index)]) == 0
    assert capsys.readouterr().out.strip() == "verify_bundles: 1 bundle(s) checked, all rules pass"


def test_cli_prints_one_line_per_failure_and_exits_1(zoo: Zoo, capsys):
    (zoo.bundle / "LICENSE").unlink()
    zoo.rebuild()
    rc = main(["--bundles-dir", str(zoo.bundles), "--index", str(zoo.index), B, "nope"])
    out = capsys.readouterr().out.splitlines()
    assert rc == 1
    assert out == [
        f"nope: -: bundle-missing: no bundle folder {zoo.bundles / 'nope'}: check the name",
        f"{B}: LICENSE: required-file: missing: the bundle contract requires it",
        "verify_bundles: 1 bundle(s) checked, 2 failure(s)",
    ]


def test_cli_script_bad_bundles_dir(tmp_path: Path):
    missing = tmp_path / "nowhere"
    proc = subprocess.run(
        [sys.executable, str(REPO / "ci" / "verify_bundles.py"), "--bundles-dir", str(missing)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"error: {missing}: bundles folder not found: pass an existing --bundles-dir"


@pytest.mark.parametrize("rel", ["LICENSE", "configs/paper.json", "large_files.yml", "configs/evaluate.json"])
def test_required_file(zoo: Zoo, rel: str):
    (zoo.bundle / rel).unlink()
    assert zoo.messages() == [f"{B}: {rel}: required-file: missing: the bundle contract requires it"]


def test_required_models_folder(zoo: Zoo):
    shutil.rmtree(zoo.bundle / "models")
    assert zoo.messages() == [f"{B}: models/: required-file: missing folder: the bundle contract requires it"]


def test_no_python(zoo: Zoo):
    (zoo.bundle / "configs" / "helper.py").write_text("print('hi')\n")
    assert zoo.messages() == [
        f"{B}: configs/helper.py: no-python: Python file in a bundle: move the code to common/ and reference it "
        "from the JSON configs"
    ]


@pytest.mark.parametrize(
    "mutate, detail",
    [
        (lambda m: m.pop("authors"), "(top level): 'authors' is a required property"),
        (lambda m: m.pop("schema"), "(top level): 'schema' is a required property"),
        (lambda m: m.update(version="1.0"), "version: '1.0' does not match"),
        (
            lambda m: m["network_data_format"]["inputs"]["noise"].pop("modality"),
            "network_data_format.inputs.noise: 'modality' is a required property",
        ),
        (
            lambda m: m["network_data_format"]["outputs"]["image"].update(value_range=[0]),
            "network_data_format.outputs.image.value_range: matches none of the allowed forms ([0] is expected to be empty; "
            "[0] is too short)",
        ),
        (
            lambda m: m["network_data_format"]["outputs"]["image"].update(is_patch_data="false"),
            "network_data_format.outputs.image.is_patch_data: 'false' is not of type 'boolean'",
        ),
        (lambda m: m.update(sources={"huggingface": {"revision": "main"}}), "sources.huggingface: 'repo_id' is a required property"),
        (
            lambda m: m.pop("required_packages_version"),
            "(top level): matches none of the allowed forms ('optional_packages_version' is a required property; "
            "'required_packages_version' is a required property)",
        ),
    ],
)
def test_metadata_schema(zoo: Zoo, mutate, detail: str):
    zoo.edit_json("configs/metadata.json", mutate)
    msgs = zoo.messages()
    assert len(msgs) == 1, msgs
    assert msgs[0].startswith(f"{B}: configs/metadata.json: metadata-schema: {detail}")


def test_metadata_bad_json_is_one_failure(zoo: Zoo):
    meta = zoo.bundle / "configs" / "metadata.json"
    size = meta.stat().st_size
    meta.write_text("{bad")  # the index cannot be rebuilt: the old one also sees the changed file
    assert zoo.messages(rebuild=False) == [
        f"{B}: configs/metadata.json: config-parse: not valid JSON: Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1)",
        f"{B}: configs/metadata.json: index-file: size 4 bytes, the index lists {size}",
    ]


def test_monai_verify_metadata_accepts_local_schema(zoo: Zoo):
    from monai.bundle import verify_metadata

    meta = zoo.bundle / "configs" / "metadata.json"
    verify_metadata(meta_file=str(meta), filepath=str(METADATA_SCHEMA_PATH))  # no network: the file exists
    zoo.edit_json("configs/metadata.json", lambda m: m.pop("network_data_format"))
    with pytest.raises(ValueError, match="'network_data_format' is a required property"):
        verify_metadata(meta_file=str(meta), filepath=str(METADATA_SCHEMA_PATH))


def test_config_parse_bad_json(zoo: Zoo):
    (zoo.bundle / "configs" / "train.json").write_text('{"run": [}')
    msgs = zoo.messages()
    assert len(msgs) == 1, msgs
    assert msgs[0].startswith(f"{B}: configs/train.json: config-parse: cannot load (JSONDecodeError): Expecting value")


def test_config_parse_bad_macro(zoo: Zoo):
    zoo.edit_json("configs/evaluate.json", lambda c: c.update(metric2="%no_such_item"))
    msgs = zoo.messages()
    assert len(msgs) == 1, msgs
    assert msgs[0].startswith(f"{B}: configs/evaluate.json (over configs/inference.json): config-parse: "
                              "ConfigParser.parse fails (KeyError)")


def test_config_ref(zoo: Zoo):
    zoo.edit_json("configs/train.json", lambda c: c.update(run=["$print(@optimiser)"]))
    assert zoo.messages() == [f"{B}: configs/train.json (over configs/inference.json): config-ref: `run#0` refers to "
                              "`@optimiser`, which no config defines"]


def test_config_ref_in_overlay(zoo: Zoo):
    zoo.edit_json("configs/multi_gpu_train.json", lambda c: c["network"].update(module="$@net_def.to(@device)"))
    assert zoo.messages() == [
        f"{B}: configs/multi_gpu_train.json (over configs/inference.json, configs/train.json): config-ref: "
        "`network#module` refers to "
        "`@net_def`, which no config defines"
    ]


@pytest.mark.parametrize(
    "target",
    ["monai.networks.nets.DiffusionModelUNett", "common.conditioning.base.NoSuchThing", "NoSuchMonaiComponent"],
)
def test_target(zoo: Zoo, target: str):
    zoo.edit_json("configs/inference.json", lambda c: c["network_def"].update(_target_=target))
    assert zoo.messages() == [
        f"{B}: configs/inference.json: target: `network_def`: `{target}` not found: give the full dotted path of "
        "an existing class or function"
    ]


def test_target_in_overlay_file(zoo: Zoo):
    zoo.edit_json("configs/paper.json", lambda c: c.update(extra={"_target_": "torch.nn.NoLayer"}))
    msgs = zoo.messages()
    assert msgs == [
        f"{B}: configs/paper.json: target: `extra`: `torch.nn.NoLayer` not found: give the full dotted path of "
        "an existing class or function"
    ]


@pytest.mark.parametrize(
    "expr, detail",
    [
        ("$import commonx.weights", "module `commonx.weights` does not import (ModuleNotFoundError: No module named 'commonx')"),
        ("$from common.conditioning.base import Condition, Nope", "`Nope` not found in module `common.conditioning.base`"),
        ("$import (", "is not valid Python"),
    ],
)
def test_target_imports(zoo: Zoo, expr: str, detail: str):
    zoo.edit_json("configs/inference.json", lambda c: c["imports"].append(expr))
    msgs = zoo.messages()
    assert len(msgs) == 1, msgs
    assert msgs[0].startswith(f"{B}: configs/inference.json: target: `imports#2`")
    assert detail in msgs[0]


@pytest.mark.parametrize("rel", ["configs/inference.json", "configs/train.json", "configs/evaluate.json"])
def test_run_id(zoo: Zoo, rel: str):
    zoo.edit_json(rel, lambda c: c.pop("run"))
    assert zoo.messages() == [f"{B}: {rel}: run-id: no `run` id: `python -m monai.bundle run` needs it as the entry point"]


@pytest.mark.parametrize("rel, key, missing", [
    ("configs/inference.json", "batch_size", "configs/inference.json: override-vocabulary: no id for batch_size"),
    ("configs/train.json", "resume", "configs/train.json (over configs/inference.json): override-vocabulary: no id for resume"),
    ("configs/evaluate.json", "report_path", "configs/evaluate.json (over configs/inference.json): override-vocabulary: "
                                             "no id for report_path"),
])
def test_override_vocabulary(zoo: Zoo, rel: str, key: str, missing: str):
    zoo.edit_json(rel, lambda c: c.pop(key))
    msgs = zoo.messages()
    assert len(msgs) == 1 and msgs[0].startswith(f"{B}: {missing}"), msgs
    assert "must be settable" in msgs[0]


def test_override_vocabulary_of_a_diffusion_sampler(zoo: Zoo):
    zoo.edit_json("configs/inference.json", lambda c: c.update(sampler={"_target_": "common.sampling.LatentDiffusionSampler"}))
    assert zoo.messages() == [f"{B}: configs/inference.json: override-vocabulary: no id for guidance_scale: the shared "
                              "overrides (docs/CONTRACTS.md) must be settable"]


def test_override_vocabulary_of_the_conditioner(zoo: Zoo):
    zoo.edit_json("configs/inference.json", lambda c: c.update(
        conditioner={"_target_": "common.conditioning.ClassConditioner", "class_names": ["a", "b"]}))
    assert zoo.messages() == [f"{B}: configs/inference.json: override-vocabulary: no id for class: the shared overrides "
                              "(docs/CONTRACTS.md) must be settable"]


def test_model_card(zoo: Zoo):
    card = zoo.bundle / "docs" / "README.md"
    text = card.read_text().replace("## Samples\n", "Samples\n").replace("## License\n", "```\n## License\n```\n")
    card.write_text(text)
    assert zoo.messages() == [f"{B}: docs/README.md: model-card: missing section(s) `## Samples`, `## License`"]


def test_large_files_bad_entry(zoo: Zoo):
    lf = zoo.bundle / "large_files.yml"
    lf.write_text(lf.read_text().replace('hash_type: ""', 'hash_type: "crc32"'))
    assert zoo.messages() == [f"{B}: large_files.yml: large-files: large_files[0].hash_type `crc32` is not md5|sha1|sha256|sha512"]


def test_large_files_unparseable(zoo: Zoo):
    (zoo.bundle / "large_files.yml").write_text("large_files: [\n")
    msgs = zoo.messages(rebuild=False)  # the index cannot be rebuilt from a broken file
    assert f"{B}: large_files.yml: large-files: cannot parse (ParserError): fix the YAML/JSON syntax" in msgs


def test_models_size(zoo: Zoo):
    size = (zoo.bundle / "models" / "model.safetensors").stat().st_size
    assert check_models_size(zoo.bundle, limit=size) == []
    [fail] = check_models_size(zoo.bundle, limit=size - 1)
    assert str(fail) == (
        f"{B}: models/: models-size: shipped weights are {size} bytes, over the {size - 1}-byte limit: "
        "publish larger weights through large_files.yml"
    )


def test_index_file_sha256_mismatch(zoo: Zoo):
    weights = zoo.bundle / "models" / "model.safetensors"
    index = json.loads(zoo.index.read_text())
    listed = {f["path"]: f for f in index["bundles"][B]["files"]}["models/model.safetensors"]
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes
    weights.write_bytes(bytes(data))
    import hashlib

    digest = hashlib.sha256(bytes(data)).hexdigest()
    assert zoo.messages(rebuild=False) == [
        f"{B}: models/model.safetensors: index-file: sha256 {digest}, the index lists {listed['sha256']}"
    ]


def test_index_file_size_and_missing(zoo: Zoo):
    weights = zoo.bundle / "models" / "model.safetensors"
    size = weights.stat().st_size
    weights.write_bytes(weights.read_bytes()[:-8])
    assert zoo.messages(rebuild=False) == [f"{B}: models/model.safetensors: index-file: size {size - 8} bytes, the index lists {size}"]
    weights.unlink()
    assert zoo.messages(rebuild=False) == [
        f"{B}: models/model.safetensors: index-file: listed in the index but missing: {HINT} or restore the file"
    ]


def test_index_stale_field_and_new_file(zoo: Zoo):
    zoo.edit_json("configs/metadata.json", lambda m: m.update(version="0.2.0", changelog={"0.2.0": "x", "0.1.0": "y"}))
    (zoo.bundle / "models" / "extra.safetensors").write_bytes(b"\0" * 16)
    msgs = zoo.messages(rebuild=False)
    assert f'{B}: model_zoo_index.json: index-stale: `version` is "0.1.0" in the index but "0.2.0" in the bundle: {HINT}' in msgs
    assert f"{B}: model_zoo_index.json: index-stale: files not in the index: models/extra.safetensors: {HINT}" in msgs
    assert any(m.startswith(f"{B}: configs/metadata.json: index-file: size ") for m in msgs), msgs  # edited file
    assert len(msgs) == 3, msgs
    zoo.rebuild()
    assert zoo.messages(rebuild=False) == []


def test_index_stale_bundle_sets(zoo: Zoo):
    index = json.loads(zoo.index.read_text())
    index["bundles"]["gone_bundle"] = dict(index["bundles"][B], name="gone_bundle")
    del index["bundles"][B]
    zoo.index.write_text(json.dumps(index))
    assert zoo.messages(rebuild=False) == [
        f"gone_bundle: index.json: index-stale: listed in the index but {zoo.bundles / 'gone_bundle'} does not exist: {HINT}",
        f"{B}: model_zoo_index.json: index-stale: bundle not in the index: {HINT}",
    ]


def test_index_missing(zoo: Zoo):
    zoo.index.unlink()
    assert zoo.messages(rebuild=False) == [
        "zoo: index.json: index-stale: index not found: run `python ci/build_index.py` or pass the index path"
    ]


def test_depends_on(zoo: Zoo):
    zoo.edit_json("configs/metadata.json", lambda m: m.update(depends_on=["brain_ldm_3d"]))
    assert zoo.messages() == [f"{B}: configs/metadata.json: depends-on: `brain_ldm_3d` is not a bundle of this zoo"]
    shutil.copytree(FIXTURE, zoo.bundles / "brain_ldm_3d")
    assert zoo.messages() == []


def test_real_bundles_and_index(capsys):
    """The repository's own bundles/ and model_zoo_index.json pass every rule."""
    rc = main([])  # defaults: the repo's bundles/ (may be absent: no bundles) and model_zoo_index.json
    out = capsys.readouterr().out
    assert rc == 0, out
    assert out.strip().splitlines()[-1].endswith("all rules pass")
