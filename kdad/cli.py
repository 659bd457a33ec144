"""``kdad`` command line: the steps the workflow calls, usable by hand too.

    kdad list                                 registries: datasets, experts, methods
    kdad plan     --config C                  every run the config asks for
    kdad prepare  --config C --dataset D
    kdad features --config C --dataset D --expert E --normalize {0,1}
    kdad run      --config C --dataset D --protocol P --variant V --seed S --out DIR
    kdad aggregate --out results/ RESULT.json...
    kdad report   --results results/ --out report/
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kdad", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="registered datasets, experts and methods")
    for name in ("plan", "prepare", "features", "run"):
        p = sub.add_parser(name)
        p.add_argument("--config", required=True, help="experiment YAML/JSON (config/config.yaml)")
        p.add_argument("--threads", type=int, default=None, help="torch threads (default: config.threads)")
        if name != "plan":
            p.add_argument("--dataset", required=True)
        if name == "features":
            p.add_argument("--expert", required=True)
            p.add_argument("--normalize", type=int, choices=(0, 1), required=True)
        if name == "run":
            p.add_argument("--protocol", required=True)
            p.add_argument("--variant", required=True)
            p.add_argument("--seed", type=int, required=True)
            p.add_argument("--out", required=True)
    p = sub.add_parser("aggregate")
    p.add_argument("--out", required=True)
    p.add_argument("results", nargs="+")
    p = sub.add_parser("report")
    p.add_argument("--results", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--examples", "--maps", nargs="*", default=None,
                   help="evaluations' examples.npz files (<work>/eval/<dataset>/<protocol>/<variant>/seed<N>/, or "
                        "with a meta.json beside) for the anomaly-map figures")
    args = parser.parse_args(argv)

    if args.command == "list":
        from kdad.data import dataset_names
        from kdad.experts import EXPERTS
        from kdad.methods import method_names
        print("datasets:", ", ".join(dataset_names()))
        print("experts: ", ", ".join(EXPERTS.names()))
        print("methods: ", ", ".join(method_names()))
        return 0
    if args.command == "aggregate":
        from kdad.runs import aggregate
        for name, path in aggregate(args.results, args.out).items():
            print(f"{name}: {path}")
        return 0
    if args.command == "report":
        from kdad.report import render
        for path in render(args.results, args.out, args.examples):
            print(path)
        return 0

    import torch

    from kdad.experiment import load_config, plan
    cfg = load_config(args.config)
    torch.set_num_threads(args.threads or cfg.threads)
    if args.command == "plan":
        for key in plan(cfg):
            print(key.path)
        return 0
    from kdad import runs
    if args.command == "prepare":
        runs.prepare(cfg, args.dataset)
    elif args.command == "features":
        runs.features(cfg, args.dataset, args.expert, bool(args.normalize))
    elif args.command == "run":
        from kdad.experiment import run_key
        runs.run(cfg, run_key(cfg, args.dataset, args.protocol, args.variant, args.seed), args.out)
    return 0


def entry() -> None:
    """Console script: errors a user can fix print one line, not a traceback."""
    from kdad.config import ConfigError
    from kdad.data.base import DatasetError
    from kdad.experts import WeightsError
    from kdad.mkd import TrainingError
    from kdad.protocols import ProtocolError
    from kdad.registry import RegistryError
    try:
        sys.exit(main())
    except (ConfigError, DatasetError, WeightsError, TrainingError, ProtocolError, RegistryError) as err:
        print(f"kdad: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    entry()
