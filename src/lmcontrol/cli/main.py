"""The ``lmcontrol`` command line.

Heavy libraries (torch, transformers) are imported inside the commands, so ``lmcontrol --help`` starts fast.
Every user error is an ``LMControlError``: it is printed as one line on stderr and the exit code is 2.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from lmcontrol import LMControlError

app = typer.Typer(
    name="lmcontrol",
    help="Control pretrained language models without retraining them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
train_app = typer.Typer(help="Train a control artifact (value network, probe, prefix, ...).", no_args_is_help=True)
app.add_typer(train_app, name="train")


def fail(message: str) -> None:
    """Raise the one-line user error the entry point turns into exit code 2."""
    raise LMControlError(message)


def _quiet_libraries() -> None:
    # transformers/tqdm chatter would bury our one-line errors and tables.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # LMCONTROL_LOG_LEVEL=INFO shows the trainers' progress lines (rewards, success rates) on long runs
    level = os.environ.get("LMCONTROL_LOG_LEVEL", "WARNING").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise LMControlError(f"LMCONTROL_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
    logging.basicConfig(level=getattr(logging, level), format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("huggingface_hub", "transformers", "accelerate", "sentence_transformers"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    if "transformers" in sys.modules:  # imported before us (tests, notebooks): the env var came too late
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


@app.command()
def generate(
    prompt: Annotated[str | None, typer.Option("--prompt", "-p", help="One prompt.")] = None,
    prompts: Annotated[
        Path | None,
        typer.Option(
            "--prompts",
            help="JSONL file with a 'prompt' field per row (other fields are passed to controls, e.g. 'prefix').",
        ),
    ] = None,
    model: Annotated[str | None, typer.Option(help="HF id or local path; default: embedded SmolLM2-135M.")] = None,
    weights: Annotated[
        str, typer.Option(help="dense | fp16-packed (linear weights as fp16 for fbgemm: faster on CPUs).")
    ] = "dense",
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate per prompt.")] = 64,
    temperature: Annotated[float, typer.Option(help="0 = greedy.")] = 0.0,
    top_k: Annotated[int, typer.Option(help="Top-k filter (0 = off).")] = 0,
    top_p: Annotated[float, typer.Option(help="Nucleus filter (1 = off).")] = 1.0,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    control: Annotated[
        list[str] | None,
        typer.Option("--control", "-c", help="kind:args (repeatable); see `lmcontrol controls`."),
    ] = None,
    prefix_library: Annotated[
        Path | None, typer.Option(help="Directory of prefix artifacts; each row's 'prefix' field picks one.")
    ] = None,
    stop: Annotated[list[str] | None, typer.Option(help="Stop string (repeatable).")] = None,
    chat: Annotated[bool, typer.Option(help="Wrap prompts in the chat template.")] = True,
    system: Annotated[str | None, typer.Option(help="System message.")] = None,
    batch_size: Annotated[int, typer.Option(help="Prompts per batch.")] = 8,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write JSONL rows here.")] = None,
) -> None:
    """Generate continuations, optionally under one or more controls."""
    from lmcontrol.cli.generate_cmd import run_generate

    if prefix_library is not None and not prefix_library.is_dir():
        fail(f"--prefix-library {prefix_library} is not a directory")
    run_generate(
        prompt=prompt,
        prompts_file=prompts,
        model=model,
        weights=weights,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
        controls=(control or []) + ([f"prefix-library:{prefix_library}"] if prefix_library else []),
        stop=stop or [],
        chat=chat,
        system=system,
        batch_size=batch_size,
        output=output,
    )


@app.command()
def models() -> None:
    """Show the embedded models and where their caches live."""
    from lmcontrol.cli.generate_cmd import run_models

    run_models()


@app.command()
def controls() -> None:
    """List the registered --control kinds, bench suites and trainers."""
    from rich.console import Console
    from rich.table import Table

    from lmcontrol import registry

    table = Table("kind", "what", title="--control kinds")
    for name, entry in sorted(registry.controls().items()):
        table.add_row(name, entry.help)
    Console().print(table)
    table = Table("suite", "what", title="bench suites")
    for name, entry in sorted(registry.suites().items()):
        table.add_row(name, entry.help)
    Console().print(table)


@app.command()
def demo(
    max_new_tokens: Annotated[int, typer.Option(help="Tokens per generation.")] = 40,
) -> None:
    """Show the embedded model with and without controls, side by side."""
    from lmcontrol.cli.demo_cmd import run_demo
    from lmcontrol.cli.generate_cmd import check_generation_flags

    check_generation_flags(max_new_tokens, [], 1)
    run_demo(max_new_tokens=max_new_tokens)


@app.command("eval")
def eval_(
    file: Annotated[
        Path, typer.Argument(help="JSONL with 'prompt' and 'continuation' (optional 'method', 'reference').")
    ],
    metrics: Annotated[
        str, typer.Option(help="Comma-separated metrics; see `lmcontrol eval --help`.")
    ] = "ppl,dist,diversity,coherence",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the results JSON here.")] = None,
    judge: Annotated[str | None, typer.Option(help="Judge LM for perplexity (default: embedded).")] = None,
) -> None:
    """Score generations with the evaluation suite; prints a table grouped by method."""
    from lmcontrol.cli.eval_cmd import run_eval

    run_eval(file=file, metrics=metrics, output=output, judge=judge)


@app.command()
def bench(
    suite: Annotated[str, typer.Argument(help="Suite name (listed below and by `lmcontrol controls`).")],
    prompts: Annotated[
        Path | None,
        typer.Option(
            "--prompts",
            "--targets",
            help="JSONL with a 'prompt' field (default: the suite's own); --targets is an alias.",
        ),
    ] = None,
    n: Annotated[int, typer.Option(help="Number of prompts.")] = 50,
    samples: Annotated[int, typer.Option(help="Samples per prompt.")] = 1,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    methods: Annotated[str | None, typer.Option(help="Comma-separated subset of the suite's methods.")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="Override the suite's generation length.")] = None,
    out: Annotated[Path, typer.Option(help="Output directory (re-running resumes).")] = Path("runs/bench"),
    list_methods: Annotated[bool, typer.Option("--list-methods", help="Name the suite's methods and exit.")] = False,
) -> None:
    """Run a benchmark suite: several methods, same prompts, one process; writes JSONL, JSON, report and plots."""
    from lmcontrol.cli.bench_cmd import run_bench

    run_bench(
        suite=suite,
        prompts=prompts,
        n=n,
        samples=samples,
        seed=seed,
        methods=methods,
        max_new_tokens=max_new_tokens,
        out=out,
        list_methods=list_methods,
    )


def _register_plugins() -> None:
    """Add `train <method>` and other plugin commands (plugins are light: no heavy imports at load)."""
    from lmcontrol import registry

    # Idempotent: `main` may run many times in one process (tests, notebooks); registering again would append
    # a duplicate of every command each time and make each call slower than the last.
    have_train = {info.name for info in train_app.registered_commands}
    have = {info.name for info in app.registered_commands}
    for name, entry in sorted(registry.trainers().items()):
        if name not in have_train:
            train_app.command(name=name, help=entry.help)(entry.factory())
    for extra in registry.commands().values():
        if extra.name not in have:
            app.command(name=extra.name, help=extra.help)(extra.factory())
    for info in app.registered_commands:  # `lmcontrol bench --help` names every registered suite
        if info.callback is bench:
            info.epilog = "Suites:\n\n" + "\n\n".join(
                f"{name} — {entry.help}" for name, entry in sorted(registry.suites().items())
            )


def _usage_error_types() -> tuple[type[BaseException], ...]:
    """The usage-error classes of typer's own click copy (typer >= 0.29) and of click itself, if installed."""
    types: list[type[BaseException]] = []
    try:
        from typer._click.exceptions import ClickException as TyperClickException

        types.append(TyperClickException)
    except ImportError:  # older typer: it uses click directly
        pass
    try:
        import click

        types.append(click.ClickException)
    except ImportError:
        pass
    return tuple(types)


