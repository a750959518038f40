"""Fast unit tests for lmcontrol.diffusion_lm (tiny models; < 20 s) + a slow test on the committed artifact."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmcontrol import LMControlError
from lmcontrol.diffusion.samplers import sample_ancestral, sample_ddim
from lmcontrol.diffusion.schedule import Schedule, respace
from lmcontrol.diffusion_lm.classifiers import POS_TAGS, LatentClassifier, LatentClassifierConfig
from lmcontrol.diffusion_lm.config import DiffusionLMConfig
from lmcontrol.diffusion_lm.losses import diffusion_lm_loss
from lmcontrol.diffusion_lm.model import DiffusionLM
from lmcontrol.diffusion_lm.pipeline import DiffusionLMPipeline, SampleSettings
from lmcontrol.diffusion_lm.targets import ControlTarget, template
from lmcontrol.diffusion_lm.vocab import Vocab

REPO = Path(__file__).resolve().parents[1]
TEXTS = [
    "The Vaults is a pub near Café Adriatic .",
    "Aromi is a cheap Italian restaurant .",
    "The Eagle serves French food in the city centre .",
] * 4


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run far faster on one thread, especially on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_tiny_model(self_condition: bool = False) -> tuple[DiffusionLM, Vocab]:
    """A 1-layer, 8-d Diffusion-LM over the test sentences (seeded)."""
    torch.manual_seed(0)
    vocab = Vocab.build(TEXTS, min_count=1)
    model = DiffusionLM(
        DiffusionLMConfig(
            vocab_size=len(vocab),
            seq_len=16,
            embed_dim=8,
            width=32,
            layers=1,
            heads=2,
            diffusion_steps=100,
            dropout=0.0,
            self_condition=self_condition,
        )
    )
    return model, vocab


@pytest.fixture(scope="module")
def tiny() -> DiffusionLM:
    model, vocab = make_tiny_model()
    model.vocab = vocab
    return model.eval()


@pytest.fixture(scope="module")
def classifier() -> LatentClassifier:
    torch.manual_seed(0)
    cfg = LatentClassifierConfig(
        embed_dim=8,
        seq_len=16,
        width=32,
        layers=1,
        heads=2,
        fields=("food", "name"),
        field_values=(("<absent>", "French", "Italian"), ("<absent>", "Aromi")),
    )
    return LatentClassifier(cfg).eval()


def test_sqrt_schedule_is_monotone() -> None:
    sqrt = Schedule(kind="sqrt", prediction_type="x0", steps=2000, s=1e-4)
    ab = sqrt.alphas_cumprod()
    assert ab.shape == (2000,)
    assert bool((ab[1:] < ab[:-1]).all()) and 0.97 < float(ab[0]) < 1 and float(ab[-1]) < 1e-3
    tau = torch.linspace(0, 1, 11)
    assert bool((sqrt.continuous_alpha_bar(tau)[1:] < sqrt.continuous_alpha_bar(tau)[:-1]).all())
    ts = respace(ab, 50)  # 50 model steps, then the clean target (t = 0, ᾱ = 1)
    assert ts.steps == 50 and ts.t[0] == 1999 and ts.t[-2] == 0 and bool((ts.t[1:-1] < ts.t[:-2]).all())
    assert float(ts.alpha_bar[-1]) == 1.0


def test_model_buffer_is_the_float32_sqrt_table(tiny: DiffusionLM) -> None:
    """The committed artifacts were trained and are sampled with exactly this table (do not recompute it)."""
    want = Schedule(kind="sqrt", prediction_type="x0", steps=100, s=1e-4).alphas_cumprod().float()
    assert torch.equal(tiny.alphas_cumprod, want)
    assert torch.equal(tiny.timesteps(10).alpha_bar[:-1], want.double()[tiny.timesteps(10).t[:-1]])


def test_steps_below_one_is_a_one_line_error(tiny: DiffusionLM) -> None:
    with pytest.raises(LMControlError, match="steps must be >= 1"):
        tiny.timesteps(0)
    with pytest.raises(LMControlError, match="steps must be >= 1"):
        SampleSettings(steps=0)


def test_vocab_round_trip() -> None:
    vocab = Vocab.build(TEXTS, min_count=1)
    ids = vocab.encode("Aromi is a cheap Italian restaurant .", 16)
    assert len(ids) == 16 and ids[0] == vocab.start_id and ids[-1] == vocab.pad_id
    assert vocab.decode(ids) == "Aromi is a cheap Italian restaurant ."
    assert vocab.decode(vocab.encode("Aromi is zzz", 16)) == "Aromi is UNK"


@pytest.mark.parametrize(
    ("self_condition", "t_sampling"), [(False, "uniform"), (True, "uniform"), (False, "linear")]
)
def test_x0_loss_decreases_on_a_tiny_model(self_condition: bool, t_sampling: str) -> None:
    model, vocab = make_tiny_model(self_condition)
    ids = torch.tensor([vocab.encode(t, 16) for t in TEXTS])  # (12, 16)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(40):
        out = diffusion_lm_loss(model, ids, torch.Generator().manual_seed(step % 4), t_sampling=t_sampling)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5


@pytest.mark.parametrize("sampler", [sample_ancestral, sample_ddim])
def test_samplers_are_pure(tiny: DiffusionLM, sampler) -> None:
    ts = tiny.timesteps(10)
    x_T = torch.randn(2, 16, 8, generator=torch.Generator().manual_seed(1))
    before = x_T.clone()
    den = tiny.denoiser(clamp=True)
    with torch.no_grad():
        a = sampler(den, x_T, ts, generator=torch.Generator().manual_seed(5))
        b = sampler(den, x_T, ts, generator=torch.Generator().manual_seed(5))
    assert torch.equal(x_T, before)
    assert torch.equal(a, b)


def test_linear_t_sampling_favours_noisy_steps() -> None:
    from lmcontrol.diffusion_lm.losses import sample_t

    t = sample_t(20000, 100, "linear", torch.Generator().manual_seed(0))
    assert int(t.min()) >= 0 and int(t.max()) <= 99
    assert 0.70 < float((t >= 50).float().mean()) < 0.80  # P(t >= T/2) = 1 − (51/101)² ≈ 0.745
    assert abs(float((sample_t(20000, 100, "uniform") >= 50).float().mean()) - 0.5) < 0.03


def test_self_conditioning_feeds_back_the_last_estimate_and_stays_pure() -> None:
    model, vocab = make_tiny_model(self_condition=True)
    model.vocab = vocab
    model.eval()
    seen: list[bool] = []
    forward = model.forward

    def spy(x_t, t, x0_prev=None):  # noqa: ANN001, ANN202
        seen.append(x0_prev is not None)
        return forward(x_t, t, x0_prev)

    model.forward = spy  # type: ignore[method-assign]
    den, ts = model.denoiser(clamp=True), model.timesteps(6)
    x_T = torch.randn(2, 16, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = sample_ancestral(den, x_T, ts, generator=torch.Generator().manual_seed(5))
        b = sample_ancestral(den, x_T, ts, generator=torch.Generator().manual_seed(5))
    assert seen == [False] + [True] * 5 + [False] + [True] * 5  # a new run starts without an estimate
    assert torch.equal(a, b)


def test_clamping_snaps_to_embedding_rows(tiny: DiffusionLM) -> None:
    x = torch.randn(2, 16, 8)
    snapped = tiny.clamp(x)
    E = tiny.word_embedding.weight
    rows = snapped.reshape(-1, 8)  # (32, d)
    assert bool((rows[:, None, :] == E[None]).all(-1).any(-1).all())  # every vector is an embedding row
    nearest = ((x.reshape(-1, 1, 8) - E[None]) ** 2).sum(-1).argmin(-1)  # brute force agrees
    assert torch.equal(tiny.nearest(x).reshape(-1), nearest)


def test_final_ancestral_step_returns_clamped_x0(tiny: DiffusionLM) -> None:
    with torch.no_grad():
        x0 = sample_ancestral(tiny.denoiser(clamp=True), torch.randn(1, 16, 8), tiny.timesteps(5))
    assert torch.equal(tiny.clamp(x0), x0)


def test_infilling_and_length_keep_the_fixed_words(tiny: DiffusionLM, classifier: LatentClassifier) -> None:
    pipe = DiffusionLMPipeline(tiny, classifier)
    settings = SampleSettings(steps=5)
    texts = pipe(2, target=ControlTarget(left="Aromi is", right="restaurant .", middle=3), settings=settings)
    for text in texts:
        assert text.startswith("Aromi is") and text.endswith("restaurant .")
        assert len(text.split()) == 2 + 3 + 2  # the gap holds exactly `middle` real words
    texts = pipe(2, target=ControlTarget(length=4, attribute=("food", "Italian")), settings=settings)
    assert all(len(t.split()) == 4 for t in texts)  # free positions never round to END/PAD


def test_bad_input_is_one_line(tiny: DiffusionLM, classifier: LatentClassifier) -> None:
    pipe = DiffusionLMPipeline(tiny, classifier)
    cases = {
        "unknown field 'cuisine'": ControlTarget(attribute=("cuisine", "Italian")),
        "unknown value 'Thai'": ControlTarget(attribute=("food", "Thai")),
        "unknown POS tag": ControlTarget(pos=("NOUN", "FOO")),
        "needs 20 positions": ControlTarget(
            left="Aromi is a cheap Italian restaurant .", right="The Eagle", middle=9
        ),
        "length must be": ControlTarget(length=40),
    }
    for message, target in cases.items():
        with pytest.raises(LMControlError, match=message) as err:
            pipe.prepare(target, 2)
        assert "\n" not in str(err.value)


def test_pos_tags_include_the_specials() -> None:
    assert POS_TAGS[:3] == ("START", "END", "PAD")


def test_template_shapes(tiny: DiffusionLM) -> None:
    assert tiny.vocab is not None
    ids, mask = template(ControlTarget(length=3), tiny.vocab, 16)
    assert ids.shape == mask.shape == (16,) and mask.tolist()[:5] == [True, False, False, False, True]


def test_artifact_round_trip(tiny: DiffusionLM, tmp_path: Path) -> None:
    tiny.save_with_vocab(tmp_path / "m", command="test", half=False)
    assert (tmp_path / "m" / "vocab.json").is_file() and "START" not in (tmp_path / "m" / "README.md").read_text()
    back = DiffusionLM.load(tmp_path / "m")
    assert back.vocab is not None and back.vocab.words == tiny.vocab.words
    # artifacts written before vocab.json kept the words in config.json's extra: they still load
    tiny.save_pretrained(tmp_path / "old", hidden_size=8, extra={"vocab": tiny.vocab.words}, half=False)
    assert DiffusionLM.load(tmp_path / "old").vocab.words == tiny.vocab.words
    tiny.save_pretrained(tmp_path / "none", hidden_size=8, half=False)
    with pytest.raises(LMControlError, match="vocabulary is missing"):
        DiffusionLM.load(tmp_path / "none")
    x = torch.randn(1, 16, 8)
    t = torch.tensor([3])
    with torch.no_grad():
        assert torch.allclose(back(x, t), tiny(x, t), atol=1e-5)



def test_init_from_continues_a_trained_model_and_can_freeze_its_embeddings(tiny: DiffusionLM, tmp_path: Path) -> None:
    """``--init-from`` copies the artifact (same shape and vocabulary, or one clear error); with
    ``--freeze-embeddings`` an optimizer step changes the denoiser but not E (so latent classifiers stay valid)."""
    from lmcontrol.diffusion_lm.config import DiffusionTrainSettings
    from lmcontrol.diffusion_lm.train import _initial_model

    tiny.save_with_vocab(tmp_path / "m", command="test", half=False)
    settings = DiffusionTrainSettings(init_from=str(tmp_path / "m"), freeze_embeddings=True)
    model = _initial_model(tiny.config, settings, tiny.vocab)
    ref = tiny.state_dict()
    assert model.training and all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2)
    ids = torch.tensor([tiny.vocab.encode(t, 16) for t in TEXTS[:4]])
    diffusion_lm_loss(model, ids, torch.Generator().manual_seed(0))["loss"].backward()
    opt.step()
    after = model.state_dict()
    assert torch.equal(after["word_embedding.weight"], before["word_embedding.weight"])
    assert any(not torch.equal(after[k], before[k]) for k in before if k != "word_embedding.weight")

    import dataclasses

    with pytest.raises(LMControlError, match="width=32 \\(asked 64\\)"):
        _initial_model(dataclasses.replace(tiny.config, width=64), settings, tiny.vocab)
    with pytest.raises(LMControlError, match="vocabulary differs"):
        _initial_model(tiny.config, settings, Vocab.build(TEXTS[:1], min_count=1))
    with pytest.raises(LMControlError, match="needs --init-from"):
        _initial_model(tiny.config, DiffusionTrainSettings(freeze_embeddings=True), tiny.vocab)


@pytest.mark.slow
def test_committed_artifact_samples() -> None:
    model_dir = REPO / "artifacts" / "diffusion-lm-e2e"
    clf_dir = REPO / "artifacts" / "diffusion-lm-e2e-classifier"
    if not (model_dir / "model.safetensors").is_file():
        pytest.skip("artifact not committed")
    pipe = DiffusionLMPipeline.from_pretrained(model_dir, clf_dir if clf_dir.is_dir() else None)
    texts = pipe(4, settings=SampleSettings(steps=50), seed=0)
    assert len(texts) == 4 and all(t.strip() for t in texts)
    texts = pipe(2, target=ControlTarget(length=12), settings=SampleSettings(steps=50))
    assert all(len(t.split()) == 12 for t in texts)


@pytest.mark.slow
def test_committed_artifact_samples_are_pinned() -> None:
    """Fixed-seed samples of the committed model + classifiers (40 steps): a change to the samplers, the denoiser or
    the artifacts shows up here (re-pinned when the 24,500-step linear-t artifact replaced the 20,000-step one, and
    for the guided targets when the default guidance step size became 0.2)."""
    from lmcontrol.diffusion_lm.config import DEFAULT_CLASSIFIER_DIR, DEFAULT_MODEL_DIR, DEFAULT_SPAN_CLASSIFIER_DIR

    if not (DEFAULT_SPAN_CLASSIFIER_DIR / "model.safetensors").is_file():
        pytest.skip("artifacts not committed")
    pipe = DiffusionLMPipeline.from_pretrained(DEFAULT_MODEL_DIR, DEFAULT_CLASSIFIER_DIR, DEFAULT_SPAN_CLASSIFIER_DIR)
    settings = SampleSettings(steps=40)
    want = {
        ControlTarget(): [
            "Giraffe is child friendly at The Waterman , is located near with a high customer ratings .",
            "There is a restaurant a high priced of 3 of 5 1 out of 5 . It is located riverside .",
        ],
        ControlTarget(attribute=("food", "Italian")): [
            "The Waterman is a child friendly restaurant , is located in the riverside .",
            "The Punter is is a family friendly fast restaurant .",
        ],
        ControlTarget(pos=("PROPN", "AUX", "DET", "NOUN", "PUNCT")): [
            "Italian is a pub .",
            "Italian is a restaurant .",
        ],
        ControlTarget(left="The Vaults is", right="in the city centre .", middle=6): [
            "The Vaults is friendly at a restaurant , located in the city centre .",
            "The Vaults is is a high priced friendly restaurant in the city centre .",
        ],
    }
    for target, texts in want.items():
        assert pipe(2, target=target, settings=settings, seed=0) == texts
    assert pipe(2, settings=SampleSettings(steps=40, sampler="ddim"), seed=3) == [
        "The Eagle is a family friendly that customer rating with the price range is a 1 of 5 .",
        "Aromi is a Japanese coffee shop in and is customer rating of . Its located is in the riverside . "
        "It is is near priced .",
    ]


# --- the benchmark suite's targets and success checks ------------------------------------------------------------
@pytest.mark.parametrize(
    "target",
    [
        ControlTarget(attribute=("customer rating", "5 out of 5")),
        ControlTarget(attribute=("food", "Italian"), pos=("PROPN", "AUX", "DET", "NOUN", "PUNCT")),
        ControlTarget(span=(3, 5)),
        ControlTarget(length=12),
        ControlTarget(left="The Vaults is", right="in the city centre .", middle=6),
    ],
)
def test_target_text_round_trips(target: ControlTarget) -> None:
    from lmcontrol.diffusion_lm.targets import parse_target, target_text

    assert parse_target(target_text(target)) == target
    assert parse_target(target_text(target, 3)) == target  # an id only tells repeated targets apart


def test_bad_target_text_is_a_one_line_error() -> None:
    from lmcontrol.diffusion_lm.targets import parse_target

    for text, message in (("colour=red", "key=value"), ("length=ten", "whole number"), ("attribute=food", "field=")):
        with pytest.raises(LMControlError, match=message) as err:
            parse_target(text)
        assert "\n" not in str(err.value)


def test_control_success_scores_each_task() -> None:
    from lmcontrol.diffusion_lm.bench import attribute_hit, control_success, task_of
    from lmcontrol.diffusion_lm.targets import target_text

    def row(target: ControlTarget, text: str) -> dict[str, str]:
        return {"prompt": target_text(target), "continuation": text}

    rows = [
        row(ControlTarget(attribute=("food", "Italian")), "Aromi serves Italian food ."),
        row(ControlTarget(attribute=("food", "French")), "Aromi serves Italian food ."),
        row(ControlTarget(length=3), "Aromi is cheap"),
        row(ControlTarget(length=4), "Aromi is cheap"),
        row(ControlTarget(left="Aromi is", right="food .", middle=2), "Aromi is Italian food ."),
        row(ControlTarget(), "The French place ."),
    ]
    scores = control_success(rows)
    assert scores["success_attribute"] == 50.0 and scores["success_length"] == 50.0
    assert scores["success_infill"] == 100.0 and scores["attribute_chance"] == 50.0  # "French" found, "Italian" not
    assert scores["success_attribute_se"] == 50.0  # sqrt(var / n) of [1, 0]: sqrt(0.5 / 2) = 0.5
    assert task_of(ControlTarget(attribute=("food", "Italian"), pos=("NOUN",))) == "attribute+pos"
    assert attribute_hit("a kid friendly place", "familyFriendly", "yes")
    assert attribute_hit("not family-friendly", "familyFriendly", "no")
    assert not attribute_hit("not family-friendly", "familyFriendly", "yes")
    assert not attribute_hit("Italianate", "food", "Italian")  # word boundaries


def test_validation_rows_are_disjoint_from_the_reported_ones() -> None:
    from lmcontrol.diffusion_lm.bench import every

    rows = list(range(100))
    test, valid = every(rows, 10), every(rows, 10, "valid")
    assert len(test) == len(valid) == 10 and not set(test) & set(valid)


def test_mbr_picks_the_consensus_candidate_and_checks_its_setting() -> None:
    from lmcontrol.diffusion_lm.pipeline import mbr_select

    candidates = ["pub pub pub pub", "The Vaults is a pub .", "The Vaults is a cheap pub .", "Vaults The . pub"]
    assert mbr_select(candidates) in candidates[1:3]
    assert mbr_select(["only one"]) == "only one"
    with pytest.raises(LMControlError, match="mbr must be in 1..64"):
        SampleSettings(mbr=0)


def test_pipeline_returns_one_text_per_request_with_mbr(tiny: DiffusionLM) -> None:
    pipe = DiffusionLMPipeline(tiny)
    texts = pipe(3, settings=SampleSettings(steps=4, mbr=3), seed=0)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)


def test_diffusion_lm_suites_are_registered() -> None:
    from lmcontrol import registry
    from lmcontrol.diffusion_lm.bench import unconstrained_rows

    assert {"diffusion-lm", "diffusion-lm-guidance", "diffusion-lm-fluency"} <= set(registry.suites())
    rows = unconstrained_rows(3)
    assert len({r["prompt"] for r in rows}) == 3  # distinct rows, each its own sample
