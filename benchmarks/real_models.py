"""agnostic-saliency against native gradient code on realistic models: a ResNet-18 and a ViT.

Usage::

    python benchmarks/real_models.py [--frameworks torch keras-tf keras-jax keras-torch jax
                                                   jax-function]
                                     [--models resnet18 vit] [--rounds 5] [--batch 8]
                                     [--image-size 224] [--out benchmarks/results/real_models]

Each framework (and each Keras backend) runs in its own process. Inside it, per
model, ``Saliency(model).explain(x, targets)`` with its defaults and the
framework's hand-written native code (same memory format, same maps) are timed in
interleaved rounds (``_harness.measure``). The table gives the median seconds per
call of each, the ratio of the medians, the median of the per-round ratios with its
bootstrap interval, the verdict against the issue's target (ours / native <= 1.03,
a reading within 5 % of it counts as met) and the largest difference of the maps
relative to their largest value. ``results.json`` holds every timing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Contender, agreement, machine, measure
from _real_common import (
    FRAMEWORKS,
    MODELS,
    TARGET,
    Config,
    child_env,
    framework_module,
    ours_factory,
    verdict,
    write_results,
)
from run import median_interval

TITLES = {"torch": "PyTorch", "keras-tf": "Keras 3 on TensorFlow", "keras-jax": "Keras 3 on JAX",
          "keras-torch": "Keras 3 on PyTorch", "jax": "JAX (Flax NNX module)",
          "jax-function": "JAX (plain function, parameters closed over)"}
#: Maps may differ from native code's by float32 rounding only.
TOLERANCE = 1e-4
OURS = "agnostic-saliency"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with ``--child``, one framework's part of it)."""
    args = _parser().parse_args(argv)
    if args.child:
        return _child(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/real_models.py", *(argv or sys.argv[1:])]),
        "machine": machine(), "config": _config(args).describe(), "rounds": args.rounds,
        "target": TARGET, "frameworks": {},
    }
    for framework in args.frameworks:
        print(f"--- {TITLES[framework]}", flush=True)
        results["frameworks"][framework] = _run_child(framework, args)
    add_ratios(results)
    text = table(results)
    write_results(out, results, text)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frameworks", nargs="+", choices=list(FRAMEWORKS),
                        default=[name for name in FRAMEWORKS if name != "jax-function"],
                        help="default: all but jax-function")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed calls of each contender after its first (default 1)")
    parser.add_argument("--batch", type=int, default=None, help="images per call (default 8)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="height and width of the images (default 224)")
    parser.add_argument("--tiny", action="store_true",
                        help="narrow models with 10 classes: a smoke test, not a measurement")
    parser.add_argument("--out", default="benchmarks/results/real_models")
    parser.add_argument("--child", choices=list(FRAMEWORKS), help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    return parser


def _config(args: argparse.Namespace) -> Config:
    """The sizes: the benchmark's (or ``--tiny``'s), with ``--batch`` and ``--image-size``."""
    base = Config().tiny() if args.tiny else Config()
    return replace(base, batch=args.batch or base.batch, image=args.image_size or base.image)


def _run_child(framework: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "result.json"
        command = [sys.executable, __file__, "--child", framework, "--json", str(path),
                   "--models", *args.models, "--rounds", str(args.rounds),
                   "--warmup", str(args.warmup)]
        for flag, value in (("--batch", args.batch), ("--image-size", args.image_size)):
            if value:
                command += [flag, str(value)]
        if args.tiny:
            command.append("--tiny")
        done = subprocess.run(command, check=False, env=child_env(framework))
        if done.returncode:
            raise SystemExit(f"real_models.py: the {TITLES[framework]} benchmark exited with "
                             f"code {done.returncode}: its message is above")
        return json.loads(path.read_text())  # type: ignore[no-any-return]


class _Keeping:
    """A contender's ``run`` that keeps its latest map, to compare maps without more calls."""

    def __init__(self, run: Callable[[], Any]) -> None:
        self.run = run
        self.latest: Any = None

    def __call__(self) -> Any:
        self.latest = self.run()
        return self.latest


def contenders(framework: str, model_name: str, config: Config) -> list[Contender]:
    """Native code (first, the reference) and ours on ``model_name`` of ``config``.

    Each ``run`` keeps its latest map (attribute ``latest``).
    """
    module = framework_module(framework)
    model = module.build(model_name, config)
    x, y = config.inputs(module.channels_first)
    return [Contender("native", _Keeping(module.native(model, x, y))),
            Contender(OURS, _Keeping(ours_factory(framework)(model, x, y)))]


def measure_case(framework: str, model_name: str, config: Config, rounds: int,
                 warmup: int) -> dict[str, dict[str, Any]]:
    """Timings of both contenders and how far our maps are from native code's."""
    found = contenders(framework, model_name, config)
    stats = measure(found, rounds, warmup=warmup)
    reference = np.asarray(_latest(found[0]), dtype=np.float64)
    for contender in found:
        stats[contender.name]["max_difference"] = agreement(reference, _latest(contender))
    return stats


def _latest(contender: Contender) -> Any:
    """The map of ``contender``'s latest call (its ``run`` is a :class:`_Keeping`)."""
    assert isinstance(contender.run, _Keeping)
    return contender.run.latest


def _child(args: argparse.Namespace) -> int:
    module = framework_module(args.child)
    config = _config(args)
    result: dict[str, Any] = {"versions": module.versions(), "models": {}}
    for model_name in args.models:
        stats = measure_case(args.child, model_name, config, args.rounds, args.warmup)
        result["models"][model_name] = stats
        print(f"  {model_name}: " + ", ".join(
            f"{name} {entry['median_ms'] / 1e3:.3f} s" for name, entry in stats.items()),
            flush=True)
    Path(args.json).write_text(json.dumps(result))
    return 0


def add_ratios(results: dict[str, Any]) -> None:
    """Ours over native code per model: the ratio of the medians, and the median of
    the per-round ratios with a bootstrap interval (the machine's drift between
    rounds cancels in those), and the verdict of the ratio of medians."""
    for framework in results["frameworks"].values():
        for stats in framework["models"].values():
            native, ours = stats["native"], stats[OURS]
            paired = np.array(ours["times_ms"]) / np.array(native["times_ms"])
            low, high = median_interval(paired)
            ratio = ours["median_ms"] / native["median_ms"]
            ours.update(ratio=ratio, paired_ratio=float(np.median(paired)),
                        paired_ci=[low, high], verdict=verdict(ratio))


def table(results: dict[str, Any]) -> str:
    """A Markdown table: one row per framework and model."""
    config = results["config"]
    lines = [f"### agnostic-saliency vs native code: batch {config['batch']}, "
             f"3x{config['image']}x{config['image']}, {results['rounds']} rounds", "",
             "| framework | model | native s (IQR) | ours s (IQR) | ours / native "
             f"| per round (95 % CI) | ≤ {TARGET} | first call native / ours s | max diff |",
             "|---|---|---:|---:|---:|---:|---|---:|---:|"]
    for key, framework in results["frameworks"].items():
        for model_name, stats in framework["models"].items():
            native, ours = stats["native"], stats[OURS]
            flag = "" if ours["max_difference"] <= TOLERANCE else " ⚠"
            lines.append(
                f"| {TITLES[key]} | {model_name} | {_seconds(native)} | {_seconds(ours)} "
                f"| {ours['ratio']:.3f} | {ours['paired_ratio']:.3f} "
                f"({ours['paired_ci'][0]:.3f}–{ours['paired_ci'][1]:.3f}) | {ours['verdict']} "
                f"| {native['first_call_ms'] / 1e3:.2f} / {ours['first_call_ms'] / 1e3:.2f} "
                f"| {ours['max_difference']:.1e}{flag} |")
    return "\n".join(lines)


def _seconds(entry: dict[str, Any]) -> str:
    """Median seconds per call and the interquartile range."""
    return (f"{entry['median_ms'] / 1e3:.3f} ({entry['q1_ms'] / 1e3:.3f}–"
            f"{entry['q3_ms'] / 1e3:.3f})")


if __name__ == "__main__":
    sys.exit(main())
