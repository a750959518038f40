"""DGLM: samplers, guidance, prompt generator, pipeline checks (tiny models; the embedded decoder in `slow`)."""

from __future__ import annotations

import math

import pytest
import torch

from lmcontrol import LMControlError
from lmcontrol.dglm.config import PromptGeneratorConfig, SemanticDiffusionConfig
from lmcontrol.dglm.guidance import ProbeGuide, guided_denoiser
from lmcontrol.dglm.model import PromptGenerator, SemanticDiffusion
from lmcontrol.dglm.pipeline import DGLMSettings
from lmcontrol.diffusion.guidance import classifier_free
from lmcontrol.diffusion.samplers import sample_ancestral, sample_ddim
from lmcontrol.diffusion.schedule import add_noise, v_target
from lmcontrol.eval.probes import LinearProbe, ProbeConfig
from lmcontrol.settings import ARTIFACTS_DIR

D = 16


def tiny_diffusion(seed: int = 0) -> SemanticDiffusion:
    torch.manual_seed(seed)
    model = SemanticDiffusion(SemanticDiffusionConfig(embed_dim=D, feature_tokens=2, width=16, layers=1, heads=2))
    torch.nn.init.normal_(model.merge.weight, std=0.05)  # not the zero init: give the tiny net some output
    return model.eval()


def tiny_probe(seed: int = 0) -> LinearProbe:
    torch.manual_seed(seed)
    probe = LinearProbe(ProbeConfig(input_dim=D))
    torch.nn.init.normal_(probe.linear.weight, std=3.0)
    return probe.eval()


def tiny_prompter(lm, kind: str = "mlp") -> PromptGenerator:  # noqa: ANN001
    info = lm.info
    cfg = PromptGeneratorConfig(
        embed_dim=D,
        length=3,
        kind=kind,
        hidden=32,
        rank=8,
        width=16,
        layers=1,
        heads=2,
        num_layers=info.num_layers,
        num_kv_heads=info.num_kv_heads,
        head_dim=info.head_dim,
    )
    pg = PromptGenerator(cfg)
    pg.base_model, pg.base_hidden_size = info.name, info.hidden_size
    return pg


def grid(steps: int, model: SemanticDiffusion | None = None):  # noqa: ANN201
    return (model or tiny_diffusion()).schedule.timesteps(steps)


def test_model_schedule_is_the_shifted_cosine_with_v_prediction():
    model = tiny_diffusion()
    x, eps, a2 = torch.randn(4, D), torch.randn(4, D), torch.rand(4, 1)
    pred = model.schedule.prediction(add_noise(x, eps, a2), v_target(x, eps, a2), a2)
    assert torch.allclose(pred.x0, x, atol=1e-5) and torch.allclose(pred.eps, eps, atol=1e-5)
    shifted = SemanticDiffusion(SemanticDiffusionConfig(embed_dim=D, width=16, layers=1, heads=2, schedule_scale=2.0))
    t = torch.linspace(0.1, 0.9, 5)  # the shift lowers the noise at every t
    assert (shifted.schedule.alpha_bar(t) > model.schedule.alpha_bar(t)).all()


def test_samplers_are_pure_and_seeded():
    model = tiny_diffusion()
    ctx = torch.randn(3, D)
    den = guided_denoiser(model, ctx)
    z = torch.randn(3, D)
    z_copy = z.clone()
    with torch.no_grad():
        a, b = sample_ddim(den, z, grid(5)), sample_ddim(den, z, grid(5))
        assert torch.equal(a, b) and torch.equal(z, z_copy)
        p = sample_ancestral(den, z, grid(5), generator=torch.Generator().manual_seed(1), var_interp=0.2)
        q = sample_ancestral(den, z, grid(5), generator=torch.Generator().manual_seed(1), var_interp=0.2)
        r = sample_ancestral(den, z, grid(5), generator=torch.Generator().manual_seed(2), var_interp=0.2)
    assert torch.equal(p, q) and not torch.equal(p, r)
    with pytest.raises(LMControlError):
        grid(0)


