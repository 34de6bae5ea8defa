"""Bundle verifier: checks every bundle against the zoo's bundle contract (docs/CONTRACTS.md).

Each broken rule is one ``Failure`` printed as ``<bundle>: <file>: <rule>: <detail>``. Rules (names are
stable, tests and docs/verify.md refer to them):

- ``required-file``: a file or folder of the contract is missing
- ``no-python``: a ``.py`` / ``.pyc`` file in the bundle
- ``metadata-schema``: configs/metadata.json breaks the metadata schema (common/zoo/schema/meta_schema.json)
- ``large-files``: large_files.yml does not parse or has a bad entry
- ``config-parse``: a config does not load, or ConfigParser.parse fails (bad macro / relative id)
- ``config-ref``: an ``@id`` reference names no item (base configs alone, overlays over their base)
- ``target``: a ``_target_`` or an ``imports`` entry does not resolve
- ``run-id``: inference.json / train.json / evaluate.json lacks the ``run`` id
- ``override-vocabulary``: a config stack lacks an id of the shared override vocabulary of its family
- ``model-card``: docs/README.md lacks a model-card ``## `` section
- ``models-size``: shipped weights in models/ over the size limit
- ``index-file``: a file the index lists is missing or has another size / sha256
- ``index-stale``: the index differs from a rebuild (or is missing / unreadable)
- ``depends-on``: depends_on names a bundle that is not in the zoo
- ``bundle-missing``: a bundle named on the command line does not exist

Nothing is instantiated: ``_target_`` strings are resolved the way MONAI's ConfigComponent does
(short names through MONAI's ComponentLocator, dotted names through ``pydoc.locate``), ``imports`` entries
are imported, so the check is fast and has no side effects beyond module imports. Heavy imports (monai,
jsonschema) happen inside the functions.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from common.zoo import METADATA_SCHEMA_PATH
from common.zoo.index import (
    DEFAULT_BUNDLES_DIR,
    DEFAULT_INDEX_PATH,
    DOWNLOAD_DIR,
    METADATA_PATH,
    ZooIndexError,
    index_entry,
    list_bundle_dirs,
    load_index,
    published_paths,
    read_large_files,
    sha256_file,
)

REQUIRED_FILES = (
    "configs/metadata.json",
    "configs/inference.json",
    "configs/train.json",
    "configs/evaluate.json",
    "configs/multi_gpu_train.json",
    "configs/paper.json",
    "docs/README.md",
    "large_files.yml",
    "LICENSE",
)
REQUIRED_DIRS = ("models",)
RUN_ID = "run"
RUN_CONFIGS = ("configs/inference.json", "configs/train.json", "configs/evaluate.json")
BASE_CONFIG = "configs/inference.json"
# Every other config is an overlay read over inference.json (which defines the networks once), as
# ``--config_file "[inference.json, overlay]"`` does; these are read over a longer stack.
STACKS = {"configs/multi_gpu_train.json": ("configs/inference.json", "configs/train.json")}
# The shared override vocabulary (docs/CONTRACTS.md): ids every bundle's config stack exposes, so that users
# and pipelines drive any bundle the same way. Sampling ids apply to inference.json; conditioning ids by the
# conditioner the bundle uses.
VOCABULARY = {
    "configs/inference.json": ("bundle_root", "model_dir", "output_dir", "device", "seed", "num_samples", "batch_size",
                               "progress"),
    "configs/train.json": ("bundle_root", "output_dir", "datalist", "device", "seed", "resume", "export_to_bundle",
                           "model_dir"),
    "configs/evaluate.json": ("bundle_root", "samples_dir", "datalist", "report_path", "metrics", "device"),
}
DIFFUSION_VOCABULARY = ("num_inference_steps", "scheduler", "guidance_scale")
CONDITIONER_VOCABULARY = {
    "CovariateConditioner": ("gender", "age", "ventricular_vol", "brain_vol"),
    "TextConditioner": ("prompt",),
    "ClassConditioner": ("class",),
    "ControlConditioner": ("input_image", "input_dir", "conditioning_scale"),
    "NoiseLevelConditioner": ("noise_level",),
}
MODEL_CARD_SECTIONS = ("Overview", "Usage", "Training", "Metrics", "Samples", "Limitations", "License")
FORBIDDEN_SUFFIXES = (".py", ".pyc")
CONFIG_SUFFIXES = (".json", ".yaml", ".yml")
MAX_MODELS_BYTES = 50_000_000  # DESIGN.md: shipped weights under 50 MB per bundle
REBUILD_HINT = "run python ci/build_index.py"
_MAX_DETAIL = 240


@dataclass(frozen=True)
class Failure:
    """One broken rule: which bundle, which file (relative to the bundle), which rule, what exactly."""

    bundle: str
    file: str
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.bundle}: {self.file}: {self.rule}: {self.detail}"


def _short(text: Any, limit: int = _MAX_DETAIL) -> str:
    """One line, bounded length: schema errors can quote whole objects."""
    one = " ".join(str(text).split())
    return one if len(one) <= limit else one[: limit - 3] + "..."


# ---------------------------------------------------------------- files


def check_required_files(bundle_dir: Path) -> list[Failure]:
    """Every file and folder the contract names is present."""
    out = []
    for rel in REQUIRED_FILES:
        if not (bundle_dir / rel).is_file():
            out.append(Failure(bundle_dir.name, rel, "required-file", "missing: the bundle contract requires it"))
    for rel in REQUIRED_DIRS:
        if not (bundle_dir / rel).is_dir():
            out.append(Failure(bundle_dir.name, rel + "/", "required-file", "missing folder: the bundle contract requires it"))
    return out


def _walk_files(bundle_dir: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(bundle_dir):
        dirnames.sort()
        for fname in sorted(filenames):
            yield Path(dirpath) / fname


def check_no_python(bundle_dir: Path) -> list[Failure]:
    """Bundles hold configs, weights and docs: code belongs in ``common``."""
    return [
        Failure(
            bundle_dir.name,
            p.relative_to(bundle_dir).as_posix(),
            "no-python",
            "Python file in a bundle: move the code to common/ and reference it from the JSON configs",
        )
        for p in _walk_files(bundle_dir)
        if p.suffix in FORBIDDEN_SUFFIXES
    ]


def check_models_size(bundle_dir: Path, limit: int = MAX_MODELS_BYTES) -> list[Failure]:
    """Shipped weights stay small (published weights are downloaded through large_files.yml instead)."""
    models = bundle_dir / "models"
    if not models.is_dir():
        return []
    try:
        published = published_paths(bundle_dir)
    except ZooIndexError:
        published = set()
    total = 0
    for p in _walk_files(models):
        rel = p.relative_to(bundle_dir).as_posix()
        if p.is_file() and rel not in published and not rel.startswith(DOWNLOAD_DIR + "/"):
            total += p.stat().st_size
    if total > limit:
        return [
            Failure(
                bundle_dir.name,
                "models/",
                "models-size",
                f"shipped weights are {total} bytes, over the {limit}-byte limit: publish larger weights through large_files.yml",
            )
        ]
    return []


# ---------------------------------------------------------------- metadata


def load_metadata_schema(path: str | os.PathLike | None = None) -> dict:
    """The repo's copy of the MONAI bundle metadata schema (validates offline)."""
    return json.loads(Path(path or METADATA_SCHEMA_PATH).read_text(encoding="utf-8"))


