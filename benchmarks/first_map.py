"""Time to the first map in a fresh process: agnostic-saliency against native code.

Usage::

    python benchmarks/first_map.py [--frameworks torch keras-tf keras-jax jax jax-nnx]
                                   [--repeats 5] [--batch 8] [--image-size 160]
                                   [--out benchmarks/results/first_map]

Each run is a new Python process that imports the framework (and, for ours,
``agnostic_saliency``), builds a ResNet-18 (``_real_<framework>.py``), and computes
the first map of a batch: ``Saliency(model).explain(x, targets)`` for ours, the
framework's hand-written gradient code for native (tracing and compilation
included). The time is from just before the process is started to the moment its
first map exists, so the interpreter's start counts for both. Runs alternate
between native code and ours, framework by framework, after one untimed run per
framework (it warms the disk cache). The table gives medians over ``--repeats``,
the difference ours - native against the issue's target (at most 0.3 s), and where
each variant's time goes (imports, model build, first call).
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: Command-line name: the package a user imports first ("jax": a plain function that
#: closes over its parameters; "jax-nnx": a Flax NNX module holding them).
PACKAGES = {"torch": "torch", "keras-tf": "keras", "keras-jax": "keras", "jax": "jax",
            "jax-nnx": "flax.nnx"}
#: Where a command-line name differs from its ``_real_common`` framework, that framework
#: and the function of its module that makes our contender.
VARIANT_OF = {"jax-nnx": ("jax", "ours_nnx")}
VARIANTS = ("native", "ours")
#: Most seconds ours may add to native code's time to the first map.
TARGET_S = 0.3
#: Marks the child's line of results on its standard output.
MARK = "FIRST-MAP "


def main(argv: list[str] | None = None) -> int:
    """Time every framework's fresh processes (or, with ``--child``, be one)."""
    args = _parser().parse_args(argv)
    if args.child:
        return _child(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, dict[str, list[dict[str, float]]]] = {}
    for framework in args.frameworks:
        print(f"--- {framework}", flush=True)
        _fresh_run(framework, "native", args)  # untimed: warms the disk cache
        runs[framework] = {variant: [] for variant in VARIANTS}
        for repeat in range(args.repeats):
            order = VARIANTS if repeat % 2 == 0 else VARIANTS[::-1]
            for variant in order:
                runs[framework][variant].append(_fresh_run(framework, variant, args))
        print("  " + ", ".join(f"{variant} {_median(found, 'total_s'):.2f} s"
                               for variant, found in runs[framework].items()), flush=True)
    results = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/first_map.py", *(argv or sys.argv[1:])]),
        "image": args.image_size, "batch": args.batch, "repeats": args.repeats,
        "tiny": args.tiny, "target_s": TARGET_S, "runs": runs, "summary": summarize(runs),
    }
    text = table(results)
    from _real_common import write_results

    write_results(out, results, text)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frameworks", nargs="+", choices=list(PACKAGES),
                        default=list(PACKAGES))
    parser.add_argument("--repeats", type=int, default=5,
                        help="fresh processes per framework and variant (default 5)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--tiny", action="store_true",
                        help="a narrow ResNet-18 with 10 classes: a smoke test")
    parser.add_argument("--out", default="benchmarks/results/first_map")
    parser.add_argument("--child", choices=list(PACKAGES), help=argparse.SUPPRESS)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    return parser


def _fresh_run(framework: str, variant: str, args: argparse.Namespace) -> dict[str, float]:
    """Start a child process for ``framework`` and ``variant``; return its times.

    ``total_s`` runs from just before the process starts to the child's first map
    (both read from the wall clock); the child's own phases are added.
    """
    from _real_common import child_env

    command = [sys.executable, __file__, "--child", framework, "--variant", variant,
               "--batch", str(args.batch), "--image-size", str(args.image_size)]
    if args.tiny:
        command.append("--tiny")
    start = time.time()
    real = VARIANT_OF.get(framework, (framework, "ours"))[0]
    done = subprocess.run(command, check=False, env=child_env(real),
                          capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARK)]
    if done.returncode or not lines:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"first_map.py: the {variant} run of {framework} exited with code "
                         f"{done.returncode}: its output is above")
    found: dict[str, float] = json.loads(lines[-1][len(MARK):])
    found["total_s"] = found.pop("done_at") - start
    return found