def _abort_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = []
    try:
        from typer.exceptions import Abort as TyperAbort

        types.append(TyperAbort)
    except ImportError:
        pass
    try:
        import click

        types.append(click.exceptions.Abort)
    except ImportError:
        pass
    return tuple(types)


def one_line(message: str) -> str:
    """``message`` folded onto one line (user errors must never span several)."""
    return " ".join(str(message).split())


def _usage_message(e: BaseException) -> str:
    ctx = getattr(e, "ctx", None)
    where = f"{ctx.command_path}: " if ctx is not None and getattr(ctx, "command_path", None) else ""
    hint = f" (see '{ctx.command_path} --help')" if where else ""
    text = e.format_message() if hasattr(e, "format_message") else str(e)  # type: ignore[union-attr]
    return one_line(f"{where}{text}{hint}")


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: one-line errors on stderr, exit code 2 for bad input (usage errors too)."""
    usage_errors, aborts = _usage_error_types(), _abort_types()
    try:
        _quiet_libraries()
        _register_plugins()
        app(args=argv, standalone_mode=False, prog_name="lmcontrol")
    except LMControlError as e:
        print(f"error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except aborts:
        print("aborted", file=sys.stderr)
        return 130
    except usage_errors as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # `lmcontrol` or `lmcontrol train` alone: show the help
            ctx = getattr(e, "ctx", None)
            print(ctx.get_help() if ctx is not None else e.format_message())  # type: ignore[union-attr]
            return 0
        print(f"error: {_usage_message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:  # typer/click may still raise SystemExit for --help etc.
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