def _json_path(parts: Iterable[Any]) -> str:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)
    return path.lstrip(".") or "(top level)"


def check_metadata(bundle_dir: Path, schema: dict) -> list[Failure]:
    """``configs/metadata.json`` is JSON and valid against the metadata schema: one failure per schema error."""
    import jsonschema

    meta_path = bundle_dir / METADATA_PATH
    if not meta_path.is_file():
        return []  # reported by required-file
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return [Failure(bundle_dir.name, METADATA_PATH, "config-parse", f"not valid JSON: {_short(e)}")]
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(meta), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    return [
        Failure(bundle_dir.name, METADATA_PATH, "metadata-schema", f"{_json_path(e.absolute_path)}: {_schema_message(e)}")
        for e in errors
    ]


def _schema_message(error: Any) -> str:
    """A schema error in one short line; anyOf / oneOf errors list what each alternative wanted."""
    if error.validator in ("anyOf", "oneOf") and error.context:
        wanted = "; ".join(sorted({_short(c.message, 80) for c in error.context}))
        return _short(f"matches none of the allowed forms ({wanted})")
    return _short(error.message)


def check_large_files(bundle_dir: Path) -> list[Failure]:
    """``large_files.yml`` parses; entries are relative paths inside the bundle with a known hash type."""
    lf_name = "large_files.yml"
    try:
        entries = read_large_files(bundle_dir)
    except ZooIndexError as e:
        return [Failure(bundle_dir.name, lf_name, "large-files", _short(str(e).split(": ", 1)[-1]))]
    out = []
    for i, item in enumerate(entries):
        path = item["path"]
        if Path(path).is_absolute() or ".." in Path(path).parts:
            out.append(Failure(bundle_dir.name, lf_name, "large-files", f"large_files[{i}].path `{path}` must be relative, inside the bundle"))
        hash_type = str(item.get("hash_type") or "").lower()
        if hash_type and hash_type not in ("md5", "sha1", "sha256", "sha512"):
            out.append(Failure(bundle_dir.name, lf_name, "large-files", f"large_files[{i}].hash_type `{hash_type}` is not md5|sha1|sha256|sha512"))
        hash_val = str(item.get("hash_val") or "")
        if hash_type == "sha256" and hash_val and not re.fullmatch(r"[0-9a-fA-F]{64}", hash_val):
            out.append(Failure(bundle_dir.name, lf_name, "large-files", f"large_files[{i}].hash_val is not a 64-hex-digit sha256"))
        if not re.match(r"^(https?|file)://", item["url"]):
            out.append(Failure(bundle_dir.name, lf_name, "large-files", f"large_files[{i}].url `{_short(item['url'], 80)}` is not an http(s):// or file:// URL"))
    return out


