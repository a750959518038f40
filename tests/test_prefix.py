"""Prefix-tuning, prefix libraries and prompt compression (tiny random Llama; one slow test on the artifacts)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from lmcontrol import LMControlError
from lmcontrol.generation import GenerationConfig, build_prefill, forward_hidden, generate, tokenize_prompts
from lmcontrol.prefix.config import PrefixConfig, PrefixRun
from lmcontrol.prefix.control import PrefixLibrary
from lmcontrol.prefix.model import Prefix, config_for, load_prefix
from lmcontrol.prefix.train import encode_pairs, prefix_loss, train_prefix
from lmcontrol.scoring import collate
from lmcontrol.training import TrainConfig

REPO = Path(__file__).resolve().parents[1]
CFG = GenerationConfig(max_new_tokens=6, chat=False)


def _prefix(tiny, length: int, seed: int, reparam: int = 16) -> Prefix:
    torch.manual_seed(seed)
    p = Prefix.create(tiny, config_for(tiny, length=length, reparam_hidden=reparam, init="random"))
    with torch.no_grad():  # a non-trivial MLP output so merge has something to fold
        for param in p.parameters():
            param.add_(torch.randn_like(param) * 0.5)
    return p


def test_merged_prefix_equals_reparam_output(tiny, tmp_path):
    p = _prefix(tiny, 4, 0)
    merged = p.merge()
    assert not merged.reparameterised and merged.config.merged
    torch.testing.assert_close(merged.kv_tensor(), p.kv_tensor().detach())
    merged.save_pretrained(tmp_path / "p")
    loaded = load_prefix(str(tmp_path / "p"), tiny)
    torch.testing.assert_close(loaded.kv_tensor(), merged.kv_tensor(), atol=2e-3, rtol=2e-3)  # fp16 storage
    assert loaded.parameter_counts(tiny)["stored_parameters"] == merged.config.kv_numel


def test_mixed_batch_equals_each_row_alone(tiny):
    lib = PrefixLibrary({"a": _prefix(tiny, 3, 1).merge(), "b": _prefix(tiny, 5, 2).merge()})
    prompts = ["name : Aromi | Type : pub\n", "The cat", "Hello there, friend", "x y z"]
    names = ["a", "b", None, "a"]
    mixed = generate(tiny, prompts, CFG, [lib], row_meta=[{"prefix": n} for n in names])
    for p, n, text in zip(prompts, names, mixed.texts, strict=True):
        alone = generate(tiny, [p], CFG, [lib], row_meta=[{"prefix": n}])
        assert alone.texts[0] == text
    # and the hidden states agree, not only the greedy tokens
    from lmcontrol.controls import Rows

    rows = Rows(prompts, prompts, list(range(4)), [{"prefix": n} for n in names])
    ids, mask = tokenize_prompts(tiny, prompts, chat=False)
    h_mixed = forward_hidden(tiny, build_prefill(tiny, ids, mask, None, lib.soft_prompt(rows)))
    for i in range(4):
        one = Rows([prompts[i]], [prompts[i]], [0], [{"prefix": names[i]}])
        ids1, mask1 = tokenize_prompts(tiny, [prompts[i]], chat=False)
        h1 = forward_hidden(tiny, build_prefill(tiny, ids1, mask1, None, lib.soft_prompt(one)))
        torch.testing.assert_close(h_mixed[i, -1], h1[0, -1], atol=1e-4, rtol=1e-4)


def test_no_prefix_row_equals_plain_model(tiny):
    lib = PrefixLibrary({"a": _prefix(tiny, 3, 1).merge()})
    plain = generate(tiny, ["The cat"], CFG)
    none = generate(tiny, ["The cat", "The dog"], CFG, [lib], row_meta=[{}, {"prefix": "a"}])
    assert none.texts[0] == plain.texts[0]


def test_unknown_prefix_name_is_one_line_error(tiny):
    lib = PrefixLibrary({"a": _prefix(tiny, 3, 1).merge()})
    with pytest.raises(LMControlError, match="unknown prefix 'zzz'"):
        generate(tiny, ["hi"], CFG, [lib], row_meta=[{"prefix": "zzz"}])


def test_prefix_for_another_model_is_refused(tiny, tmp_path):
    p = _prefix(tiny, 3, 1).merge()
    p.save_pretrained(tmp_path / "p", base_model="some-other-model")
    with pytest.raises(LMControlError, match="cannot be used with"):
        load_prefix(str(tmp_path / "p"), tiny)
    other = dataclasses.replace(p.config, num_layers=p.config.num_layers + 1)
    bad = Prefix(other)
    bad.save_pretrained(tmp_path / "q", base_model=tiny.info.name, hidden_size=tiny.info.hidden_size)
    with pytest.raises(LMControlError, match="layers, kv heads, head dim"):
        load_prefix(str(tmp_path / "q"), tiny)


def test_loss_gradient_reaches_prefix(tiny):
    p = _prefix(tiny, 3, 0)
    enc = encode_pairs(tiny, ["a b\n", "c\n"], ["hello world", "ok"], chat=False)
    assert all(t[-1] == tiny.tokenizer.eos_token_id for _, t in enc)  # the target ends with EOS
    batch = collate([x for x, _ in enc], [t for _, t in enc], int(tiny.tokenizer.pad_token_id))
    assert batch.num_tokens.tolist() == [len(t) for _, t in enc]
    loss = prefix_loss(tiny, p, batch)
    loss.backward()
    assert p.embedding.grad is not None and p.embedding.grad.abs().sum() > 0


def test_training_loss_is_the_score_behind_the_prefix(tiny):
    """The trainer's loss is the mean NLL that ``scoring.score`` gives the same targets behind the prefix."""
    from lmcontrol.scoring import score

    p = _prefix(tiny, 3, 0).merge()
    prompts, targets = ["a b\n", "c\n"], ["hello world", "ok"]
    enc = encode_pairs(tiny, prompts, targets, chat=False)
    batch = collate([x for x, _ in enc], [t for _, t in enc], int(tiny.tokenizer.pad_token_id))
    lib = PrefixLibrary({"p": p}, default="p", per_row=False)
    scored = score(tiny, prompts, targets, [lib], append_eos=True)
    want = -float(torch.cat(scored.token_logprobs).mean())
    assert float(prefix_loss(tiny, p, batch).detach()) == pytest.approx(want, abs=1e-5)


