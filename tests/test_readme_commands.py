"""Every command in the README's ``bash`` blocks runs: `snakemake` lines as dry runs in a copy of the
workflow (so nothing here touches the repository's work/, results/ or report/), `kdad` lines as they
are, `make` targets as `make -n`. A README line that stops working fails here."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# lines a dry run cannot show; each is run for real by the test named
COVERED_ELSEWHERE = {"--report": "test_workflow.py::test_snakemake_report_collects_the_figures"}


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            command = line.split(" #", 1)[0].strip()
            if command:
                lines.append(command)
    return lines


COMMANDS = readme_commands()


def test_the_readme_has_commands():
    assert any(c.startswith("snakemake") for c in COMMANDS) and any(c.startswith("kdad") for c in COMMANDS)


def _workflow_copy(tmp: Path) -> Path:
    for name in ("Snakefile", "rules", "config", "profiles"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp / name)
    return tmp


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.startswith("snakemake")])
def test_readme_snakemake_line_dry_runs(command, tmp_path):
    argv = shlex.split(command)[1:]
    skip = [why for flag, why in COVERED_ELSEWHERE.items() if flag in argv]
    if skip:
        pytest.skip(f"run for real in {skip[0]}")
    if "--profile" in argv and shutil.which("sbatch") is None:
        pytest.importorskip("snakemake_executor_plugin_slurm")
    cwd = _workflow_copy(tmp_path)
    if "--unlock" not in argv:
        argv.append("-n")
    proc = subprocess.run([sys.executable, "-m", "snakemake", *argv], capture_output=True, text=True, cwd=cwd,
                          timeout=600)
    assert proc.returncode == 0, f"{command}\n{proc.stdout[-1500:]}\n{proc.stderr[-3000:]}"
    assert not (ROOT / "x").exists()


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.startswith("kdad")])
def test_readme_kdad_line_runs(command):
    proc = subprocess.run([sys.executable, "-m", "kdad", *shlex.split(command)[1:]], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    assert proc.returncode == 0, f"{command}\n{proc.stdout[-1500:]}\n{proc.stderr[-3000:]}"
    assert proc.stdout.strip()


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.startswith("make")])
def test_readme_make_target_exists(command):
    proc = subprocess.run(["make", "-n", *shlex.split(command)[1:]], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