# ---------------------------------------------------------------- configs


def _iter_targets(config: Any, id_: str = "") -> Iterator[tuple[str, Any]]:
    """(config id, _target_ value) of every component in a config, ids in MONAI's ``a#b#0`` form."""
    if isinstance(config, dict):
        if "_target_" in config:
            yield id_, config["_target_"]
        for k, v in config.items():
            yield from _iter_targets(v, f"{id_}#{k}" if id_ else str(k))
    elif isinstance(config, list):
        for i, v in enumerate(config):
            yield from _iter_targets(v, f"{id_}#{i}" if id_ else str(i))


class TargetResolver:
    """Resolves ``_target_`` strings like MONAI's ConfigComponent, without instantiating; caches results."""

    def __init__(self) -> None:
        self._cache: dict[str, str | None] = {}
        self._locator = None

    def error(self, target: str) -> str | None:
        """None when ``target`` resolves to a class or callable, else why it does not."""
        if target not in self._cache:
            self._cache[target] = self._resolve(target)
        return self._cache[target]

    def _resolve(self, target: str) -> str | None:
        import pydoc

        name = target
        if "." not in target:
            if self._locator is None:
                from monai.bundle.config_item import ComponentLocator

                self._locator = ComponentLocator()
            module = self._locator.get_component_module_name(target)
            if isinstance(module, list):
                module = module[0]
            if module:
                name = f"{module}.{target}"
        try:
            obj = pydoc.locate(name)
        except pydoc.ErrorDuringImport as e:
            cause = getattr(e, "value", e)
            return f"importing it fails ({type(cause).__name__}: {_short(cause, 120)})"
        except Exception as e:  # a module whose import raises something pydoc does not wrap
            return f"importing it fails ({type(e).__name__}: {_short(e, 120)})"
        if obj is None:
            return "not found: give the full dotted path of an existing class or function"
        if not callable(obj):
            return "resolves to something that is not a class or function"
        return None


def _load_config(bundle: str, rel: str, path: Path) -> tuple[dict | None, list[Failure]]:
    from monai.bundle import ConfigParser

    try:
        config = ConfigParser.load_config_file(path)
    except Exception as e:  # JSONDecodeError, yaml errors, unsupported suffix
        return None, [Failure(bundle, rel, "config-parse", f"cannot load ({type(e).__name__}): {_short(e)}")]
    if not isinstance(config, dict):
        return None, [Failure(bundle, rel, "config-parse", "the top level must be a JSON object")]
    return config, []


def _check_targets(bundle: str, rel: str, config: dict, resolver: TargetResolver) -> list[Failure]:
    out = []
    for id_, target in _iter_targets(config):
        if not isinstance(target, str):
            out.append(Failure(bundle, rel, "target", f"`{id_}`: _target_ must be a string"))
            continue
        if target.startswith(("$", "@", "%")):
            continue  # resolved at run time from an expression / reference / macro
        err = resolver.error(target)
        if err:
            out.append(Failure(bundle, rel, "target", f"`{id_}`: `{target}` {err}"))
    return out


