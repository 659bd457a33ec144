"""One table, three files: ``<name>.md`` (pandas ``to_markdown``), ``<name>.tex`` (pandas
``Styler.to_latex``, booktabs rules) and ``<name>.csv`` (the tidy numbers behind the cells).

A :class:`Table` holds display strings; the writer only lays them out.  Nothing here writes to
disk: :func:`render` returns ``{file name: text}`` and :mod:`kdad.report` writes it atomically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

__all__ = ["DASH", "Table", "fmt_mean_std", "fmt_num", "fmt_p", "render", "tex_escape", "to_latex",
           "to_markdown"]

DASH = "–"


# --------------------------------------------------------------------------------------- cells
def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def fmt_num(x, digits: int = 1) -> str:
    return DASH if _missing(x) else f"{x:.{digits}f}"


def fmt_mean_std(mean, std, n: int | None = None, digits: int = 1) -> str:
    """``"92.5 ± 3.5"``; the mean alone when there is one value (``n == 1`` or std NaN)."""
    if _missing(mean):
        return DASH
    if n == 1 or _missing(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def fmt_p(p) -> str:
    if _missing(p):
        return DASH
    return f"{p:.1e}" if p < 0.001 else f"{p:.3f}"


# --------------------------------------------------------------------------------------- table
@dataclass
class Table:
    """One rendered table.

    ``frame``: display strings; its index levels become the leading (left-aligned) columns.
    ``bold``: same shape as ``frame`` (True = bold) or None.  ``data``: the tidy numbers for the CSV.
    ``kind``: the family (``main``, ``ablation``, …) the index groups tables by.
    """

    name: str
    caption: str
    frame: pd.DataFrame
    data: pd.DataFrame
    bold: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    kind: str = "other"


def _flat(table: Table) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Index levels as leading columns, repeated leading keys blanked, and the bold mask aligned."""
    frame = table.frame
    n_keys = frame.index.nlevels
    names = [str(n) if n is not None else "" for n in frame.index.names]
    flat = frame.reset_index()
    flat.columns = names + [str(c) for c in frame.columns]
    flat = flat.astype(str)
    # blank a key that repeats the row above (and every key to its left does too)
    keys = flat.iloc[:, :n_keys].to_numpy()
    for i in range(1, len(flat)):
        for j in range(n_keys - 1):
            if (keys[i, :j + 1] == keys[i - 1, :j + 1]).all():
                flat.iat[i, j] = ""
    bold = pd.DataFrame(False, index=flat.index, columns=flat.columns)
    if table.bold is not None:
        bold.iloc[:, n_keys:] = table.bold.to_numpy(dtype=bool)
    return flat, bold, n_keys


def _md_cell(text: str, bold: bool) -> str:
    text = str(text).replace("|", r"\|")
    return f"**{text}**" if bold and text not in ("", DASH) else text


def to_markdown(table: Table) -> str:
    flat, bold, n_keys = _flat(table)
    cells = flat.copy()
    for c in cells.columns:
        cells[c] = [_md_cell(t, b) for t, b in zip(flat[c], bold[c])]
    cells.columns = [_md_cell(c, False) for c in cells.columns]
    align = ["left"] * n_keys + ["right"] * (len(cells.columns) - n_keys)
    body = cells.to_markdown(index=False, colalign=align, disable_numparse=True)
    lines = [f"**{table.name}**: {table.caption}", "", body]
    if table.notes:
        lines.append("")
        lines.extend(f"- {n}" for n in table.notes)
    return "\n".join(lines) + "\n"


_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_TEX_UNICODE = {"±": r"$\pm$", "Δ": r"$\Delta$", "×": r"$\times$", "≤": r"$\leq$", "≥": r"$\geq$",
                "–": "--", "−": "$-$", "≈": r"$\approx$", "σ": r"$\sigma$", "†": r"$^\dagger$",
                "‡": r"$^\ddagger$", "λ": r"$\lambda$", "α": r"$\alpha$", "χ": r"$\chi$", "²": r"$^2$",
                "→": r"$\to$", "·": r"$\cdot$", "š": r"\v{s}"}


def tex_escape(text) -> str:
    return "".join(_TEX_SPECIAL.get(ch, _TEX_UNICODE.get(ch, ch)) for ch in str(text))


def to_latex(table: Table) -> str:
    flat, bold, n_keys = _flat(table)
    styler = flat.style.hide(axis="index")
    styler = styler.format(tex_escape).format_index(tex_escape, axis=1)
    styler = styler.apply(lambda _: bold.map(lambda b: "textbf:--rwrap;" if b else ""), axis=None)
    tex = styler.to_latex(column_format="l" * n_keys + "r" * (len(flat.columns) - n_keys), hrules=True,
                          position="t", position_float="centering", caption=tex_escape(table.caption),
                          label="tab:" + table.name.replace("_", "-"))
    notes = "".join(r"\par\footnotesize " + tex_escape(n) + "\n" for n in table.notes)
    if notes:
        tex = tex.replace("\\end{table}", notes + "\\end{table}")
    return "% generated by kdad report; needs \\usepackage{booktabs}\n" + tex


def render(table: Table) -> dict[str, str]:
    """``{<name>.md, <name>.tex, <name>.csv: text}``."""
    return {f"{table.name}.md": to_markdown(table), f"{table.name}.tex": to_latex(table),
            f"{table.name}.csv": table.data.to_csv(index=False)}