def test_classifier_free_guidance_interpolates():
    model = tiny_diffusion()
    z, a2, ctx = torch.randn(2, D), torch.full((2,), 0.5), torch.randn(2, D)

    def v(z: torch.Tensor, t: torch.Tensor, a2: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return model(z, a2[:, None], c)

    with torch.no_grad():
        cond, uncond = model(z, a2[:, None], ctx), model(z, a2[:, None], None)
        for w, want in ((1.0, cond), (0.0, uncond), (2.0, 2 * cond - uncond)):
            assert torch.allclose(classifier_free(v, ctx, model.null_context, w)(z, a2, a2), want, atol=1e-4)
        # the model's denoiser applies the same guidance before converting v to (x0, eps)
        pred = model.denoiser(ctx, 2.0)(z, a2, a2)
        assert torch.allclose(pred.x0, model.schedule.prediction(z, 2 * cond - uncond, a2).x0, atol=1e-4)


@pytest.mark.parametrize("away", [False, True])
def test_probe_guidance_moves_the_proposal(away: bool):
    model, probe = tiny_diffusion(), tiny_probe()
    ctx, z = torch.randn(16, D), torch.randn(16, D, generator=torch.Generator().manual_seed(3))

    def p_label1(guides: tuple[ProbeGuide, ...]) -> float:
        den = guided_denoiser(model, ctx, guides=guides, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            x0 = sample_ddim(den, z, grid(10, model))
            return float(probe(model.space.to_unit(x0)).softmax(-1)[:, 1].mean())

    plain = p_label1(())
    guided = p_label1((ProbeGuide(probe=probe, label=1, weight=20.0, away=away),))
    assert (guided < plain - 0.05) if away else (guided > plain + 0.05)


def test_two_guides_compose():
    model, probe_a, probe_b = tiny_diffusion(), tiny_probe(1), tiny_probe(2)
    ctx, z = torch.randn(16, D), torch.randn(16, D)

    def probs(guides):  # noqa: ANN001, ANN202
        with torch.no_grad():
            x0 = sample_ddim(guided_denoiser(model, ctx, guides=guides), z, grid(10, model))
            u = model.space.to_unit(x0)
            return float(probe_a(u).softmax(-1)[:, 1].mean()), float(probe_b(u).softmax(-1)[:, 1].mean())

    a0, b0 = probs(())
    a1, b1 = probs((ProbeGuide(probe_a, 1, 20.0), ProbeGuide(probe_b, 1, 20.0)))
    assert a1 > a0 and b1 > b0


def test_guide_weight_must_be_finite():
    with pytest.raises(LMControlError, match="finite"):
        ProbeGuide(tiny_probe(), 1, math.nan, name="toxicity:toxic")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"noise": 1.5},
        {"noise": math.nan},
        {"cfg_scale": math.nan},
        {"steps": 0},
        {"sampler": "euler"},
        {"sampler": "ddpm"},
    ],
)
def test_settings_reject_bad_values(kwargs):
    with pytest.raises(LMControlError):
        DGLMSettings(**kwargs)


@pytest.mark.parametrize("kind", ["mlp", "transformer"])
def test_prompt_generator_feeds_the_decoder_and_learns(tiny, kind):
    from lmcontrol.dglm.train import continuation_loss

    tiny.model.requires_grad_(False)
    pg = tiny_prompter(tiny, kind)
    ids = tiny.tokenizer(["the cat sat on the mat and looked at the door"] * 2, return_tensors="pt")["input_ids"]
    p, c = ids[:, :4], ids[:, 4:]
    z, a2 = torch.randn(2, D), torch.full((2, 1), 0.95)
    kv = pg(z, a2)
    info = tiny.info
    assert kv.shape == (info.num_layers, 2, 2, info.num_kv_heads, 3, info.head_dim)
    opt = torch.optim.Adam(pg.parameters(), lr=1e-2)
    first = None
    for _ in range(15):
        loss = continuation_loss(tiny, pg, p, c, z, a2)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < first - 0.1
    assert all(q.grad is None for q in tiny.model.parameters())  # the decoder stays frozen


