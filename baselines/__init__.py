"""Baselines, each a module registering itself in :data:`kdad.methods.METHODS`.

To add one: write ``baselines/<name>.py`` (a config dataclass + a Detector, then
``register_method(MethodSpec(...))``) and add its module name to ``MODULES`` below.
"""

import importlib

MODULES: list[str] = ["classic", "knn", "autoencoder", "deep_svdd", "stfpm", "patchcore"]

for _module in MODULES:
    importlib.import_module(f"baselines.{_module}")
