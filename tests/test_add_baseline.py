"""The README's "Adding a baseline" steps, followed literally with a toy baseline, then the DAG."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parent.parent

TOY = '''
from dataclasses import dataclass

import numpy as np

from kdad.methods import Detector, MethodSpec, evaluation_field, register_method


@dataclass
class ToyConfig:
    power: float = evaluation_field(2.0)   # only changes scoring: the workflow re-evaluates, never retrains


class ToyMean(Detector):
    """Distance of each image to the mean training image."""

    def fit(self, images, *, seed, hints=None, checkpoint=None):
        self.mean_ = images.float().mean(0).to(self.device)   # fitted state: attributes ending in _
        return self

    def score(self, images, *, hints=None):
        d = (images.to(self.device).float() - self.mean_.to(self.device)).abs().pow(self.config.power)
        return d.flatten(1).mean(1).cpu().numpy().astype(np.float64)


register_method(MethodSpec("toy_mean", ToyConfig, ToyMean, localizes=False))
'''


def test_add_a_baseline_in_three_steps_and_rerun(tmp_path):
    repo = tmp_path / "repo"
    for part in ("kdad", "baselines", "rules", "config", "Snakefile"):
        src = ROOT / part
        (shutil.copytree if src.is_dir() else shutil.copy)(src, repo / part)
    readme = (ROOT / "README.md").read_text()
    assert "baselines/mymethod.py" in readme and "MODULES" in readme

    # 1. the file
    (repo / "baselines" / "toy_mean.py").write_text(TOY)
    # 2. the registry line
    init = repo / "baselines" / "__init__.py"
    text = init.read_text()
    text = re.sub(r"MODULES: list\[str\] = \[", 'MODULES: list[str] = ["toy_mean", ', text, count=1)
    init.write_text(text)
    # 3. the config line (on the tiny config, so the test stays small)
    config = yaml.safe_load((ROOT / "tests" / "data" / "tiny.yaml").read_text().replace("WORK", str(tmp_path / "w")))
    config["methods"]["toy_mean"] = {"method": "toy_mean"}
    config["datasets"] = {"mnist5k": {**config["datasets"]["mnist5k"], "methods": ["toy_mean"],
                                      "protocols": ["one-class"]}}
    (repo / "tiny.yaml").write_text(yaml.safe_dump(config))
    # 4. rerun
    env = {"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "--quiet", "--configfile",
                           "tiny.yaml"], cwd=repo, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    runs = pd.read_csv(tmp_path / "w" / "results" / "runs.csv")
    assert set(runs.method) == {"toy_mean"} and len(runs) == 2 * 2  # categories × seeds
    assert runs.image_auroc.between(0, 1).all()
    assert "toy_mean" in (tmp_path / "w" / "report" / "main_mnist5k_one_class.md").read_text()
