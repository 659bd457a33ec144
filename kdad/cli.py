"""``kdad``: the benchmark's steps from the command line (the workflow calls these; so can you).

Exit codes: 0 success; 1 ``check-results`` found a failure; 2 a usage error (unknown option, missing argument); 3 a configuration
error; 4 a data error (missing, corrupt or unreadable dataset, weights or result files); 5 a
training or model error (diverged training, a model file that does not fit its options).
"""

from __future__ import annotations

import argparse
import sys

EXIT_USAGE, EXIT_CONFIG, EXIT_DATA, EXIT_MODEL = 2, 3, 4, 5
EXIT_CHECK_FAILED = 1

COMMANDS = {
    "list": "registered datasets, experts and methods, one line each",
    "plan": "every evaluation the config asks for (dataset/protocol/variant/seed) and the model it reads",
    "prepare": "read, verify and decode one dataset into the work folder",
    "features": "the frozen expert's hints for every image of a prepared dataset, computed once",
    "train": "fit one model on every category of (dataset, protocol) with one seed",
    "evaluate": "score (and map) every category's test images with its trained model",
    "aggregate": "collect evaluation results into tidy results/*.csv",
    "report": "render tables and figures from results/*.csv",
    "check-results": "whether every results/**/runs.csv was made by clean, current code (exit 1 on a failure)",
}


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ 1, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    from kdad import __version__

    parser = argparse.ArgumentParser(prog="kdad", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n")[1])
    parser.add_argument("--version", action="version", version=f"kdad {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    ps = {name: sub.add_parser(name, help=text, description=text) for name, text in COMMANDS.items()}
    for name in ("plan", "prepare", "features", "train", "evaluate"):
        p = ps[name]
        p.add_argument("--config", required=True, help="experiment config: YAML (config/config.yaml) or the "
                                                       "workflow's resolved JSON")
        p.add_argument("--threads", type=_positive_int, default=None,
                       help="torch threads, ≥ 1 (default: the config's threads)")
    for name in ("prepare", "features", "train", "evaluate"):
        ps[name].add_argument("--dataset", required=True, help="a dataset of the config")
    for name in ("prepare", "features"):
        ps[name].add_argument("--draw", default="fixed", help="which copy of a generated dataset: seed<k> "
                                                              "(default: fixed, for real datasets)")
    ps["features"].add_argument("--expert", required=True, help="a registered expert")
    ps["features"].add_argument("--normalize", type=int, choices=(0, 1), required=True,
                                help="1: the expert's own input normalisation; 0: inputs in [0, 1]")
    for name in ("train", "evaluate"):
        p = ps[name]
        p.add_argument("--protocol", required=True, choices=("one-class", "multi-class"))
        p.add_argument("--seed", type=int, required=True)
        p.add_argument("--out", required=True, help="output folder")
    ps["train"].add_argument("--model", required=True, help="model id as `kdad plan` prints it")
    ps["evaluate"].add_argument("--variant", required=True, help="an entry of the config's methods")
    ps["aggregate"].add_argument("--out", required=True, help="results folder")
    ps["aggregate"].add_argument("results", nargs="+", help="the evaluations' result.json files")
    ps["report"].add_argument("--results", required=True, help="folder with runs.csv (and the other CSVs)")
    ps["report"].add_argument("--out", required=True, help="report folder (only files the report wrote are replaced)")
    ps["report"].add_argument("--examples", nargs="*", default=None,
                              help="evaluations' examples.npz files for the anomaly-map figures")
    ps["check-results"].add_argument("--results", nargs="+", default=["results"], metavar="DIR",
                                     help="folders searched for runs.csv files (default: results)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    if args.command == "list":
        from kdad.data import dataset_names, get_dataset
        from kdad.experts import EXPERTS
        from kdad.methods import get_method, method_names
        print("datasets:")
        for name in dataset_names():
            print(f"  {name:20s} {get_dataset(name).description}")
        print("experts:")
        for name in EXPERTS.names():
            print(f"  {name:20s} {EXPERTS.description(name)}")
        print("methods:")
        for name in method_names():
            print(f"  {name:20s} {get_method(name).description}")
        return 0
    if args.command == "aggregate":
        from kdad.runs import aggregate
        for name, path in aggregate(args.results, args.out).items():
            print(f"{name}: {path}")
        return 0
    if args.command == "check-results":
        from kdad.provenance import code_fingerprint
        from kdad.results_check import FAIL, check_results
        current = code_fingerprint()
        checks = check_results(args.results, current)
        print(f"current code fingerprint: {current}")
        for c in checks:
            print(c.line())
        failed = sum(c.status == FAIL for c in checks)
        print(f"{len(checks)} file(s): {failed} FAIL, {sum(c.status == 'STALE' for c in checks)} STALE")
        return EXIT_CHECK_FAILED if failed else 0
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
            print(f"{key.path}  model={key.model}")
        return 0
    from kdad import runs
    if args.command == "prepare":
        runs.prepare(cfg, args.dataset, args.draw)
    elif args.command == "features":
        runs.features(cfg, args.dataset, args.draw, args.expert, bool(args.normalize))
    elif args.command == "train":
        runs.train(cfg, args.dataset, args.protocol, args.model, args.seed, args.out)
    elif args.command == "evaluate":
        runs.evaluate(cfg, args.dataset, args.protocol, args.variant, args.seed, args.out)
    return 0


def entry() -> None:
    """Console script: an error a user can fix prints one line and a distinct exit code, not a traceback."""
    from kdad.config import ConfigError
    from kdad.data.base import DatasetError
    from kdad.experts import WeightsError
    from kdad.methods import ModelFileError
    from kdad.protocols import ProtocolError
    from kdad.registry import RegistryError
    from kdad.training import TrainingError
    try:
        sys.exit(main())
    except (ConfigError, ProtocolError, RegistryError) as err:
        code, msg = EXIT_CONFIG, str(err)
    except (DatasetError, WeightsError) as err:
        code, msg = EXIT_DATA, str(err)
    except (TrainingError, ModelFileError) as err:
        code, msg = EXIT_MODEL, str(err)
    except KeyboardInterrupt:
        code, msg = 130, "interrupted"
    except BrokenPipeError:  # `kdad list | head`: the reader has gone; nothing left to say
        _quiet_stdout()
        sys.exit(0)
    except OSError as err:
        from kdad.atomic import is_disk_full
        if not is_disk_full(err):
            raise
        # every kdad file is written beside its destination and renamed into place: nothing half
        # written is left, and a rerun after freeing space resumes where this one stopped
        code, msg = EXIT_DATA, (f"no space left on the device while writing {err.filename or 'a file'}; free "
                                "some space and rerun the same command (finished outputs are kept, nothing "
                                "half-written was left behind)")
    print(f"kdad: error: {msg}", file=sys.stderr)
    sys.exit(code)


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so that Python's flush at exit does not raise BrokenPipeError again."""
    import os
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except OSError:
        pass


if __name__ == "__main__":
    entry()