def _synthetic_pairs(n: int, seed: int):  # noqa: ANN202
    """Pairs whose continuation (token 5 or 7, repeated) is readable only from the continuation embedding."""
    from lmcontrol.dglm.pairs import PairSet

    g = torch.Generator().manual_seed(seed)
    cls = torch.randint(2, (n,), generator=g)
    direction = torch.nn.functional.normalize(torch.randn(D, generator=torch.Generator().manual_seed(99)), dim=0)
    emb = torch.nn.functional.normalize(
        (cls * 2 - 1).float()[:, None] * direction + 0.1 * torch.randn(n, D, generator=g), dim=-1
    )
    prefix = torch.randint(10, 60, (n, 6), generator=g)
    cont = torch.where(cls[:, None] == 1, 5, 7).expand(n, 4).clone()
    return PairSet(prefix, cont, ["p"] * n, ["c"] * n, emb.clone(), emb, ["synthetic"] * n)


def _synthetic_prompter_task(tiny, monkeypatch):  # noqa: ANN001, ANN202
    """The trainer on synthetic pairs: (config, run settings, 40-step train config) for the tiny decoder."""
    from lmcontrol.dglm import train as dglm_train
    from lmcontrol.training import TrainConfig

    monkeypatch.setattr(dglm_train, "build_pairs", lambda *a, **k: (_synthetic_pairs(256, 0), _synthetic_pairs(16, 1)))
    info = tiny.info
    cfg = PromptGeneratorConfig(
        embed_dim=D, length=2, hidden=32, rank=8, width=16,
        num_layers=info.num_layers, num_kv_heads=info.num_kv_heads, head_dim=info.head_dim,
    )  # fmt: skip
    run = dglm_train.PrompterRun(batch_size=8, eval_pairs=16, min_prefix=2, short_prefix=2)
    return cfg, run, TrainConfig(steps=40, lr=3e-2, checkpoint_every=60, log_every=20, progress=False)


def test_train_prompter_learns_to_follow_the_proposal(tiny, tmp_path, monkeypatch):
    """The trainer end to end on a task where only the proposal tells the continuation: the held-out proposal
    gap (shuffled − true) must open up, at full and short prefixes, and the artifact must reload."""
    from lmcontrol.dglm import train as dglm_train

    info = tiny.info
    cfg, run, tc = _synthetic_prompter_task(tiny, monkeypatch)
    pg, metrics = dglm_train.train_prompter(tiny, cfg, tc, run, tmp_path / "pg")
    # an untrained or proposal-blind generator scores a gap of 0 ± 0.02 here; 40 steps reach ≈ 0.2
    assert metrics["heldout_gap"] > 0.1 and metrics["heldout_p2_gap"] > 0.1, metrics
    assert metrics["heldout_loss_true"] < metrics["heldout_loss_plain"]
    again = PromptGenerator.from_pretrained(tmp_path / "pg", model_name=info.name, hidden_size=info.hidden_size)
    z, a2 = torch.randn(2, D), torch.full((2, 1), 0.9)
    assert torch.allclose(again(z, a2), pg(z, a2), atol=1e-2)  # fp16 on disk


def test_train_diffusion_runs_and_reloads(tiny, tmp_path, monkeypatch):
    from lmcontrol.dglm import train as dglm_train
    from lmcontrol.training import TrainConfig

    monkeypatch.setattr(dglm_train, "build_pairs", lambda *a, **k: (_synthetic_pairs(64, 0), _synthetic_pairs(16, 1)))
    cfg = SemanticDiffusionConfig(embed_dim=D, feature_tokens=2, width=16, layers=1, heads=2)
    tc = TrainConfig(steps=3, lr=1e-3, checkpoint_every=60, log_every=1, progress=False)
    model, metrics = dglm_train.train_diffusion(tiny, cfg, tc, dglm_train.DiffusionRun(batch_size=8), tmp_path / "d")
    assert metrics["steps"] == 3 and math.isfinite(metrics["train_loss_final"])
    assert SemanticDiffusion.from_pretrained(tmp_path / "d").config == cfg


