"""Clinical pipelines: bundles chained by one JSON config, run in-process, with provenance and resume.

A pipeline config (``pipelines/*.json``) is run like any bundle (``python -m monai.bundle run --config_file
pipelines/NAME.json ...``); its ``run`` calls ``run_pipeline`` with a list of steps (``steps.Step``): a bundle
run through MONAI's ``ConfigWorkflow``, or a glue function of this package (``glue``). Every step writes into
its own folder ``OUT/<step>``, atomically; ``OUT/provenance.json`` records what ran (``provenance``), so a rerun
skips the steps whose inputs and outputs are unchanged. Names resolve lazily.
"""

from __future__ import annotations

from common._lazy import lazy_exports

_EXPORTS = {
    "run_pipeline": "runner",
    "PipelineError": "steps",
    "Step": "steps",
    "pipeline_bundles": "steps",
    "read_lines": "glue",
    "read_conditions": "glue",
    "datalist_images": "glue",
    "cohort_datalist": "glue",
    "flag_low_likelihood": "glue",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
