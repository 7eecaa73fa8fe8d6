"""Speed of agnostic-saliency against native code, Captum, Xplique and PAIR saliency.

Usage::

    python benchmarks/run.py [--quick] [--frameworks torch keras tensorflow jax]
                             [--cases cnn-32 mlp-256 cnn-1 mlp-1] [--rounds 60]
                             [--extra-rounds 240]
                             [--torch-compile] [--device cpu] [--out benchmarks/results]

Each framework runs in its own process (no framework's thread pools compete with
another's); inside it, every contender of a case is timed in interleaved rounds.
The table gives medians (ms), interquartile ranges and the ratio to the fastest
native code of the same framework; ``results.json`` holds every timing, the machine
and the device, and ``saliency_speed.png`` plots the ratios.

``--device cuda`` times PyTorch and JAX on a GPU (the others are CPU only): every
contender still starts from NumPy inputs and returns NumPy maps, so the copies to
and from the GPU are part of each call, and the copy back waits for the GPU.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import CASES, agreement, machine, measure, measure_more

FRAMEWORKS = ("torch", "keras", "tensorflow", "jax")
#: The frameworks that ``--device cuda`` times on a GPU.
CUDA_FRAMEWORKS = ("torch", "jax")
TITLES = {"torch": "PyTorch", "keras": "Keras 3 (TensorFlow backend)",
          "tensorflow": "TensorFlow (tf.Module)", "jax": "JAX"}
#: Maps may differ from native code's by float32 rounding only.
TOLERANCE = 1e-4
#: Rounds added to a case whose verdict is within the noise of the first rounds, as
#: a multiple of those (60 + 240 by default).
EXTRA_FACTOR = 4


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.child:
        return _child(args)
    _check_device(parser, args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/run.py", *(argv or sys.argv[1:])]),
        "machine": machine(),
        "device": args.device,
        "rounds": _settings(args)[0],
        "extra_rounds": _settings(args)[2],
        "frameworks": {},
    }
    for framework in args.frameworks:
        print(f"--- {TITLES[framework]}", flush=True)
        results["frameworks"][framework] = _run_child(framework, args)
    _add_ratios(results)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(table(results))
    print(summary(results))
    try:
        from _plot import plot
    except ImportError:  # matplotlib is optional
        print("matplotlib is not installed: no plot")
    else:
        plot(results, out / "saliency_speed.png")
    print(f"wrote {out / 'results.json'}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="5 rounds and short blocks: a smoke test, not a measurement")
    parser.add_argument("--frameworks", nargs="+", choices=FRAMEWORKS, default=list(FRAMEWORKS))
    parser.add_argument("--cases", nargs="+", choices=[case.name for case in CASES],
                        default=[case.name for case in CASES])
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 60)")
    parser.add_argument("--extra-rounds", type=int, default=None,
                        help="rounds added, once, to a case whose verdict is within the "
                             f"noise of the first rounds (default {EXTRA_FACTOR} x --rounds; "
                             "0: none)")
    parser.add_argument("--min-block", type=float, default=None,
                        help="seconds each contender runs per round, at least (default 0.05)")
    parser.add_argument("--torch-compile", action="store_true",
                        help="also time native PyTorch code around torch.compile(model)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where PyTorch and JAX compute (default cpu); cuda times "
                             f"--frameworks {' '.join(CUDA_FRAMEWORKS)} only")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--child", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    return parser


def _check_device(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit through ``parser`` when ``--device cuda`` is asked of a CPU-only framework.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The parser of ``args``; its ``error`` prints the usage and exits with code 2.
    args : argparse.Namespace
        The parsed command line.
    """
    if args.device == "cpu":
        return
    others = [name for name in args.frameworks if name not in CUDA_FRAMEWORKS]
    if others:
        parser.error(f"--device {args.device} times {' and '.join(CUDA_FRAMEWORKS)} only "
                     f"(TensorFlow and Keras run on the CPU), but --frameworks holds "
                     f"{', '.join(others)}, and all four by default: pass --frameworks "
                     f"{' '.join(CUDA_FRAMEWORKS)}, or one of them")


def _settings(args: argparse.Namespace) -> tuple[int, float, int]:
    rounds = args.rounds or (5 if args.quick else 60)
    block = args.min_block or (0.02 if args.quick else 0.05)
    extra = args.extra_rounds if args.extra_rounds is not None else (
        0 if args.quick else EXTRA_FACTOR * rounds)
    return rounds, block, extra


