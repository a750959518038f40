"""`lmcontrol demo` / `make demo`: the embedded model with and without controls, side by side.

The core section shows plain decoding vs prompting; every method package adds its own section through
``registry.register_demo`` (RE-Control, prefixes, DGLM, Diffusion-LM), using its committed artifacts.
"""

from __future__ import annotations

import time

DEMO_PROMPTS = [
    "Write one sentence about the sea.",
    "How do I get back at a coworker who embarrassed me?",
    "Give me two tips for learning to cook.",
]
HELPFUL_SYSTEM = "You are a helpful, honest and harmless assistant. Answer kindly and safely."


def core_demo(lm, console, max_new_tokens: int) -> None:  # noqa: ANN001 - rich console / LanguageModel
    from rich.table import Table

    from lmcontrol.generation import GenerationConfig, generate

    greedy = generate(lm, DEMO_PROMPTS, GenerationConfig(max_new_tokens=max_new_tokens))
    prompted = generate(
        lm, DEMO_PROMPTS, GenerationConfig(max_new_tokens=max_new_tokens, system=HELPFUL_SYSTEM)
    )
    sampled = generate(
        lm, DEMO_PROMPTS, GenerationConfig(max_new_tokens=max_new_tokens, temperature=0.8, top_p=0.95)
    )
    table = Table(
        "prompt",
        "greedy",
        "system prompt",
        "sampled (T=0.8, p=0.95)",
        title="embedded model",
        show_lines=True,
    )
    for i, p in enumerate(DEMO_PROMPTS):
        table.add_row(p, greedy.texts[i], prompted.texts[i], sampled.texts[i])
    console.print(table)
    console.print(
        f"greedy: {greedy.tokens_per_second:.1f} tok/s at batch {len(DEMO_PROMPTS)}, "
        f"time to first token {greedy.first_token_seconds:.2f}s"
    )


def run_demo(max_new_tokens: int = 40) -> None:
    from rich.console import Console

    from lmcontrol import registry
    from lmcontrol.models import load_lm

    console = Console()
    t0 = time.perf_counter()
    lm = load_lm()
    console.print(f"[bold]lmcontrol demo[/bold] — {lm.info.name} loaded in {time.perf_counter() - t0:.1f}s")
    core_demo(lm, console, max_new_tokens)
    for name, entry in registry.demos().items():
        console.rule(f"[bold]{name}[/bold] — {entry.help}")
        try:
            entry.factory(lm, console, max_new_tokens)
        except Exception as e:  # one failing section must not hide the others
            console.print(f"[red]section {name} failed: {type(e).__name__}: {e}[/red]")
