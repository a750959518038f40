"""Registry entries for prefix-tuning, prefix libraries and prompt compression (light: no torch at import)."""

from __future__ import annotations

from lmcontrol.registry import lazy, register_command, register_control, register_demo, register_suite, register_trainer

_C = "lmcontrol.prefix.control"
_CLI = "lmcontrol.prefix.cli"
register_control(
    "prefix",
    lazy(_C, "prefix_from_spec"),
    "prefix-tuning KV prefix for every row, prefix:DIR (a raw-text prefix turns chat off)",
)
register_control(
    "prefix-library",
    lazy(_C, "prefix_library_from_spec"),
    "many prefixes in one batch; a JSONL 'prefix' field picks each row's, prefix-library:DIR",
)
register_control(
    "compressed", lazy(_C, "prefix_from_spec"), "a long prompt compressed into k soft KV tokens, compressed:DIR"
)
register_trainer(
    "prefix", lazy(_CLI, "train_factory"), "Prefix-tuning (Li & Liang 2021) of the frozen LM on input/target pairs."
)
register_command("compress", lazy(_CLI, "compress_factory"), "Compress a long prompt into k soft tokens (gisting).")
register_demo("prefix", lazy(_CLI, "prefix_demo"), "E2E prefix and a compressed prompt vs the base model")
register_suite(
    "prefix",
    lazy("lmcontrol.prefix.bench", "prefix_suite"),
    "E2E data-to-text: base, committed prefix, prefix / LoRA / full fine-tuning trained on the spot (BLEU, ROUGE-L)",
)
register_suite(
    "prefix-throughput",
    lazy("lmcontrol.prefix.bench", "throughput_suite"),
    "mixed-prefix throughput: 8 prefixes in one batch vs one prefix vs batch size 1 (tokens/s)",
)