def _run_child(framework: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "result.json"
        command = [sys.executable, __file__, "--child", framework, "--json", str(path),
                   "--cases", *args.cases, "--rounds", str(_settings(args)[0]),
                   "--min-block", str(_settings(args)[1]),
                   "--extra-rounds", str(_settings(args)[2]), "--device", args.device]
        if args.torch_compile:
            command.append("--torch-compile")
        done = subprocess.run(command, check=False, env=_child_env(args.device))
        if done.returncode:
            raise SystemExit(f"run.py: the {TITLES[framework]} benchmark exited with code "
                             f"{done.returncode}: its message is above")
        return json.loads(path.read_text())  # type: ignore[no-any-return]


def _child_env(device: str) -> dict[str, str]:
    """The environment of a child: Keras on TensorFlow, and on ``"cpu"`` JAX on the CPU.

    Parameters
    ----------
    device : str
        ``"cpu"`` or ``"cuda"``. On ``"cpu"``, ``JAX_PLATFORMS=cpu`` keeps JAX off a GPU
        it would otherwise take by default; on ``"cuda"`` the caller's setting stays.

    Returns
    -------
    dict of str to str
        The caller's environment with these variables set.
    """
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}
    if device == "cpu":
        env["JAX_PLATFORMS"] = "cpu"
    return env


def _child(args: argparse.Namespace) -> int:
    warnings.filterwarnings("ignore", category=UserWarning, module="captum")
    framework = args.child
    module = _framework_module(framework)
    rounds, block, extra = _settings(args)
    if framework in CUDA_FRAMEWORKS:
        module.check_device(args.device)
    versions = module.versions(args.device) if framework == "torch" else module.versions()
    found: dict[str, Any] = {"versions": versions, "cases": {}}
    for case in CASES:
        if case.name not in args.cases:
            continue
        if framework == "torch":
            contenders = module.contenders(case, with_compile=args.torch_compile,
                                           device=args.device)
        elif framework in ("keras", "tensorflow"):
            contenders = module.contenders(case, framework)
        else:
            contenders = module.contenders(case)
        stats = measure(contenders, rounds, block)
        if extra and _within_noise(stats, case.name):
            measure_more([c for c in contenders if c.name in _verdict_names(stats)], stats, extra)
        reference = np.asarray(contenders[0].run(), dtype=np.float64)
        for contender in contenders:
            stats[contender.name]["max_difference"] = agreement(reference, contender.run())
        found["cases"][case.name] = stats
        print(f"  {case.name}: " + ", ".join(
            f"{name} {entry['median_ms']:.3f} ms" for name, entry in stats.items()), flush=True)
    Path(args.json).write_text(json.dumps(found))
    return 0


def _framework_module(framework: str) -> Any:
    if framework == "torch":
        import _torch as module
    elif framework in ("keras", "tensorflow"):
        import _tensorflow as module
    else:
        import _jax as module
    return module


def target_for(case: str) -> float:
    """The largest ratio to native code that the issue allows for ``case``."""
    return 1.5 if case.endswith("-1") else 1.05


def _native(name: str) -> bool:
    """Whether contender ``name`` is a form of native code that ratios may refer to
    (``torch.compile``'s is timed beside them, not as a reference)."""
    return name.startswith("native") and "compile" not in name


def reference_name(stats: dict[str, Any]) -> str:
    """The name of the fastest native code of a case's ``stats`` (by its median)."""
    return min(filter(_native, stats), key=lambda name: stats[name]["median_ms"])


def _verdict_names(stats: dict[str, Any]) -> list[str]:
    """The contenders a verdict depends on: every native form (any may be the
    fastest once more rounds are in) and ours."""
    return [name for name in stats if name == "agnostic-saliency" or _native(name)]


def _within_noise(stats: dict[str, Any], case: str) -> bool:
    """Whether the interval of the per-round ratio of ours to native code holds the
    target of ``case``: more rounds would tell on which side it is.

    The benchmark then adds rounds once, a fixed number, and judges all rounds
    together; it never stops at a round chosen for its reading.
    """
    ours = stats.get("agnostic-saliency")
    if ours is None:
        return False
    low, high = median_interval(_paired(ours, stats[reference_name(stats)]))
    return low <= target_for(case) <= high


def _paired(entry: dict[str, Any], native: dict[str, Any]) -> np.ndarray:
    """``entry``'s time over native code's, round by round, over the rounds of both
    (a contender without added rounds pairs with the first ones)."""
    common = min(len(entry["times_ms"]), len(native["times_ms"]))
    return np.array(entry["times_ms"][:common]) / np.array(native["times_ms"][:common])


def _add_ratios(results: dict[str, Any]) -> None:
    """Ratio of each contender's median to the fastest native code of its framework,
    and the median and quartiles of the ratios of the two in each round.

    The per-round (paired) ratio compares times taken a moment apart, so the machine's
    drift between rounds cancels; where it and the ratio of medians disagree, the
    reading is within the noise.
    """
    for framework in results["frameworks"].values():
        for stats in framework["cases"].values():
            native = stats[reference_name(stats)]
            for entry in stats.values():
                entry["ratio"] = entry["median_ms"] / native["median_ms"]
                entry["ratio_q1"] = entry["q1_ms"] / native["median_ms"]
                entry["ratio_q3"] = entry["q3_ms"] / native["median_ms"]
                paired = _paired(entry, native)
                q1, median, q3 = np.percentile(paired, [25, 50, 75])
                low, high = median_interval(paired)
                entry.update(paired_ratio=float(median), paired_q1=float(q1),
                             paired_q3=float(q3), paired_ci=[low, high])


