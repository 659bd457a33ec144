"""The speed benchmark's worker process protocol: the worker's side (:func:`worker_main`, one JSON
command per line on stdin, one JSON answer per line) and the parent's (:class:`Worker`). A worker is
``benchmarks/speed.py --worker SPEC`` started as a subprocess; the spec's ``path`` picks the class
(:mod:`benchmarks.speed_paths`, :mod:`benchmarks.speed_investigate`) that answers its commands."""

from __future__ import annotations

import gc
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import torch

from benchmarks.speed_investigate import InvestigateWorker
from benchmarks.speed_paths import KdadWorker, MatmulWorker, ReferenceWorker

ROOT = Path(__file__).resolve().parents[1]
ENTRY = Path(__file__).resolve().with_name("speed.py")  # the command a worker runs: speed.py --worker SPEC

# ============================================================================================ worker side
# A worker is benchmarks/speed.py run with --worker SPEC: it reads one JSON command per line on stdin and
# answers one JSON line on its protocol pipe (the original stdout; everything printed goes to stderr).


def _reset_hwm() -> bool:
    """Reset the process's peak RSS (VmHWM) to its current RSS (Linux ≥ 4.0); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def worker_main(spec_json: str) -> None:
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # stray prints (kdad's training log, library warnings) go to stderr
    sys.stdout = sys.stderr
    spec = json.loads(spec_json)
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)

    def reply(obj):
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    try:
        w = {"kdad": KdadWorker, "reference": ReferenceWorker, "investigate": InvestigateWorker,
             "machine": MatmulWorker}[spec["path"]](spec)
        reply({"ok": True, "rss_kib": _status_kib("VmRSS"), "threads": torch.get_num_threads(),
               "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss})
    except Exception as err:  # noqa: BLE001 - reported to the parent
        import traceback
        traceback.print_exc()
        reply({"ok": False, "error": f"{type(err).__name__}: {err}"})
        return
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd.pop("op")
        if op == "exit":
            reply({"ok": True, "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss})
            return
        try:
            gc.collect()
            load1 = os.getloadavg()[0]
            rss = _status_kib("VmRSS")
            reset = _reset_hwm()
            out = getattr(w, op)(**cmd)
            out.update(ok=True, load1=load1, rss_before_kib=rss, hwm_kib=_status_kib("VmHWM") if reset else None)
        except Exception as err:  # noqa: BLE001
            import traceback
            traceback.print_exc()
            out = {"ok": False, "error": f"{op}: {type(err).__name__}: {err}"}
        # ru_maxrss since the last reset of the high-water mark (clear_refs resets ru_maxrss too, so it
        # is read after every operation, before the next reset): the maximum over replies is the peak
        out["maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        reply(out)


# ============================================================================================ parent side


class Worker:
    """A worker process; ``call`` sends one command and waits for its answer."""

    def __init__(self, spec: dict, log_dir: Path, name: str, env: dict | None = None) -> None:
        self.name = name
        self.log = log_dir / f"{name}.log"
        self.p = subprocess.Popen([sys.executable, str(ENTRY), "--worker", json.dumps(spec)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(self.log, "w"),
                                  text=True, cwd=str(ROOT), env={**os.environ, **(env or {})})
        self.peak_kib = 0
        self.started = self._recv()

    def _recv(self) -> dict:
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.name} died; its log {self.log} ends:\n{self._tail()}")
        out = json.loads(line)
        self.peak_kib = max(self.peak_kib, out.get("maxrss_kib") or 0)
        if not out.get("ok"):
            raise RuntimeError(f"worker {self.name}: {out.get('error')}; log {self.log}:\n{self._tail()}")
        return out

    def _tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])

    def send(self, op: str, **kw) -> None:
        self.p.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.p.stdin.flush()

    def call(self, op: str, **kw) -> dict:
        self.send(op, **kw)
        return self._recv()

    def close(self) -> int:
        """Stop the worker; its peak RSS over its whole life (KiB): the largest ru_maxrss it reported."""
        self.call("exit")
        self.p.wait(timeout=60)
        return self.peak_kib