def test_train_prompter_warm_starts_from_a_saved_generator(tiny, tmp_path, monkeypatch):
    """``init``: the second run starts from the first run's weights (at a negligible learning rate it keeps
    them, and with them the proposal gap), and keeps the saved config, not the one passed in."""
    from lmcontrol.dglm import train as dglm_train
    from lmcontrol.training import TrainConfig

    info = tiny.info
    cfg, run, tc = _synthetic_prompter_task(tiny, monkeypatch)
    first, m1 = dglm_train.train_prompter(tiny, cfg, tc, run, tmp_path / "a")
    other = PromptGeneratorConfig(embed_dim=D, length=5, hidden=8, rank=2, width=16, num_layers=info.num_layers,
                                  num_kv_heads=info.num_kv_heads, head_dim=info.head_dim)  # fmt: skip
    warm = dglm_train.PrompterRun(batch_size=8, eval_pairs=16, min_prefix=2, short_prefix=2, init=str(tmp_path / "a"))
    tc2 = TrainConfig(steps=2, lr=1e-7, checkpoint_every=60, log_every=1, progress=False)
    second, m2 = dglm_train.train_prompter(tiny, other, tc2, warm, tmp_path / "b")
    assert second.config == first.config
    assert m2["heldout_gap"] > 0.1 and abs(m2["heldout_gap"] - m1["heldout_gap"]) < 0.02, (m1, m2)
    cold = dglm_train.PrompterRun(batch_size=8, eval_pairs=16, min_prefix=2, short_prefix=2)
    _, m3 = dglm_train.train_prompter(tiny, cfg, tc2, cold, tmp_path / "c")
    assert m3["heldout_gap"] < 0.05  # the same two steps from scratch: no gap


def test_prefix_input_generator_starts_as_the_saved_one_and_reads_the_prefix(tiny):
    """``with_prefix_input``: same KV prefixes as the generator it widens (new columns at zero) for any prefix,
    the prefix required from then on, and a prefix embedding that moves the output once those columns are set."""
    pg = tiny_prompter(tiny)
    torch.nn.init.normal_(pg.body[0].weight, std=0.3)
    wide = pg.with_prefix_input()
    z, a2, ctx = torch.randn(2, D), torch.full((2, 1), 0.95), torch.randn(2, D)
    assert wide.config.prefix_input and not pg.config.prefix_input
    assert torch.allclose(wide(z, a2, ctx), pg(z, a2), atol=1e-6)
    with pytest.raises(LMControlError, match="prefix"):
        wide(z, a2)
    with torch.no_grad():
        wide.body[0].weight[:, -D:].normal_(std=0.3)
    assert not torch.allclose(wide(z, a2, ctx), wide(z, a2, -ctx), atol=1e-3)
    with pytest.raises(LMControlError, match="prefix_input"):
        wide.with_prefix_input()
    with pytest.raises(LMControlError, match="mlp"):
        PromptGeneratorConfig(kind="transformer", prefix_input=True)


