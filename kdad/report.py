"""results/ → report/: every table and figure, from the tidy CSVs (and the runs' saved example maps)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def render(results_dir: str | Path, out_dir: str | Path, examples: list[str | Path] | None = None) -> list[Path]:
    """Rebuild ``out_dir`` from scratch (no stale tables survive): figures, then tables and index."""
    import shutil

    from kdad.figures import render_figures
    from kdad.tables import render_all

    results_dir, out_dir = Path(results_dir), Path(out_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    (out_dir / "figures").mkdir(parents=True)
    figures = render_figures(results_dir, out_dir / "figures")
    for f in examples or []:
        if Path(f).stat().st_size and np.load(f).files:
            name = "maps_" + "_".join(Path(f).parts[-5:-2])  # dataset_protocol_variant of the run folder
            figures.append(example_maps_figure(f, out_dir / "figures" / f"{name}.png"))
    return figures + render_all(results_dir, out_dir, figures)


def example_maps_figure(npz: str | Path, out: str | Path, per_category: int = 1) -> Path:
    """Image | mask | anomaly map side by side for the first defective test images of each category."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with np.load(npz) as z:
        data = {k: z[k] for k in z.files}
    cats = sorted({k.split("/")[0] for k in data})
    data = {k: v[v.shape[0] // 2:] if k.endswith(("/image", "/mask", "/map")) else v for k, v in data.items()}
    rows = [(c, i) for c in cats for i in range(min(per_category, len(data[f"{c}/image"])))]
    fig, axes = plt.subplots(len(rows), 3, figsize=(6, 2 * len(rows)), squeeze=False)
    for r, (c, i) in enumerate(rows):
        img = data[f"{c}/image"][i]
        img = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
        axes[r, 0].imshow(img, cmap="gray" if img.ndim == 2 else None)
        axes[r, 1].imshow(data[f"{c}/mask"][i], cmap="gray")
        axes[r, 2].imshow(data[f"{c}/map"][i], cmap="inferno")
        axes[r, 0].set_ylabel(c, fontsize=8)
        for a in axes[r]:
            a.set_xticks([]), a.set_yticks([])
    for a, t in zip(axes[0], ("image", "ground truth", "MKD map")):
        a.set_title(t, fontsize=9)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
