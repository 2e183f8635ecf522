"""`kubescribe` command: a thin dispatcher that imports each part only when its subcommand runs.

The runtime image has neither torch nor kopf, the operator image has neither onnxruntime nor
torch: importing a subcommand's module lazily keeps every image's CLI working.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence

from kubescribe import __version__
from kubescribe.errors import KubescribeError

# subcommand -> (module, function, one-line help); each function takes argv, returns an exit code.
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "serve": ("kubescribe_runtime.cli", "serve_main", "serve a model over the HTTP API"),
    "transcribe": ("kubescribe_runtime.cli", "transcribe_main", "transcribe audio files"),
    "fetch": ("kubescribe_runtime.cli", "fetch_main", "fetch and verify a model artifact"),
    "operator": ("kubescribe_operator.cli", "operator_main", "run the SpeechModel operator"),
    "render": ("kubescribe_operator.cli", "render_main", "print the objects for a SpeechModel"),
    "data": ("kubescribe_modeling.cli", "data_main", "synthesise the training corpus"),
    "train": ("kubescribe_modeling.cli", "train_main", "train a Conformer-CTC model"),
    "prune": ("kubescribe_modeling.cli", "prune_main", "prune and fine-tune a checkpoint"),
    "export": ("kubescribe_modeling.cli", "export_main", "export a checkpoint to an artifact"),
    "import": ("kubescribe_modeling.cli", "import_main", "import a Hugging Face CTC checkpoint"),
    "evaluate": ("kubescribe_modeling.cli", "evaluate_main", "measure WER of an artifact"),
    "reference": (
        "kubescribe_modeling.cli",
        "reference_main",
        "write the quality gate's reference clips into an artifact",
    ),
}


# Commands whose process runs onnxruntime beside numpy: onnxruntime's intra-op pool already uses
# the cores, and numpy's BLAS (the mel projection of the features) would start a second pool that
# contends with it (docs/benchmarks.md, finding 1). Set before numpy is first imported.
SINGLE_BLAS_THREAD_COMMANDS = frozenset({"serve", "transcribe"})


def pin_blas_threads(command: str) -> None:
    if command in SINGLE_BLAS_THREAD_COMMANDS:
        for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(variable, "1")


def _usage() -> str:
    lines = [f"kubescribe {__version__}", "", "usage: kubescribe COMMAND [ARGS...]", ""]
    lines += [f"  {name:<11} {help_}" for name, (_, _, help_) in SUBCOMMANDS.items()]
    lines += ["", "Run `kubescribe COMMAND --help` for a command's options."]
    return "\n".join(lines)


def _resolve(command: str) -> Callable[[Sequence[str]], int]:
    module_name, function_name, _ = SUBCOMMANDS[command]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = module_name.split("_")[1].split(".")[0]
        raise KubescribeError(
            f"`kubescribe {command}` needs the '{extra}' extra: "
            f"pip install 'kubescribe[{extra}]' ({exc})"
        ) from exc
    function: Callable[[Sequence[str]], int] = getattr(module, function_name)
    return function


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if args[0] in ("-V", "--version", "version"):
        print(__version__)
        return 0
    command, rest = args[0], args[1:]
    if command not in SUBCOMMANDS:
        print(f"kubescribe: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    pin_blas_threads(command)
    try:
        return _resolve(command)(rest)
    except KubescribeError as exc:
        print(f"kubescribe {command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"kubescribe {command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