def test_train_prompter_with_prefix_input_warm_starts_and_reloads(tiny, tmp_path, monkeypatch):
    """``--init DIR --prefix-input``: the widened generator keeps the saved one's proposal gap (at a negligible
    learning rate), is trained on the decoded prefixes' embeddings, and reloads as a prefix-reading generator."""
    from lmcontrol.dglm import train as dglm_train
    from lmcontrol.eval import embeddings
    from lmcontrol.training import TrainConfig

    seen: list[str] = []

    def fake_embed(texts, encoder=None, **kwargs):  # noqa: ANN001, ANN202 - a deterministic D-dim "encoder"
        seen.extend(texts)
        rows = [torch.randn(D, generator=torch.Generator().manual_seed(hash(t) % 2**31)) for t in texts]
        return torch.nn.functional.normalize(torch.stack(rows), dim=-1).numpy()

    monkeypatch.setattr(embeddings, "embed", fake_embed)
    info = tiny.info
    cfg, run, tc = _synthetic_prompter_task(tiny, monkeypatch)
    _, m1 = dglm_train.train_prompter(tiny, cfg, tc, run, tmp_path / "a")
    assert not seen  # a generator without prefix input never embeds prefixes
    warm = dglm_train.PrompterRun(batch_size=8, eval_pairs=16, min_prefix=2, short_prefix=2, init=str(tmp_path / "a"))
    tc2 = TrainConfig(steps=2, lr=1e-7, checkpoint_every=60, log_every=1, progress=False)
    wide_cfg = PromptGeneratorConfig(**{**cfg.__dict__, "prefix_input": True})
    second, m2 = dglm_train.train_prompter(tiny, wide_cfg, tc2, warm, tmp_path / "b")
    assert second.config.prefix_input and seen  # the prefixes were embedded, as the decoder sees them
    assert abs(m2["heldout_gap"] - m1["heldout_gap"]) < 0.02, (m1, m2)
    again = PromptGenerator.from_pretrained(tmp_path / "b", model_name=info.name, hidden_size=info.hidden_size)
    z, a2, ctx = torch.randn(2, D), torch.full((2, 1), 0.9), torch.randn(2, D)
    assert again.config.prefix_input and torch.allclose(again(z, a2, ctx), second(z, a2, ctx), atol=1e-2)


def test_decoder_pairs_are_the_decoders_own_samples_and_cached(tiny, tmp_path, monkeypatch):
    from lmcontrol.dglm import pairs as dglm_pairs
    from lmcontrol.dglm.pairs import PairSet, decoder_pairs

    monkeypatch.setenv("LMCONTROL_CACHE", str(tmp_path))
    n, width = 6, 4
    texts = [f"The report number {i} says that the river" for i in range(n)]
    ids = [tiny.tokenizer(t, add_special_tokens=False)["input_ids"][:5] for t in texts]
    human = PairSet(torch.tensor(ids), torch.full((n, width), 7), [tiny.tokenizer.decode(i) for i in ids],
                    ["human"] * n, torch.randn(n, 384), torch.randn(n, 384), ["synthetic"] * n)  # fmt: skip
    got = decoder_pairs(tiny, human, seed=0, batch_size=4)
    assert 0 < len(got) <= n and got.cont_ids.shape[1] == width
    assert not torch.equal(got.cont_ids, torch.full_like(got.cont_ids, 7))  # not the human continuation
    assert got.cont_emb.shape == (len(got), 384) and torch.allclose(got.cont_emb.norm(dim=-1), torch.ones(len(got)))
    assert set(got.prefix_text) <= set(human.prefix_text)

    def no_sampling(*a, **k):  # noqa: ANN002, ANN003
        raise AssertionError("the cached decoder pairs were sampled again")

    monkeypatch.setattr("lmcontrol.generation.generate", no_sampling)
    again = dglm_pairs.decoder_pairs(tiny, human, seed=0, batch_size=4)
    assert torch.equal(again.cont_ids, got.cont_ids)


@pytest.mark.parametrize(
    "kwargs", [{"inference_share": 1.5}, {"min_prefix": 0}, {"batch_size": 0}, {"targets": "nobody"}]
)
def test_prompter_run_rejects_bad_values(kwargs):
    from lmcontrol.dglm.train import PrompterRun

    with pytest.raises(LMControlError):
        PrompterRun(**kwargs)


def test_prompter_for_another_decoder_is_refused(tiny, tmp_path):
    from lmcontrol.artifacts import ArtifactError

    pg = tiny_prompter(tiny)
    pg.save_pretrained(tmp_path / "pg", base_model="some-other-lm", hidden_size=tiny.info.hidden_size)
    with pytest.raises(ArtifactError, match="some-other-lm"):
        PromptGenerator.from_pretrained(tmp_path / "pg", model_name=tiny.info.name, hidden_size=tiny.info.hidden_size)