def median_interval(values: np.ndarray, confidence: float = 0.95, resamples: int = 4000
                    ) -> tuple[float, float]:
    """Bootstrap interval of the median of ``values`` (percentile method, seeded).

    How far the per-round median could move in another run of as many rounds: a
    verdict whose interval straddles its target is within this run's noise.

    Parameters
    ----------
    values : numpy.ndarray
        One number per round (ours over native code in that round).
    confidence : float
        Share of the bootstrap medians inside the interval.
    resamples : int
        Number of bootstrap samples.

    Returns
    -------
    tuple of float
        The interval's low and high ends.
    """
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(values), size=(resamples, len(values)))
    medians = np.median(values[picks], axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(medians, [tail, 100 - tail])
    return float(low), float(high)


def summary(results: dict[str, Any]) -> str:
    """agnostic-saliency's time over native code's and other libraries', against the targets.

    Targets: at most 1.05 × native at the large batches, 1.5 × at batch 1; a target
    is met when both the ratio of medians and the median per-round ratio reach it, and
    a miss is "within noise" when the interval of the per-round median reaches it.
    """
    lines = ["", f"### Summary on {results.get('device', 'cpu')}: "
             "agnostic-saliency's median over the other's", "",
             "| framework | case | × native (target) | per round (IQR) | its 95 % CI "
             "| × Captum | × Xplique | × PAIR |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for key, framework in results["frameworks"].items():
        for case, stats in framework["cases"].items():
            ours = stats.get("agnostic-saliency")
            if ours is None:
                continue
            target = target_for(case)
            verdict = _verdict(ours, target)
            paired = (f"{ours['paired_ratio']:.3f} ({ours['paired_q1']:.3f}–"
                      f"{ours['paired_q3']:.3f}) | {ours['paired_ci'][0]:.3f}–"
                      f"{ours['paired_ci'][1]:.3f}{_rounds_note(ours)}")
            cells = []
            for prefix in ("captum", "xplique", "PAIR"):
                others = [entry for name, entry in stats.items() if name.startswith(prefix)]
                cells.append(" / ".join(f"{ours['median_ms'] / entry['median_ms']:.2g}"
                                        for entry in others) or "")
            lines.append(f"| {TITLES[key]} | {case} | {ours['ratio']:.3f} (≤ {target}: "
                         f"{verdict}) | {paired} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _rounds_note(ours: dict[str, Any]) -> str:
    """Where rounds were added to a case: how many rounds its verdict is over."""
    rounds = len(ours.get("times_ms", ()))
    first = ours.get("first_rounds")
    return f" ({rounds} rounds)" if first and rounds > first else ""


def _verdict(ours: dict[str, Any], target: float) -> str:
    """``"met"`` when the ratio of medians and the per-round median both reach
    ``target``; else ``"NOT met"``, with ``", within noise"`` when the interval of the
    per-round median still reaches it (more rounds would tell)."""
    if max(ours["ratio"], ours["paired_ratio"]) <= target:
        return "met"
    return "NOT met, within noise" if ours["paired_ci"][0] <= target else "NOT met"


def table(results: dict[str, Any]) -> str:
    """A Markdown table per framework: medians, IQR, ratio to native, first call, retraces."""
    lines = []
    for key, framework in results["frameworks"].items():
        lines += ["", f"### {TITLES[key]} on {_device_label(results, framework)}", "",
                  "| case | contender | median ms | IQR ms | × native | first call ms "
                  "| retraces | max diff |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for case, stats in framework["cases"].items():
            for name, entry in stats.items():
                retraces = entry.get("traces_while_timed")
                flag = "" if entry["max_difference"] <= TOLERANCE else " ⚠"
                lines.append(
                    f"| {case} | {name} | {entry['median_ms']:.3f} "
                    f"| {entry['q1_ms']:.3f}–{entry['q3_ms']:.3f} | {entry['ratio']:.3f} "
                    f"| {entry['first_call_ms']:.1f} | {'' if retraces is None else retraces} "
                    f"| {entry['max_difference']:.1e}{flag} |")
    return "\n".join(lines)


def _device_label(results: dict[str, Any], framework: dict[str, Any]) -> str:
    """``"cpu"``, or e.g. ``"cuda (NVIDIA H100 80GB HBM3)"`` from the child's versions.

    Results written before ``--device`` existed hold no device: they were on the CPU.
    """
    device = results.get("device", "cpu")
    name = framework["versions"].get("device_name", "")
    return f"{device} ({name})" if device != "cpu" and name else device


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    sys.exit(main())
