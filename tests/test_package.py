"""The package contract: `import common` is light, and CI runs the very test command the README gives."""

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_import_common_is_light() -> None:
    code = "import time, sys; t=time.perf_counter(); import common; print(time.perf_counter()-t); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    seconds, torch_loaded = out.stdout.split()
    assert float(seconds) < 3.0
    assert torch_loaded == "False", "import common must not import torch"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", readme, flags=re.S)
    assert len(blocks) >= 2, "README must open with two command blocks"
    test_cmd = blocks[1].strip().splitlines()[-1].split("&&")[-1].strip()
    assert test_cmd.startswith("python -m pytest")
    ci = (REPO / ".ci" / "run").read_text()
    assert test_cmd in ci, f"`.ci/run` must call the README's test command: {test_cmd}"
    assert "pip install -q torch==2.13.0" in ci or "pip install torch==2.13.0" in ci