def _child(args: argparse.Namespace) -> int:
    """One fresh run: import, build a ResNet-18, compute the first map; print the times."""
    import importlib
    from dataclasses import replace

    from _real_common import Config, framework_module

    base = Config().tiny() if args.tiny else Config()
    config = replace(base, image=args.image_size, batch=args.batch)
    start = time.perf_counter()
    importlib.import_module(PACKAGES[args.child])
    if args.variant == "ours":
        import agnostic_saliency  # noqa: F401
    real, ours = VARIANT_OF.get(args.child, (args.child, "ours"))
    module = framework_module(real)
    imported = time.perf_counter()
    model = module.build("resnet18", config)
    x, y = config.inputs(module.channels_first)
    built = time.perf_counter()
    maps = getattr(module, ours if args.variant == "ours" else "native")(model, x, y)()
    done_at, finished = time.time(), time.perf_counter()
    if np.shape(maps) != (config.batch, config.image, config.image):
        raise SystemExit(f"first_map.py: maps of shape {np.shape(maps)}, expected "
                         f"{(config.batch, config.image, config.image)}")
    print(MARK + json.dumps({"done_at": done_at, "import_s": imported - start,
                             "build_s": built - imported, "first_call_s": finished - built}),
          flush=True)
    return 0


def _median(runs: list[dict[str, float]], key: str) -> float:
    return float(np.median([run[key] for run in runs]))


def summarize(runs: dict[str, dict[str, list[dict[str, float]]]]) -> dict[str, dict[str, Any]]:
    """Per framework: each variant's median phases, and ours - native in total seconds."""
    summary: dict[str, dict[str, Any]] = {}
    for framework, variants in runs.items():
        entry: dict[str, Any] = {
            variant: {key: _median(found, key)
                      for key in ("total_s", "import_s", "build_s", "first_call_s")}
            for variant, found in variants.items()}
        for variant, found in variants.items():
            q1, q3 = np.percentile([run["total_s"] for run in found], [25, 75])
            entry[variant].update(q1_s=float(q1), q3_s=float(q3))
        entry["difference_s"] = entry["ours"]["total_s"] - entry["native"]["total_s"]
        entry["met"] = entry["difference_s"] <= TARGET_S
        summary[framework] = entry
    return summary


def table(results: dict[str, Any]) -> str:
    """A Markdown table: medians of time to the first map, the difference, the phases."""
    lines = [f"### Time to the first map in a fresh process: ResNet-18, batch "
             f"{results['batch']}, 3x{results['image']}x{results['image']}, "
             f"median of {results['repeats']}", "",
             "| framework | native s (IQR) | ours s (IQR) | ours − native s "
             f"| ≤ {TARGET_S} s | native import / build / first call s "
             "| ours import / build / first call s |",
             "|---|---:|---:|---:|---|---:|---:|"]
    for framework, entry in results["summary"].items():
        cells = []
        for variant in VARIANTS:
            phases = entry[variant]
            cells.append(f"{phases['import_s']:.2f} / {phases['build_s']:.2f} / "
                         f"{phases['first_call_s']:.2f}")
        lines.append(
            f"| {framework} | {_spread(entry['native'])} | {_spread(entry['ours'])} "
            f"| {entry['difference_s']:+.2f} | {'met' if entry['met'] else 'NOT met'} "
            f"| {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def _spread(phases: dict[str, float]) -> str:
    return f"{phases['total_s']:.2f} ({phases['q1_s']:.2f}–{phases['q3_s']:.2f})"


if __name__ == "__main__":
    sys.exit(main())
