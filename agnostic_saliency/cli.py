"""The ``agnostic-saliency`` command: ``demo``, ``explain``, ``evaluate`` and ``backends``.

A mistake by the user (a missing file, an unknown format, mismatched shapes)
ends with one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]

METHODS = ("saliency", "gradientinput", "smoothgrad", "squaregrad", "vargrad",
           "integratedgradients")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agnostic-saliency",
        description="Saliency maps for PyTorch, TensorFlow, Keras 3 and JAX models.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="explain a small digits CNN in every framework")
    demo.add_argument("--out", default="grid.png", help="PNG grid to write (default grid.png)")
    demo.add_argument("--frameworks", nargs="+", choices=("torch", "tensorflow", "keras", "jax"))
    demo.add_argument("--keras-backends", action="store_true",
                      help="also run Keras on its JAX and PyTorch backends (child processes)")
    explain = commands.add_parser("explain", help="explain a saved model on saved inputs")
    explain.add_argument("model", help=".keras file, TorchScript/torch.export file, TensorFlow "
                         "SavedModel directory, or serialized jax.export function")
    explain.add_argument("inputs", help=".npy, .npz, or a folder of images")
    explain.add_argument("--out", required=True, help="maps to write (.npy)")
    explain.add_argument("--targets", help="an int, 'predicted' (default), or a .npy file")
    explain.add_argument("--method", default="saliency", choices=METHODS)
    explain.add_argument("--batch-size", type=int, default=32)
    explain.add_argument("--backend", help="force a backend (e.g. jax)")
    explain.add_argument("--channel-axis", type=int)
    explain.add_argument("--key", help="array name inside an .npz file")
    explain.add_argument("--png", help="folder for one PNG overlay per input")
    explain.add_argument("--seed", type=int, default=0, help="noise seed of smoothing methods")
    explain.add_argument("--quiet", action="store_true", help="no progress bar")
    explain.add_argument("--strict", action="store_true",
                         help="fail instead of warning about all-zero maps, probability "
                              "outputs or precision casts")
    commands.add_parser("backends", help="list the installed backends")
    from agnostic_saliency._cli_evaluate import add_parser as add_evaluate

    add_evaluate(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            from agnostic_saliency.demo import run_demo

            run_demo(args.out, frameworks=args.frameworks, keras_backends=args.keras_backends)
        elif args.command == "explain":
            from agnostic_saliency._cli_explain import run_explain

            run_explain(args)
        elif args.command == "evaluate":
            from agnostic_saliency._cli_evaluate import run_evaluate

            run_evaluate(args)
        else:
            from agnostic_saliency.registry import list_backends

            print("\n".join(list_backends()))
    except (OSError, ValueError, TypeError, RuntimeError, ImportError, KeyError) as error:
        print(f"agnostic-saliency: error: {_one_line(error)}", file=sys.stderr)
        return 2
    return 0


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
