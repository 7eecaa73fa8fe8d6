"""The ``agnostic-saliency`` command: ``demo``, ``explain``, ``evaluate`` and ``backends``.

No traceback reaches the user: an error ends with one line on stderr (and a
second naming its cause, such as the framework's message) and exit status 2;
Ctrl-C ends with exit status 130 and how far the job got.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]

METHODS = ("saliency", "gradientinput", "smoothgrad", "squaregrad", "vargrad",
           "integratedgradients")
#: Exit status after Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130


def _explain_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    explain = commands.add_parser(
        "explain", help="explain a saved model on a data set",
        description="Explain a saved model on a data set, batch by batch; a .zarr output "
                    "resumes after any interruption with --resume.")
    explain.add_argument("model", help=".keras file, TorchScript/torch.export file, TensorFlow "
                         "SavedModel directory, or serialized jax.export function")
    explain.add_argument("inputs", metavar="DATA", help=".npy (memory-mapped), .npz (--key), a "
                         "Zarr array, or a folder of images (searched recursively)")
    explain.add_argument("--out", required=True, help="maps.npy, or maps.zarr (resumable)")
    explain.add_argument("--resume", action="store_true",
                         help="complete an interrupted .zarr output: only missing chunks")
    explain.add_argument("--targets", help="an int, 'predicted' (default), a .npy file, or "
                         "'folders' (the class sub-folders of a folder of images)")
    explain.add_argument("--batch-size", type=int, default=32,
                         help="samples per batch (one Zarr chunk each; default 32)")
    explain.add_argument("--backend", help="force a backend (e.g. jax)")
    explain.add_argument("--channel-axis", type=int, help="channel axis of array inputs")
    explain.add_argument("--key", help="array name inside an .npz file or a Zarr group")
    method = explain.add_argument_group("method")
    method.add_argument("--method", default="saliency", choices=METHODS)
    method.add_argument("--nb-samples", type=int, help="noisy copies per input (smoothing)")
    method.add_argument("--noise", type=float, help="noise standard deviation (smoothing)")
    method.add_argument("--steps", type=int, help="path points (integratedgradients)")
    method.add_argument("--baseline", type=float, help="baseline value (integratedgradients)")
    method.add_argument("--preset", choices=("xplique", "captum", "pair"),
                        help="another library's definitions")
    method.add_argument("--reducer", choices=("max", "mean", "min", "sum", "none"),
                        help="channel reduction of image maps ('none' keeps channels)")
    method.add_argument("--seed", type=int, help="noise seed of smoothing methods (default 0)")
    images = explain.add_argument_group("folders of images")
    images.add_argument("--layout", choices=("nchw", "nhwc"),
                        help="default: the backend's convention (nchw for PyTorch)")
    images.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                        help="resize every image")
    images.add_argument("--normalize", type=_floats, nargs=2, metavar=("MEAN", "STD"),
                        help="per channel, comma-separated (e.g. 0.485,0.456,0.406 "
                             "0.229,0.224,0.225), or one value for all")
    images.add_argument("--grayscale", action="store_true", help="read images as one channel")
    explain.add_argument("--png", help="folder for one PNG overlay per input (checked first)")
    scale = explain.add_argument_group("Ray Data (the [ray] extra)")
    scale.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                       help="run on Ray: a local cluster, or the cluster at ADDRESS")
    scale.add_argument("--workers", type=int, default=2, help="actors, one model each")
    scale.add_argument("--gpus-per-worker", type=float, default=0, help="GPUs per actor")
    explain.add_argument("--quiet", action="store_true", help="no progress")
    explain.add_argument("--strict", action="store_true",
                         help="fail instead of warning about all-zero maps, probability "
                              "outputs or precision casts")


def _floats(text: str) -> list[float]:
    try:
        return [float(value) for value in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or comma-separated "
                                         "numbers") from None


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
    _explain_parser(commands)
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
    except KeyboardInterrupt as interrupt:
        text = str(interrupt) if str(interrupt).startswith("interrupted") else \
            "interrupted before any sample was explained"
        print(f"agnostic-saliency: {text}", file=sys.stderr)
        return INTERRUPTED
    except Exception as error:  # any failure: its message, never a traceback
        print(f"agnostic-saliency: error: {_lines(error)}", file=sys.stderr)
        return 2
    return 0


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    if not text:
        return type(error).__name__
    return text[0] if isinstance(error, (ValueError, OSError, RuntimeError)) \
        else f"{type(error).__name__}: {text[0]}"


def _lines(error: BaseException) -> str:
    """The error's first line, and its root cause's on a second line if it adds to it."""
    first = _first_line(error)
    cause = error
    while cause.__cause__ is not None:
        cause = cause.__cause__
    if cause is error:
        return first
    reason = _first_line(cause)
    return first if reason in first or str(cause).strip() in first else \
        f"{first}\n  cause: {reason}"


if __name__ == "__main__":
    sys.exit(main())