def _data(tmp_path: Path, rows: list[dict]) -> str:
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path)


def test_train_resume_matches_uninterrupted(tiny, tmp_path, monkeypatch):
    import lmcontrol.prefix.train as ptrain

    data = _data(tmp_path, [{"src": f"item {i}", "text": f"this is item {i}"} for i in range(12)])
    pcfg = config_for(tiny, length=2, reparam_hidden=8, init="words", init_text="table")
    run = PrefixRun(data=data, examples=None, batch_size=2)
    cfg = TrainConfig(steps=4, lr=1e-2, checkpoint_every=2, progress=False)
    full, _ = train_prefix(tiny, pcfg, cfg, run, tmp_path / "full")

    real = ptrain.epoch_batch_fn

    def dying(*args, **kwargs):  # the run is "killed" at step 3, after the step-2 checkpoint
        fn = real(*args, **kwargs)

        def batch_fn(step, rank, world):
            if step == 3:
                raise KeyboardInterrupt
            return fn(step, rank, world)

        return batch_fn

    monkeypatch.setattr(ptrain, "epoch_batch_fn", dying)
    with pytest.raises(KeyboardInterrupt):
        train_prefix(tiny, pcfg, cfg, run, tmp_path / "cut")
    monkeypatch.setattr(ptrain, "epoch_batch_fn", real)
    resumed, metrics = train_prefix(tiny, pcfg, cfg, run, tmp_path / "cut", resume=True)
    torch.testing.assert_close(resumed.kv_tensor(), full.kv_tensor())
    state = json.loads((tmp_path / "cut" / "config.json").read_text())
    assert state["kind"] == "prefix.kv" and state["extra"]["resumed_from"] == 2


def test_missing_target_field_is_error(tiny, tmp_path):
    data = _data(tmp_path, [{"src": "a", "txt": "b"}])
    pcfg = config_for(tiny, length=2, reparam_hidden=8)
    with pytest.raises(LMControlError, match="no field 'text'"):
        train_prefix(tiny, pcfg, TrainConfig(steps=1), PrefixRun(data=data), tmp_path / "o")


def test_bad_config_and_cli_errors(cli, tmp_path):
    with pytest.raises(LMControlError):
        PrefixConfig(length=0)
    empty = tmp_path / "p.txt"
    empty.write_text("  \n")
    code, _, err = cli("compress", "--prompt-file", str(empty), "--tokens", "4", "--out", str(tmp_path / "o"))
    assert code == 2 and "empty" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("compress", "--prompt-file", str(empty), "--tokens", "0", "--out", str(tmp_path / "o"))
    assert code == 2 and "--tokens" in err
    code, _, err = cli("generate", "-p", "hi", "--control", f"prefix-library:{tmp_path / 'nope'}")
    assert code == 2 and "not a directory" in err


def test_compress_on_tiny(tiny, tmp_path):
    from lmcontrol.prefix.compress import PromptSpec, compress_prompt, evaluate_compression
    from lmcontrol.prefix.config import CompressConfig

    spec = PromptSpec(
        "t",
        "You are terse. Always answer with one word. " * 4,
        ["hi", "what is up"],
        ["ok?"],
        {"pattern": ".", "description": "anything"},
    )
    cfg = CompressConfig(tokens=3, steps=3, samples_per_input=1, max_new_tokens=4, top_k=8, lr=1e-2)
    prompt, metrics = compress_prompt(tiny, spec, cfg, tmp_path / "c")
    assert metrics["soft_tokens"] == 3 and metrics["compression_ratio"] > 1
    res = evaluate_compression(tiny, spec, prompt, spec.heldout, max_new_tokens=3, ttft_repeats=1)
    assert set(res["outputs"]) == {"full", "compressed", "none", "truncated"}
    with pytest.raises(LMControlError, match="not fewer"):
        compress_prompt(tiny, spec, dataclasses.replace(cfg, tokens=500), tmp_path / "d")


@pytest.mark.slow
def test_committed_artifacts(embedded):
    from lmcontrol.prefix.control import single_prefix_control

    e2e = REPO / "artifacts" / "prefix-e2e"
    ctl = single_prefix_control(e2e, embedded)
    src = "name : The Eagle | Type : coffee shop | food : French | area : riverside | near : Burger King\n"
    out = generate(embedded, [src], GenerationConfig(max_new_tokens=40, chat=False), [ctl])
    assert "Eagle" in out.texts[0]
    meta = json.loads((e2e / "config.json").read_text())
    assert meta["metrics"]["stored_share_percent"] < 0.5
    comp = sorted(REPO.glob("artifacts/compressed-*"))
    assert comp, "no committed compressed prompt"
    ctl = single_prefix_control(comp[0], embedded)
    out = generate(embedded, ["What is the tallest mountain in the world?"], GenerationConfig(max_new_tokens=40), [ctl])
    assert out.texts[0].strip()
