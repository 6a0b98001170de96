"""A picture of a training run: losses, learning rate and evaluation metrics over iterations, drawn
from the ``metrics.json`` that detectron2's ``JSONWriter`` appends to in ``OUTPUT_DIR``."""
import json
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["HEADLINE_METRICS", "plot_metrics", "read_metrics", "select_panels"]

# Evaluation metrics drawn by default ("<task>/<metric>" keys whose metric is one of these).
HEADLINE_METRICS = ("PQ", "mIoU", "AP")
# Losses of the intermediate decoder layers ("loss_ce_0", ...): drawn only as part of total_loss.
_LAYER_LOSS = re.compile(r"^loss_.*_\d+$")

Series = Dict[str, List[Tuple[int, float]]]


def read_metrics(path: str) -> Series:
    """
    Every scalar of a ``metrics.json`` (one JSON record a line) as ``key -> [(iteration, value)]``,
    sorted by iteration. Where a resumed run wrote an iteration again, its last value is kept.

    Raises:
        ValueError: the file has a line that is not a JSON record with an "iteration"; the message
            names the file and the line.
    """
    by_key: Dict[str, Dict[int, float]] = {}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                iteration = int(record["iteration"])
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path}, line {number}: not a metrics record with an 'iteration' ({e})") from e
            for key, value in record.items():
                if key != "iteration" and isinstance(value, (int, float)):
                    by_key.setdefault(key, {})[iteration] = float(value)
    return {key: sorted(values.items()) for key, values in by_key.items()}


def select_panels(series: Series, metrics: Sequence[str] = ()) -> Dict[str, List[str]]:
    """
    The keys drawn in each panel: "losses" (``total_loss`` and the losses of the last layer),
    "learning rate" (``lr``) and "evaluation" (the ``<task>/<metric>`` keys whose metric is in
    :data:`HEADLINE_METRICS`, or the keys ``metrics`` where given). Empty panels are left out.
    """
    losses = [k for k in sorted(series) if k == "total_loss" or (k.startswith("loss_") and not _LAYER_LOSS.match(k))]
    if metrics:
        evaluation = [k for k in metrics if k in series]
    else:
        evaluation = [k for k in sorted(series) if "/" in k and k.rsplit("/", 1)[1] in HEADLINE_METRICS]
    panels = {"losses": losses, "learning rate": [k for k in ("lr",) if k in series], "evaluation": evaluation}
    return {title: keys for title, keys in panels.items() if keys}


def plot_metrics(output_dir: str, png: Optional[str] = None, metrics: Sequence[str] = ()) -> str:
    """
    Draw ``output_dir/metrics.json`` (see :func:`select_panels`) into ``png`` (default
    ``output_dir/metrics.png``) with matplotlib's Agg canvas (no display, and pyplot's global
    state untouched). Returns the path of the PNG.

    Raises:
        FileNotFoundError: there is no metrics.json; ValueError: it is malformed or has nothing to draw.
    """
    path = os.path.join(output_dir, "metrics.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist: a training run writes it into its OUTPUT_DIR")
    series = read_metrics(path)
    panels = select_panels(series, metrics)
    if not panels:
        raise ValueError(f"{path} has no losses, learning rate or evaluation metrics to draw")
    png = png or os.path.join(output_dir, "metrics.png")
    figure = Figure(figsize=(8, 3 * len(panels)))
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(panels), 1, sharex=True, squeeze=False)
    for ax, (title, keys) in zip(axes[:, 0], panels.items()):
        for key in keys:
            iterations, values = zip(*series[key])
            ax.plot(iterations, values, marker="o" if len(values) < 20 else None, label=key)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="best")
    axes[-1, 0].set_xlabel("iteration")
    figure.suptitle(os.path.abspath(output_dir), fontsize="small")
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
    figure.savefig(png, dpi=100)
    return png
