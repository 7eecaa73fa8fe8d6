"""``agnostic-saliency evaluate MODEL DATA MAPS --metric deletion [--preset xplique]``:
a metric of saved maps, with the model loaded as ``explain`` loads it.

Prints ``<metric> (<preset>): <value>``; ``--curve-png`` also draws the curve of a
Deletion or Insertion, and ``--set KEY=VALUE`` changes one setting of the preset.
"""

from __future__ import annotations

import argparse
import ast
from typing import TYPE_CHECKING, Any, cast

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["add_parser", "run_evaluate"]


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add the ``evaluate`` subcommand to ``commands`` (an argparse subparsers object)."""
    from agnostic_saliency.metrics import METRICS

    parser: argparse.ArgumentParser = commands.add_parser(
        "evaluate", help="a metric (deletion, insertion, ...) of saved maps")
    parser.add_argument("model", help="a saved model, as for `explain`")
    parser.add_argument("inputs", help=".npy, .npz, or a folder of images")
    parser.add_argument("maps", help="the maps (.npy), (N, H, W) or the inputs' shape")
    parser.add_argument("--metric", required=True, choices=sorted(METRICS))
    parser.add_argument("--preset", default="xplique", choices=("xplique", "quantus", "rise"))
    parser.add_argument("--targets", help="an int, 'predicted' (default), or a .npy file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="change one setting, e.g. --set steps=20 (repeatable)")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="perturbed inputs per model call (memory bound)")
    parser.add_argument("--backend", help="force a backend (e.g. jax)")
    parser.add_argument("--channel-axis", type=int)
    parser.add_argument("--key", help="array name inside an .npz file")
    parser.add_argument("--curve-png", help="PNG of the curve (deletion and insertion only)")
    return parser


def run_evaluate(args: argparse.Namespace) -> float:
    """Evaluate ``args.maps`` with ``args.metric``; print and return the value."""
    from agnostic_saliency._cli_explain import _targets, load_inputs, load_model
    from agnostic_saliency.metrics import METRICS

    model, backend = load_model(args.model)
    inputs = np.asarray(load_inputs(args.inputs, args.key))
    maps = np.load(args.maps, mmap_mode="r")
    targets = _targets(args.targets, inputs)
    metric = METRICS[args.metric](model, backend=args.backend or backend,
                                  batch_size=args.batch_size, preset=args.preset,
                                  channel_axis=args.channel_axis, **parse_settings(args.set))
    if args.curve_png:
        if not hasattr(metric, "curve"):
            raise ValueError(f"--curve-png: {args.metric} has no curve; it is drawn for "
                             "deletion and insertion")
        from agnostic_saliency._plot_metrics import plot_curves
        from agnostic_saliency.plots import save

        curve = metric.curve(inputs, targets, np.asarray(maps))
        value = float(curve.areas.mean())
        figure = plot_curves({args.metric: curve}, title=f"{args.metric} ({args.preset})")
        save(cast("Figure", figure), args.curve_png)
    else:
        value = metric.evaluate(inputs, targets, np.asarray(maps))
    print(f"{args.metric} ({args.preset}): {value:.6g}")
    return value


def parse_settings(items: list[str]) -> dict[str, Any]:
    """``["steps=20", "baseline=min"]`` -> ``{"steps": 20, "baseline": "min"}``: Python
    literals (numbers, None, True) where they parse, else strings."""
    settings: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. --set steps=20")
        try:
            settings[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            settings[key] = text
    return settings