def test_pipeline_refuses_mismatched_encoders(tiny):
    from lmcontrol.dglm.pipeline import DGLMPipeline

    diffusion = SemanticDiffusion(
        SemanticDiffusionConfig(embed_dim=D, encoder="enc-a", feature_tokens=2, width=16, layers=1, heads=2)
    )
    pg = tiny_prompter(tiny)
    with pytest.raises(LMControlError, match="enc-a"):
        DGLMPipeline(tiny, diffusion, pg, encoder=None)


def test_pipeline_hands_a_prefix_reading_generator_the_prompts(tiny):
    """With ``prefix_input`` the control's prompts reach the generator: same proposal and seed, other prompts ->
    other KV prefixes; same prompts -> the same ones; no prompts -> a clear error."""
    from lmcontrol.dglm.pipeline import DGLMPipeline

    class FakeEncoder:  # a deterministic D-dim "sentence encoder"
        def encode(self, texts, **kwargs):  # noqa: ANN001, ANN202
            return torch.stack([torch.randn(D, generator=torch.Generator().manual_seed(len(t))) for t in texts])

    diffusion = SemanticDiffusion(SemanticDiffusionConfig(embed_dim=D, feature_tokens=2, width=16, layers=1, heads=2))
    pg = tiny_prompter(tiny).with_prefix_input()
    with torch.no_grad():
        pg.body[0].weight.normal_(std=0.3)
    pipe = DGLMPipeline(tiny, diffusion, pg, encoder=FakeEncoder())
    proposal = torch.randn(2, D)

    def keys(prefixes: list[str]) -> torch.Tensor:
        kv = pipe.soft_prompt(proposal, 0.05, seed=3, prefixes=prefixes).kv
        assert kv is not None
        return kv[0][0]  # layer 0 keys (B, H, m, hd)

    short = keys(["a short prompt", "another prompt"])
    assert torch.equal(short, keys(["a short prompt", "another prompt"]))
    assert not torch.allclose(short, keys(["a much longer prompt than that", "another prompt"]), atol=1e-4)
    with pytest.raises(LMControlError, match="prefixes"):
        pipe.soft_prompt(proposal, 0.05)


def test_steering_vector_moves_hidden_states(tiny):
    from lmcontrol.generation import GenerationConfig, generate
    from lmcontrol.steering import SteeringVector

    sv = SteeringVector.from_contrast(tiny, ["good day", "lovely time"], ["bad day", "awful time"], layer=1, scale=50.0)
    assert sv.direction.shape == (tiny.info.hidden_size,) and sv.hidden_site == "layer:1"
    cfg = GenerationConfig(max_new_tokens=6, chat=False)
    assert generate(tiny, ["hello there"], cfg, [sv]).token_ids != generate(tiny, ["hello there"], cfg).token_ids


needs_artifacts = pytest.mark.skipif(
    not all((ARTIFACTS_DIR / name / "config.json").is_file() for name in ("dglm-prompter", "dglm-diffusion")),
    reason="DGLM artifacts not trained",
)


@needs_artifacts
@pytest.mark.parametrize(
    "spec, message",
    [
        ("dglm:guide=sentiment:happy:10", "no label 'happy'"),
        ("dglm:guide=nosuchprobe:x:1", "unknown probe"),
        ("dglm:avoid=toxicity:toxic:nan", "finite"),
        ("dglm:noise=2", "noise"),
        ("dglm:guide=sentiment", "PROBE:LABEL"),
    ],
)
def test_cli_bad_dglm_specs_exit_2(cli, spec, message):
    code, _, err = cli("generate", "--prompt", "Hello", "--max-new-tokens", "2", "--control", spec)
    assert code == 2 and message in err and "Traceback" not in err


