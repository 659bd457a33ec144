"""One look for every figure: seaborn's colour-blind palette, a fixed colour / marker / line style
per method across all figures, and the :class:`Figure` record the report saves."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

__all__ = ["DPI", "Figure", "MethodStyles", "new_figure", "theme", "wrap"]

DPI = 110
MAP_CMAP = "magma"      # anomaly maps (perceptually uniform, readable without colour vision)
VALUE_CMAP = "viridis"  # heat maps of metric values
MARKERS = ("o", "s", "D", "^", "v", "P", "X", "*", "<", ">")
LINESTYLES = ("-", "--", "-.", ":")


@dataclass
class Figure:
    """A drawn figure: saved by :mod:`kdad.report` as ``figures/<name>.png``.

    ``caption`` is one line that says what was run (dataset, protocol, seeds, which subset); it is
    shown under the figure in ``index.md``.  ``kind`` groups figures in the index.
    """

    name: str
    caption: str
    fig: plt.Figure
    kind: str


def theme() -> None:
    sns.set_theme(style="whitegrid", context="paper", palette="colorblind")
    plt.rcParams.update({"figure.dpi": DPI, "savefig.dpi": DPI, "axes.titlesize": 9, "axes.labelsize": 8,
                         "xtick.labelsize": 7, "ytick.labelsize": 7, "legend.fontsize": 7,
                         "figure.titlesize": 10})


def wrap(text: str, width_inches: float, fontsize: float = 8) -> str:
    """``text`` broken into lines that fit a figure ``width_inches`` wide at ``fontsize`` points."""
    chars = max(30, int(width_inches * 72 / (0.55 * fontsize)))
    return textwrap.fill(text, chars)


def new_figure(width: float, height: float, nrows: int = 1, ncols: int = 1, **kw):
    return plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False, layout="constrained", **kw)


class MethodStyles:
    """Colour, marker and line style per method name, the same in every figure of one report.

    Colours come from seaborn's 10-colour colour-blind palette; beyond ten methods the line style
    and marker change too, so no two methods share all three.
    """

    def __init__(self, names: Iterable[str]):
        names = list(dict.fromkeys(names))
        names.sort(key=lambda n: (n != "mkd", not n.startswith("mkd"), n))
        self.order = names
        self._palette = sns.color_palette("colorblind", 10)

    def _index(self, name: str) -> int:
        if name not in self.order:
            self.order.append(name)
        return self.order.index(name)

    def color(self, name: str):
        return self._palette[self._index(name) % len(self._palette)]

    def marker(self, name: str) -> str:
        return MARKERS[self._index(name) % len(MARKERS)]

    def linestyle(self, name: str) -> str:
        return LINESTYLES[(self._index(name) // len(self._palette)) % len(LINESTYLES)]

    def line(self, name: str) -> dict:
        return {"color": self.color(name), "linestyle": self.linestyle(name)}
