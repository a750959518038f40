"""The shipped example prompts for compression, and the chat flag of prefix libraries (tiny model; fast)."""

from __future__ import annotations

import pytest
import torch

from lmcontrol.generation import GenerationConfig, generate
from lmcontrol.prefix.compress import example_prompt
from lmcontrol.prefix.control import PrefixLibrary
from lmcontrol.prefix.model import Prefix, config_for

EXAMPLES = ["sunny", "answer_format", "pirate"]


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_prompt_is_long_and_its_demonstrations_pass_its_rule(tiny, name):
    spec = example_prompt(name)
    n_tokens = len(tiny.tokenizer(spec.text, add_special_tokens=False)["input_ids"])  # the embedded tokenizer
    assert 300 <= n_tokens <= 600
    demos = spec.demonstrations()
    assert len(demos) >= 6
    assert all(spec.passes(answer) for _, answer in demos)
    assert len(spec.train) >= 20 and len(spec.heldout) >= 10
    assert not set(spec.train) & set(spec.heldout)


def test_example_prompt_demonstrations_are_chat_turns(tiny):
    """ChatML markup in P becomes real special tokens, so the demonstrations are earlier turns of the chat."""
    spec = example_prompt("pirate")
    text = tiny.format_prompt("Hi", system=spec.text)
    ids = tiny.tokenizer(text, add_special_tokens=False)["input_ids"]
    im_start = tiny.tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert ids.count(im_start) == 1 + 2 * len(spec.demonstrations()) + 2  # system, demo turns, user, assistant


@pytest.mark.parametrize("name", EXAMPLES)
def test_rule_checkers_reject_plain_answers(name):
    spec = example_prompt(name)
    assert not spec.passes("The tallest mountain in the world is Mount Everest.")


def _prefix(tiny, chat: bool, seed: int) -> Prefix:
    torch.manual_seed(seed)
    return Prefix.create(tiny, config_for(tiny, length=3, reparam_hidden=0, init="random", chat=chat))


def test_raw_text_prefix_library_turns_the_chat_template_off(tiny):
    lib = PrefixLibrary({"e2e": _prefix(tiny, False, 0)}, default="e2e", per_row=False)
    assert lib.chat is False
    prompts = ["name : Aromi | Type : pub\n", "The cat"]
    default = generate(tiny, prompts, GenerationConfig(max_new_tokens=6), [lib])  # chat=True by default
    raw = generate(tiny, prompts, GenerationConfig(max_new_tokens=6, chat=False), [lib])
    assert default.texts == raw.texts
    assert default.prompts == raw.prompts


def test_chat_prefix_or_mixed_library_leaves_chat_to_the_call(tiny):
    assert PrefixLibrary({"c": _prefix(tiny, True, 1)}).chat is None
    assert PrefixLibrary({"c": _prefix(tiny, True, 1), "r": _prefix(tiny, False, 2)}).chat is None


def test_benchmark_rescore_applies_each_records_rule():
    from lmcontrol.prefix.bench import rescore

    res = {"p": {"rule": {"pattern": "^Ahoy"}, "outputs": [" Ahoy, matey!", "Hello", "Ahoy"]}}
    out = rescore(res)["p"]
    assert out["pass"] == [True, False, True] and out["pass_rate"] == 0.6667