@needs_artifacts
@pytest.mark.slow
def test_embedded_dglm_sentiment_guidance_separates(embedded):
    from lmcontrol.dglm.pipeline import DGLMPipeline
    from lmcontrol.eval.sentiment import positive_probability
    from lmcontrol.generation import GenerationConfig

    pipe = DGLMPipeline.from_pretrained(embedded)
    prompts = [
        "The new restaurant downtown",
        "My neighbour told me that",
        "The weather today is",
        "Last week the company announced",
    ]
    cfg = GenerationConfig(max_new_tokens=24, temperature=0.0, chat=False)
    pos = pipe(prompts, DGLMSettings(guides=(pipe.guide("sentiment", "positive", 10),)), cfg).texts
    neg = pipe(prompts, DGLMSettings(guides=(pipe.guide("sentiment", "negative", 10),)), cfg).texts
    assert sum(positive_probability(pos)) > sum(positive_probability(neg))


@needs_artifacts
@pytest.mark.slow
def test_embedded_dglm_outputs_are_pinned(embedded):
    """Greedy continuations behind the committed generator's KV prefix (re-pinned 2026-12-07 for the generator
    trained on the decoder's own continuations, 2026-12-08 for the one that also reads the prefix), DDIM and
    ancestral proposals."""
    from lmcontrol.dglm.pipeline import DGLMPipeline
    from lmcontrol.generation import GenerationConfig

    pipe = DGLMPipeline.from_pretrained(embedded)
    prompts = ["The new restaurant downtown", "I can't believe those idiots at the"]
    cfg = GenerationConfig(max_new_tokens=12, chat=False, temperature=0.0)
    plain = pipe(prompts, DGLMSettings(), cfg).token_ids
    assert plain == [
        [553, 719, 2967, 253, 2341, 282, 18895, 24382, 28, 284, 339, 5248],
        [1679, 1773, 3712, 30, 1069, 2316, 253, 16048, 30, 1069, 2316, 260],
    ]
    avoid = DGLMSettings(guides=(pipe.guide("toxicity", "toxic", 20, away=True),), sampler="ancestral")
    assert pipe(prompts, avoid, cfg).token_ids == [
        [523, 325, 253, 1379, 327, 14933, 288, 2220, 284, 919, 4406, 327],
        [1679, 5997, 6151, 30, 198, 198, 57, 5248, 441, 2090, 732, 288],
    ]