def _import_error(module: str, names: list[str]) -> str | None:
    """None when ``module`` imports (and has ``names``, as attributes or submodules), else why not."""
    import importlib

    try:
        mod = importlib.import_module(module)
    except Exception as e:  # ModuleNotFoundError, or an error raised while importing
        return f"module `{module}` does not import ({type(e).__name__}: {_short(e, 120)})"
    for name in names:
        if name != "*" and not hasattr(mod, name):
            try:
                importlib.import_module(f"{module}.{name}")
            except Exception:
                return f"`{name}` not found in module `{module}`"
    return None


def _check_imports(bundle: str, rel: str, config: dict) -> list[Failure]:
    """Every ``"$import x"`` / ``"$from x import y"`` in the top-level ``imports`` list resolves."""
    import ast

    imports = config.get("imports", [])
    if not isinstance(imports, list):
        return [Failure(bundle, rel, "target", "`imports` must be a list of \"$import ...\" strings")]
    out = []
    for i, expr in enumerate(imports):
        if not (isinstance(expr, str) and expr.startswith("$")):
            out.append(Failure(bundle, rel, "target", f"`imports#{i}` must be a \"$import ...\" string"))
            continue
        try:
            tree = ast.parse(expr[1:].strip())
        except SyntaxError as e:
            out.append(Failure(bundle, rel, "target", f"`imports#{i}` is not valid Python ({e.msg})"))
            continue
        for node in tree.body:
            if isinstance(node, ast.Import):
                checks = [(a.name, []) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                checks = [(node.module, [a.name for a in node.names])]
            else:
                continue
            for module, names in checks:
                err = _import_error(module, names)
                if err:
                    out.append(Failure(bundle, rel, "target", f"`imports#{i}`: {err}"))
    return out


def _check_parse_and_refs(bundle_dir: Path, rels: list[str], label: str) -> list[Failure]:
    """Read ``rels`` (later files over earlier) with the metadata, parse with ConfigParser, check every ``@ref``."""
    from monai.bundle import ConfigParser
    from monai.bundle.reference_resolver import ReferenceResolver

    bundle = bundle_dir.name
    parser = ConfigParser()
    try:
        parser.read_meta(str(bundle_dir / METADATA_PATH))  # `@_meta_#...` references resolve against it
    except Exception:
        pass  # a missing / broken metadata.json is reported by required-file / config-parse already
    try:
        parser.read_config([str(bundle_dir / r) for r in rels])
        parser.parse(reset=True)
    except Exception as e:  # macro to a missing id / file, bad relative id, ...
        return [Failure(bundle, label, "config-parse", f"ConfigParser.parse fails ({type(e).__name__}): {_short(e)}")]
    known = set(parser.ref_resolver.items)
    out, seen = [], set()

    def walk(node: Any, id_: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{id_}#{k}" if id_ else str(k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{id_}#{i}" if id_ else str(i))
        elif isinstance(node, str):
            for ref in ReferenceResolver.match_refs_pattern(node):
                if ref not in known and (id_, ref) not in seen:
                    seen.add((id_, ref))
                    out.append(Failure(bundle, label, "config-ref", f"`{id_}` refers to `@{ref}`, which no config defines"))

    walk(parser.get(), "")
    return out


def check_configs(bundle_dir: Path, resolver: TargetResolver) -> list[Failure]:
    """Every config loads; targets resolve; run ids exist; base configs and overlays parse with valid references."""
    bundle = bundle_dir.name
    configs_dir = bundle_dir / "configs"
    if not configs_dir.is_dir():
        return []
    out: list[Failure] = []
    loaded: dict[str, dict] = {}
    for path in sorted(p for p in configs_dir.rglob("*") if p.is_file() and p.suffix in CONFIG_SUFFIXES):
        rel = path.relative_to(bundle_dir).as_posix()
        if rel == METADATA_PATH:
            continue  # checked against the schema
        config, fails = _load_config(bundle, rel, path)
        out += fails
        if config is not None:
            loaded[rel] = config
            out += _check_imports(bundle, rel, config)
            out += _check_targets(bundle, rel, config, resolver)
    for rel in RUN_CONFIGS:
        if rel in loaded and RUN_ID not in loaded[rel]:
            out.append(Failure(bundle, rel, "run-id", f"no `{RUN_ID}` id: `python -m monai.bundle run` needs it as the entry point"))
    for rel in sorted(loaded):
        stack = [rel] if rel == BASE_CONFIG else [*STACKS.get(rel, (BASE_CONFIG,)), rel]
        if all(r in loaded for r in stack):
            label = rel if len(stack) == 1 else f"{rel} (over {', '.join(stack[:-1])})"
            out += _check_parse_and_refs(bundle_dir, stack, label)
            out += _check_vocabulary(bundle, rel, label, loaded, stack)
    return out


def _check_vocabulary(bundle: str, rel: str, label: str, loaded: dict[str, dict], stack: list[str]) -> list[Failure]:
    """The stack exposes its family's override ids (top-level keys of any config in the stack)."""
    if rel not in VOCABULARY:
        return []
    ids: set[str] = set()
    for r in stack:
        ids |= set(loaded[r])
    need = list(VOCABULARY[rel])
    if rel == BASE_CONFIG:
        targets = dict(_iter_targets(loaded[rel]))  # id -> _target_ of every component
        if str(targets.get("sampler", "")).endswith("LatentDiffusionSampler"):
            need += DIFFUSION_VOCABULARY
        conditioner = str(targets.get("conditioner", "")).rsplit(".", 1)[-1]
        need += CONDITIONER_VOCABULARY.get(conditioner, ())
        if conditioner == "ControlConditioner":  # a translation makes one output per input, not num_samples
            need.remove("num_samples")
    missing = [k for k in need if k not in ids]
    if not missing:
        return []
    return [Failure(bundle, label, "override-vocabulary",
                    f"no id for {', '.join(missing)}: the shared overrides (docs/CONTRACTS.md) must be settable")]


# ---------------------------------------------------------------- docs


_HEADING = re.compile(r"^##\s+(.+?)\s*#*\s*$")


def check_model_card(bundle_dir: Path, sections: tuple[str, ...] = MODEL_CARD_SECTIONS) -> list[Failure]:
    """docs/README.md has every model-card section as a ``## `` heading (``## Usage`` or ``## Usage (CPU)``)."""
    rel = "docs/README.md"
    card = bundle_dir / rel
    if not card.is_file():
        return []
    titles = []
    in_code = False
    for line in card.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        m = None if in_code else _HEADING.match(line)
        if m:
            titles.append(m.group(1))
    missing = [s for s in sections if not any(t == s or t.startswith(s + " ") for t in titles)]
    if missing:
        names = ", ".join(f"`## {s}`" for s in missing)
        return [Failure(bundle_dir.name, rel, "model-card", f"missing section(s) {names}")]
    return []


# ---------------------------------------------------------------- index


def check_index_files(bundle_dir: Path, entry: dict) -> list[Failure]:
    """Every file the index lists for the bundle exists with the listed size and sha256."""
    out = []
    for item in entry.get("files", []):
        rel = item.get("path", "?")
        path = bundle_dir / rel
        if not path.is_file():
            out.append(Failure(bundle_dir.name, rel, "index-file", f"listed in the index but missing: {REBUILD_HINT} or restore the file"))
            continue
        size = path.stat().st_size
        if size != item.get("size"):
            out.append(Failure(bundle_dir.name, rel, "index-file", f"size {size} bytes, the index lists {item.get('size')}"))
            continue
        digest = sha256_file(path)
        if digest != item.get("sha256"):
            out.append(Failure(bundle_dir.name, rel, "index-file", f"sha256 {digest}, the index lists {item.get('sha256')}"))
    return out


def check_index_stale(bundle_dir: Path, entry: dict) -> list[Failure]:
    """A rebuild of the bundle's entry equals the index's (changed / missing files are index-file failures)."""
    try:
        fresh = index_entry(bundle_dir)
    except ZooIndexError:
        return []  # the cause is reported by required-file / metadata-schema / large-files
    bundle = bundle_dir.name
    out = []
    for key in sorted(set(fresh) | set(entry)):
        if key == "files":
            listed = {f.get("path") for f in entry.get("files", [])}
            added = [f["path"] for f in fresh["files"] if f["path"] not in listed]
            if added:
                out.append(Failure(bundle, "model_zoo_index.json", "index-stale", f"files not in the index: {', '.join(added)}: {REBUILD_HINT}"))
        elif fresh.get(key) != entry.get(key):
            out.append(
                Failure(
                    bundle,
                    "model_zoo_index.json",
                    "index-stale",
                    f"`{key}` is {_short(json.dumps(entry.get(key)), 90)} in the index but "
                    f"{_short(json.dumps(fresh.get(key)), 90)} in the bundle: {REBUILD_HINT}",
                )
            )
    return out


def check_depends_on(bundle_dir: Path, known: set[str]) -> list[Failure]:
    """Every bundle named in ``depends_on`` exists in the zoo."""
    try:
        meta = json.loads((bundle_dir / METADATA_PATH).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    deps = meta.get("depends_on", []) if isinstance(meta, dict) else []
    if not isinstance(deps, list):
        return []
    return [
        Failure(bundle_dir.name, METADATA_PATH, "depends-on", f"`{d}` is not a bundle of this zoo")
        for d in deps
        if isinstance(d, str) and d not in known
    ]


# ---------------------------------------------------------------- driver


def verify_bundle(
    bundle_dir: str | os.PathLike,
    index: dict | None = None,
    known_bundles: set[str] | None = None,
    schema: dict | None = None,
    resolver: TargetResolver | None = None,
) -> list[Failure]:
    """All rules on one bundle. ``index`` None skips the index rules; ``known_bundles`` None skips depends-on."""
    bundle_dir = Path(bundle_dir)
    schema = schema if schema is not None else load_metadata_schema()
    resolver = resolver or TargetResolver()
    out = check_required_files(bundle_dir)
    out += check_no_python(bundle_dir)
    out += check_metadata(bundle_dir, schema)
    out += check_large_files(bundle_dir)
    out += check_configs(bundle_dir, resolver)
    out += check_model_card(bundle_dir)
    out += check_models_size(bundle_dir)
    if index is not None:
        entry = index.get("bundles", {}).get(bundle_dir.name)
        if entry is None:
            out.append(Failure(bundle_dir.name, "model_zoo_index.json", "index-stale", f"bundle not in the index: {REBUILD_HINT}"))
        else:
            out += check_index_files(bundle_dir, entry)
            out += check_index_stale(bundle_dir, entry)
    if known_bundles is not None:
        out += check_depends_on(bundle_dir, known_bundles)
    return out


def verify_bundles(
    bundles_dir: str | os.PathLike | None = None,
    index_path: str | os.PathLike | None = None,
    names: list[str] | None = None,
) -> tuple[list[Failure], int]:
    """Verify the bundles under ``bundles_dir`` (all, or ``names``) and the index; returns (failures, bundles checked)."""
    bundles_dir = Path(bundles_dir) if bundles_dir is not None else DEFAULT_BUNDLES_DIR
    index_path = Path(index_path) if index_path is not None else DEFAULT_INDEX_PATH
    index_label = index_path.name
    failures: list[Failure] = []
    try:
        index = load_index(index_path)
    except ZooIndexError as e:
        index = None
        failures.append(Failure("zoo", index_label, "index-stale", _short(str(e).split(": ", 1)[-1])))
    all_dirs = list_bundle_dirs(bundles_dir)
    known = {p.name for p in all_dirs}
    if names:
        dirs = []
        for n in names:
            if n in known:
                dirs.append(bundles_dir / n)
            else:
                failures.append(Failure(n, "-", "bundle-missing", f"no bundle folder {bundles_dir / n}: check the name"))
    else:
        dirs = all_dirs
        if index is not None:
            for name in sorted(set(index["bundles"]) - known):
                failures.append(
                    Failure(name, index_label, "index-stale", f"listed in the index but {bundles_dir / name} does not exist: {REBUILD_HINT}")
                )
    schema = load_metadata_schema()
    resolver = TargetResolver()
    for d in dirs:
        failures += verify_bundle(d, index=index, known_bundles=known, schema=schema, resolver=resolver)
    return failures, len(dirs)


def main(argv: list[str] | None = None) -> int:
    """CLI: print one line per failure and a summary; exit 1 on any failure."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="verify_bundles.py", description="Check every bundle against the zoo's bundle contract and the index."
    )
    parser.add_argument("bundles", nargs="*", help="bundle names to check (default: every bundle)")
    parser.add_argument("--bundles-dir", type=Path, default=None, help="folder of bundles (default: repo bundles/)")
    parser.add_argument("--index", type=Path, default=None, help="index file (default: repo model_zoo_index.json)")
    args = parser.parse_args(argv)
    if args.bundles_dir is not None and not args.bundles_dir.is_dir():
        print(f"error: {args.bundles_dir}: bundles folder not found: pass an existing --bundles-dir", file=sys.stderr)
        return 1
    failures, n = verify_bundles(args.bundles_dir, args.index, args.bundles or None)
    for f in failures:
        print(f)
    if failures:
        print(f"verify_bundles: {n} bundle(s) checked, {len(failures)} failure(s)")
        return 1
    print(f"verify_bundles: {n} bundle(s) checked, all rules pass")
    return 0
