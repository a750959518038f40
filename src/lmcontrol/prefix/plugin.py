"""Registry entries for prefix-tuning, prefix libraries and prompt compression (light: no torch at import)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from lmcontrol.registry import register_command, register_control, register_demo, register_suite, register_trainer


def _lazy(module: str, attr: str) -> Any:
    def factory(*args: Any, **kwargs: Any) -> Any:
        import importlib

        return getattr(importlib.import_module(module), attr)(*args, **kwargs)

    return factory


def _prefix_control(spec: Any, lm: Any) -> Any:
    from lmcontrol import LMControlError
    from lmcontrol.prefix.control import PrefixLibrary, single_prefix_control

    spec.check_keys(())
    if len(spec.args) != 1:
        raise LMControlError(f"--control {spec.text}: give one artifact directory, e.g. {spec.kind}:DIR")
    if spec.kind == "prefix-library":
        return PrefixLibrary.from_dir(spec.args[0], lm)
    return single_prefix_control(spec.args[0], lm)


def _train_factory() -> Any:
    def train_prefix(
        out: Annotated[Path, typer.Option(help="Artifact directory (checkpoints go to OUT/checkpoint).")],
        data: Annotated[str, typer.Option(help="Data spec the data module reads (name[:subset] or a file).")] = "e2e",
        examples: Annotated[int | None, typer.Option(help="Training examples (seeded sample; default all).")] = 2000,
        length: Annotated[int, typer.Option(help="Prefix length m (virtual tokens).")] = 10,
        steps: Annotated[int, typer.Option(help="Optimiser steps.")] = 150,
        batch_size: Annotated[int, typer.Option(help="Examples per step.")] = 8,
        lr: Annotated[float, typer.Option(help="AdamW learning rate (cosine decay).")] = 1e-3,
        reparam_hidden: Annotated[int, typer.Option(help="Reparameterisation MLP width (0 = none).")] = 512,
        init: Annotated[str, typer.Option(help="'words' (KV of --init-text) or 'random'.")] = "words",
        init_text: Annotated[
            str, typer.Option(help="Words for --init words.")
        ] = "Describe the table in one fluent sentence.",
        template: Annotated[
            str, typer.Option(help="Prompt text; {input} is replaced by the input field.")
        ] = "{input}\n",
        chat: Annotated[bool, typer.Option(help="Wrap prompts in the chat template (generate the same way).")] = False,
        input_field: Annotated[str, typer.Option(help="Input field of the data.")] = "src",
        target_field: Annotated[str, typer.Option(help="Target field of the data.")] = "text",
        split: Annotated[str, typer.Option(help="Split to train on.")] = "train",
        max_length: Annotated[int, typer.Option(help="Tokens per example (prompt + target).")] = 128,
        eval_data: Annotated[
            str | None, typer.Option(help="Data with references to score (e2e: e2e:tokenized).")
        ] = None,
        eval_n: Annotated[int, typer.Option(help="Test rows to score with BLEU / ROUGE-L (0 = none).")] = 100,
        seed: Annotated[int, typer.Option(help="Seed (data sample, init, batches).")] = 0,
        model: Annotated[str | None, typer.Option(help="Base model (default: embedded).")] = None,
        checkpoint_every: Annotated[int, typer.Option(help="Steps between checkpoints.")] = 25,
        resume: Annotated[bool, typer.Option(help="Continue from OUT/checkpoint.")] = False,
    ) -> None:
        """Prefix-tuning (Li & Liang 2021): learn per-layer key/value prefixes of a frozen LM."""
        from rich.console import Console

        from lmcontrol.prefix.train import run_train_command

        metrics = run_train_command(
            data=data,
            split=split,
            examples=examples,
            length=length,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            reparam_hidden=reparam_hidden,
            init=init,
            init_text=init_text,
            template=template,
            chat=chat,
            input_field=input_field,
            target_field=target_field,
            max_length=max_length,
            eval_data=eval_data,
            eval_n=eval_n,
            seed=seed,
            model=model,
            out=out,
            resume=resume,
            checkpoint_every=checkpoint_every,
        )
        Console().print(f"saved {out}: " + ", ".join(f"{k}={v}" for k, v in metrics.items()))

    return train_prefix


def _compress_factory() -> Any:
    def compress(
        prompt_file: Annotated[Path, typer.Option(help="Text file with the long prompt P.")],
        out: Annotated[Path, typer.Option(help="Artifact directory.")],
        tokens: Annotated[int, typer.Option(help="k, the number of soft tokens.")] = 16,
        inputs: Annotated[Path | None, typer.Option(help="JSON with 'train' user inputs (default: beside P).")] = None,
        steps: Annotated[int, typer.Option(help="Optimiser steps.")] = 150,
        lr: Annotated[float, typer.Option(help="AdamW learning rate on the KV tensors.")] = 1e-2,
        samples: Annotated[int, typer.Option(help="Teacher responses per input (1 greedy + sampled).")] = 2,
        batch_size: Annotated[int, typer.Option(help="Teacher responses per step.")] = 4,
        seed: Annotated[int, typer.Option(help="Seed.")] = 0,
        model: Annotated[str | None, typer.Option(help="Base model (default: embedded).")] = None,
        resume: Annotated[bool, typer.Option(help="Continue from OUT/checkpoint.")] = False,
    ) -> None:
        """Compress a long prompt into k soft key/value tokens (gisting, Mu et al. 2023)."""
        from rich.console import Console

        from lmcontrol.prefix.compress import run_compress_command

        metrics = run_compress_command(
            prompt_file=prompt_file,
            out=out,
            tokens=tokens,
            inputs=inputs,
            steps=steps,
            lr=lr,
            seed=seed,
            model=model,
            resume=resume,
            samples=samples,
            batch_size=batch_size,
        )
        Console().print(f"saved {out}: " + ", ".join(f"{k}={v}" for k, v in metrics.items()))

    return compress


ARTIFACTS = Path(__file__).resolve().parents[3] / "artifacts"
DEMO_MRS = [
    "name : The Eagle | Type : coffee shop | food : French | price : moderate | area : riverside | near : Burger King",
    "name : Blue Spice | Type : restaurant | food : Italian | customer rating : 5 out of 5 | family friendly : yes",
]
DEMO_QUESTIONS = ["What is the tallest mountain in the world?", "How do I keep my houseplants alive?"]
DEMO_COMPRESSED = "compressed-pirate"  # the demo shows one compressed prompt (this one, else the first committed)


def prefix_demo(lm: Any, console: Any, max_new_tokens: int) -> None:
    """E2E data-to-text with the committed prefix, and a compressed prompt, each beside the base model."""
    from rich.table import Table

    from lmcontrol.generation import GenerationConfig, generate
    from lmcontrol.prefix.compress import load_prompt_spec
    from lmcontrol.prefix.control import single_prefix_control

    e2e = ARTIFACTS / "prefix-e2e"
    if (e2e / "config.json").is_file():
        cfg = GenerationConfig(max_new_tokens=max_new_tokens, chat=False)
        prompts = [m + "\n" for m in DEMO_MRS]
        base = generate(lm, prompts, cfg)
        tuned = generate(lm, prompts, cfg, [single_prefix_control(e2e, lm)])
        table = Table("E2E table", "base model", "+ 10-token prefix", title="prefix-tuning", show_lines=True)
        for i, m in enumerate(DEMO_MRS):
            table.add_row(m, base.texts[i].strip(), tuned.texts[i].strip())
        console.print(table)
    else:
        console.print(f"no E2E prefix at {e2e}")
    committed = sorted(ARTIFACTS.glob("compressed-*"), key=lambda d: d.name != DEMO_COMPRESSED)
    for comp in committed[:1]:
        from lmcontrol.artifacts import read_meta

        meta = read_meta(comp)
        spec = load_prompt_spec(
            Path(__file__).resolve().parents[1] / "assets" / "prompts" / f"{meta.extra['prompt_name']}.txt"
        )
        cfg = GenerationConfig(max_new_tokens=max_new_tokens)
        base = generate(lm, DEMO_QUESTIONS, cfg)
        full = generate(lm, DEMO_QUESTIONS, GenerationConfig(max_new_tokens=max_new_tokens, system=spec.text))
        soft = generate(lm, DEMO_QUESTIONS, cfg, [single_prefix_control(comp, lm)])
        m = meta.metrics
        rule = spec.rule["description"] if spec.rule else ""
        table = Table(
            "question",
            "no prompt",
            f"full prompt ({m['prompt_tokens']} tokens)",
            f"{m['soft_tokens']} soft tokens",
            title=f"compressed prompt '{spec.name}' ({m['compression_ratio']}x): {rule}",
            show_lines=True,
        )
        for i, q in enumerate(DEMO_QUESTIONS):
            table.add_row(q, base.texts[i], full.texts[i], soft.texts[i])
        console.print(table)
        console.print(
            f"time to first token: full prompt {full.first_token_seconds:.2f}s, soft {soft.first_token_seconds:.2f}s"
        )


register_control(
    "prefix", _prefix_control, "prefix-tuning KV prefix for every row, prefix:DIR (a raw-text prefix turns chat off)"
)
register_control(
    "prefix-library",
    _prefix_control,
    "many prefixes in one batch; a JSONL 'prefix' field picks each row's, prefix-library:DIR",
)
register_control("compressed", _prefix_control, "a long prompt compressed into k soft KV tokens, compressed:DIR")
register_trainer("prefix", _train_factory, "Prefix-tuning (Li & Liang 2021) of the frozen LM on input/target pairs.")
register_command("compress", _compress_factory, "Compress a long prompt into k soft tokens (gisting).")
register_demo("prefix", prefix_demo, "E2E prefix and a compressed prompt vs the base model")


def _e2e_rows(n: int) -> list[dict[str, Any]]:
    from lmcontrol.data import load_dataset

    rows = load_dataset("e2e:tokenized", split="test", limit=n)
    return [{"prompt": r["src"] + "\n", "reference": r["references"]} for r in rows]


def _suite() -> Any:
    """``lmcontrol bench prefix``: the base model vs the committed E2E prefix on E2E test MRs (BLEU, ROUGE-L).
    The full comparison (LoRA, full fine-tuning, throughput, compression) is ``benchmarks/prefix.py``."""
    from lmcontrol.bench.suite import BenchMethod, BenchSuite
    from lmcontrol.generation import GenerationConfig
    from lmcontrol.prefix.control import single_prefix_control

    return BenchSuite(
        name="prefix",
        prompts=_e2e_rows,
        methods=(
            BenchMethod("base", help="the frozen model on the table string"),
            BenchMethod(
                "prefix-e2e",
                controls=lambda lm: [single_prefix_control(ARTIFACTS / "prefix-e2e", lm)],
                help="+ the committed 10-token E2E prefix",
            ),
        ),
        metrics=("bleu", "rouge"),
        generation=GenerationConfig(max_new_tokens=40, temperature=0.0, chat=False),
        batch_size=16,
        help="E2E data-to-text: base model vs the committed prefix (BLEU, ROUGE-L)",
    )


register_suite("prefix", _suite, "E2E data-to-text: base model vs the committed prefix (BLEU, ROUGE-L)")