def _write_generations(out, rows):  # noqa: ANN001, ANN202
    import json

    (out / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_toxicity_statistics_are_per_prompt_with_standard_errors(tmp_path, monkeypatch):
    """finalize_toxicity: a prompt's samples form one unit (max, any >= 0.5), SEs over prompts, change vs base."""
    import lmcontrol.eval.fluency as fluency
    import lmcontrol.eval.toxicity as toxicity
    from lmcontrol.dglm.bench import finalize_toxicity

    class Scorer:
        def score(self, texts):  # noqa: ANN001, ANN202
            return [float(t.split()[0]) for t in texts]  # the text starts with its toxicity

    monkeypatch.setattr(toxicity, "get_toxicity_scorer", lambda: Scorer())
    monkeypatch.setattr(fluency, "perplexities", lambda prompts, texts, *a, **k: [float(t.split()[1]) for t in texts])
    rows = []
    for method, tox, ppl in (("base", (0.9, 0.1, 0.2, 0.1), 10), ("dglm", (0.3, 0.1, 0.2, 0.1), 12)):
        for i, (p, s) in enumerate((("a", 0), ("a", 1), ("b", 0), ("b", 1))):
            rows.append({"method": method, "prompt": p, "sample": s, "continuation": f"{tox[i]} {ppl + i}"})
    rows.append({"method": "dglm", "prompt": "a", "sample": 2, "continuation": "1.0 99"})  # beyond --samples
    _write_generations(tmp_path, rows)
    res = finalize_toxicity({"samples": 2, "methods": {"base": {}, "dglm": {"dist-1": 0.5}}}, tmp_path)
    base, dglm = res["methods"]["base"], res["methods"]["dglm"]
    assert base["max_toxicity"] == pytest.approx(0.55) and base["toxicity_prob"] == 0.5
    assert base["toxicity_prob_se"] == pytest.approx(0.5)  # two prompts: 1 and 0
    assert dglm["max_toxicity"] == pytest.approx(0.25) and dglm["toxicity_prob"] == 0.0
    assert dglm["ppl"] == pytest.approx(13.5) and base["ppl"] == pytest.approx(11.5)
    assert dglm["ppl_change_%"] == pytest.approx(100 * 2 / 11.5) and dglm["dist-1"] == 0.5
    assert dglm["toxicity_prob_change_%"] == pytest.approx(-100.0) and "ppl_change_%" not in base


def test_sentiment_statistics_score_each_method_in_its_own_direction(tmp_path, monkeypatch):
    import numpy as np

    import lmcontrol.eval.fluency as fluency
    import lmcontrol.eval.sentiment as sentiment
    import lmcontrol.eval.topic as topic
    from lmcontrol.dglm.bench import finalize_sentiment

    monkeypatch.setattr(sentiment, "vader_compound", lambda texts: [float(t.split()[0]) for t in texts])
    monkeypatch.setattr(sentiment, "positive_probability", lambda texts: [float(t.split()[0]) / 2 + 0.5 for t in texts])
    monkeypatch.setattr(fluency, "perplexities", lambda prompts, texts, *a, **k: [20.0] * len(texts))
    names = ["World", "Sports", "Business", "Sci/Tech"]
    monkeypatch.setattr(topic, "topic_probabilities",
                        lambda texts: (names, np.eye(4)[[names.index(t.split()[1]) for t in texts]]))  # fmt: skip
    rows = []
    for method, texts in (
        ("base", ("0.5 World", "-0.5 World")),
        ("dglm-negative-w10", ("-0.5 World", "-0.01 World")),
        ("dglm-positive+sports", ("0.5 Sports", "0.5 World")),
    ):
        rows += [{"method": method, "prompt": "p", "sample": s, "continuation": t} for s, t in enumerate(texts)]
    _write_generations(tmp_path, rows)
    methods = {m: {} for m in ("base", "dglm-negative-w10", "dglm-positive+sports")}
    res = finalize_sentiment({"samples": 2, "methods": methods}, tmp_path)["methods"]
    assert res["base"]["vader_success_positive"] == 0.5 and res["base"]["vader_success_negative"] == 0.5
    assert res["dglm-negative-w10"]["vader_success"] == 0.5  # -0.01 is neutral for VADER's convention
    assert res["dglm-negative-w10"]["probe_success"] == 1.0  # but below 0.5 for the probe
    comp = res["dglm-positive+sports"]
    assert comp["topic_success"] == 0.5 and comp["both_success"] == 0.5 and comp["vader_success"] == 1.0


def test_rtp_prompts_mix_toxic_and_nontoxic():
    from lmcontrol.dglm.bench import rtp_prompts

    rows = rtp_prompts(7)
    assert len(rows) == 7 and [r["subset"] for r in rows[:2]] == ["nontoxic", "toxic"]
    assert {r["subset"] for r in rows} == {"nontoxic", "toxic"} and all(r["prompt"].strip() for r in rows)


def test_validation_prompts_are_disjoint_from_the_test_prompts():
    """``dglm-toxicity-val`` tunes on RTP rows the ``dglm-toxicity`` suite never reports on."""
    from lmcontrol.dglm.bench import rtp_prompts, rtp_validation_prompts, toxicity_validation_suite

    val, test = rtp_validation_prompts(100), rtp_prompts(200)
    assert len(val) == 100 and {r["subset"] for r in val} == {"nontoxic", "toxic"}
    assert not {r["prompt"] for r in val} & {r["prompt"] for r in test}
    suite = toxicity_validation_suite()
    assert suite.name == "dglm-toxicity-val" and suite.prompts is rtp_validation_prompts
    assert [m.name for m in suite.methods][:2] == ["base", "dglm-avoid-w10"]
