"""Benchmark suites: which methods run side by side, on which prompts, scored by which metrics.

A method package registers a suite in its light ``plugin.py``; ``lmcontrol bench NAME`` then runs it::

    # lmcontrol/mymethod/plugin.py
    from lmcontrol import registry

    def _suite():
        from lmcontrol.bench.suite import BenchMethod, BenchSuite, rows_from_dataset
        from lmcontrol.generation import GenerationConfig

        def my_controls(lm):  # built once per run, reused for every batch
            from lmcontrol.mymethod.control import MyControl
            return [MyControl.from_pretrained("artifacts/mymethod", lm)]

        return BenchSuite(
            name="mymethod",
            prompts=rows_from_dataset("hh-rlhf:helpful-base", field="first_human"),
            methods=(
                BenchMethod("base"),                                  # the baseline comes first
                BenchMethod("mymethod", controls=my_controls),
                BenchMethod("mymethod-greedy", controls=my_controls, overrides={"temperature": 0.0}),
            ),
            metrics=("ppl", "diversity", "coherence", "reward"),
            generation=GenerationConfig(max_new_tokens=64, temperature=0.7, top_p=0.9),
        )

    registry.register_suite("mymethod", _suite, "my method vs plain sampling on HH prompts")

A method is either controls for the shared decoding loop (``controls(lm) -> list[Control]`` plus
``GenerationConfig`` overrides) or, for methods with their own sampler (diffusion), a generic
``run(lm, prompts, config) -> GenerationOutput``. The first method is the baseline of the timing ratios.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from lmcontrol import LMControlError
from lmcontrol.generation import GenerationConfig

if TYPE_CHECKING:
    from pathlib import Path

    from lmcontrol.controls import Control
    from lmcontrol.generation import GenerationOutput
    from lmcontrol.models import LanguageModel

Row = dict[str, Any]
PromptLoader = Callable[[int], list[Row]]  # n -> the first n rows: {"prompt", optional "reference", ...}


@dataclasses.dataclass(frozen=True)
class BenchMethod:
    """One contender: plain decoding, decoding under controls, or its own generator.

    Args:
        name: column name in the results.
        controls: ``controls(lm) -> list[Control]``, built once per run (None = no control).
        overrides: ``GenerationConfig`` fields to change for this method (e.g. ``{"system": "..."}``).
        run: a generator with its own loop, ``run(lm, prompts, config) -> GenerationOutput``; excludes
            ``controls``.
        help: one line for ``--list-methods``.
    """

    name: str
    controls: Callable[[LanguageModel], Sequence[Control]] | None = None
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    run: Callable[[LanguageModel, list[str], GenerationConfig], GenerationOutput] | None = None
    help: str = ""

    def __post_init__(self) -> None:
        if not self.name or "," in self.name:
            raise LMControlError(f"bad method name '{self.name}' (non-empty, no commas)")
        if self.controls is not None and self.run is not None:
            raise LMControlError(f"method '{self.name}': give controls or run, not both")
        fields = {f.name for f in dataclasses.fields(GenerationConfig)}
        unknown = sorted(set(self.overrides) - fields)
        if unknown:
            raise LMControlError(
                f"method '{self.name}': unknown GenerationConfig field(s) {', '.join(unknown)}"
            )

    def config(self, base: GenerationConfig) -> GenerationConfig:
        return dataclasses.replace(base, **self.overrides) if self.overrides else base


@dataclasses.dataclass(frozen=True)
class BenchSuite:
    """A named comparison: prompts x methods x metrics under one decoding setup.

    Args:
        name: the suite name (``lmcontrol bench NAME``).
        prompts: default prompt loader, ``prompts(n) -> rows`` (used when ``--prompts`` is not given).
        methods: the contenders; the first is the timing baseline.
        metrics: metric names of ``lmcontrol.eval.suite`` (``timing`` is always added).
        generation: decoding settings shared by every method (methods override fields).
        model: the LM (HF id / path; None = embedded SmolLM2-135M-Instruct).
        batch_size: prompts per generate call.
        help: one line for ``lmcontrol controls``.
        finalize: optional ``finalize(results, out) -> results``, run after scoring and before
            ``results.json`` / ``report.md`` are written, for statistics across methods (e.g. paired
            differences and win rates against the first method, from ``out/generations.jsonl``).
    """

    name: str
    prompts: PromptLoader
    methods: tuple[BenchMethod, ...]
    metrics: tuple[str, ...] = ("ppl", "dist", "diversity", "coherence")
    generation: GenerationConfig = GenerationConfig(max_new_tokens=32, temperature=1.0, top_p=0.9)
    model: str | None = None
    batch_size: int = 10
    help: str = ""
    finalize: Callable[[dict[str, Any], Path], dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        names = [m.name for m in self.methods]
        if not names:
            raise LMControlError(f"suite '{self.name}' has no methods")
        if len(set(names)) != len(names):
            raise LMControlError(f"suite '{self.name}' has duplicate method names: {names}")

    def select(self, methods: str | Sequence[str] | None) -> list[BenchMethod]:
        """The methods named in ``methods`` (comma list; None = all), in the suite's order."""
        if methods is None:
            return list(self.methods)
        wanted = [
            m.strip() for m in (methods.split(",") if isinstance(methods, str) else methods) if m.strip()
        ]
        known = {m.name: m for m in self.methods}
        unknown = [m for m in wanted if m not in known]
        if unknown or not wanted:
            raise LMControlError(
                f"suite '{self.name}' has no method '{(unknown or [''])[0]}' (methods: {', '.join(known)})"
            )
        return [m for m in self.methods if m.name in wanted]


def rows_from_dataset(
    spec: str, split: str | None = None, field: str = "prompt", reference: str | None = None
) -> PromptLoader:
    """A prompt loader over a registered data set: ``{"prompt": row[field], "reference": row[reference]}``."""

    def load(n: int) -> list[Row]:
        from lmcontrol.data import get_field, load_dataset

        rows = load_dataset(spec, split=split, limit=n)
        prompts = get_field(rows, field, spec)
        refs = get_field(rows, reference, spec) if reference else [None] * len(rows)
        return [
            {"prompt": p, **({"reference": r} if r else {})}
            for p, r in zip(prompts, refs, strict=True)
            if isinstance(p, str) and p.strip()
        ]

    return load
