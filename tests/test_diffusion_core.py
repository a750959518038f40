"""The shared diffusion core (lmcontrol.diffusion): schedule maths, samplers, guidance wrappers (no models; < 5 s)."""

from __future__ import annotations

import math

import pytest
import torch

from lmcontrol import LMControlError
from lmcontrol.diffusion.guidance import GradientCorrector, classifier_free, classifier_guidance
from lmcontrol.diffusion.samplers import get_sampler, sample_ancestral, sample_ddim
from lmcontrol.diffusion.schedule import Prediction, Schedule, add_noise, respace, v_target


def toy(schedule: Schedule):  # noqa: ANN201
    """A fixed smooth 'network' (4-d) wrapped as a denoiser of ``schedule``'s prediction type."""
    W = torch.linspace(-0.5, 0.5, 16).reshape(4, 4)

    def out(x: torch.Tensor, t: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x @ W) + 0.1 * ab.to(x.dtype)[:, None]

    return schedule.denoiser(out)


def gaussian_denoiser(s: float):  # noqa: ANN201
    """The exact denoiser of data x0 ~ N(0, s² I): E[x0 | x_t] = α s² / (α² s² + σ²) x_t."""

    def denoise(x: torch.Tensor, t: torch.Tensor, ab: torch.Tensor) -> Prediction:
        a2 = ab.to(x.dtype)[:, None]
        x0 = a2.sqrt() * s**2 / (a2 * s**2 + 1 - a2) * x
        return Prediction(x0, (x - a2.sqrt() * x0) / (1 - a2).sqrt())

    return denoise


# --- schedule ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("prediction_type", ["x0", "eps", "v"])
def test_prediction_types_round_trip(prediction_type: str) -> None:
    sched = Schedule(kind="cosine", prediction_type=prediction_type)
    x0, eps = torch.randn(5, 3), torch.randn(5, 3)
    ab = torch.rand(5) * 0.98 + 0.01
    x_t = add_noise(x0, eps, ab)
    pred = sched.prediction(x_t, sched.target(x0, eps, ab), ab)
    assert torch.allclose(pred.x0, x0, atol=1e-4) and torch.allclose(pred.eps, eps, atol=1e-4)


def test_v_is_alpha_eps_minus_sigma_x0() -> None:
    x0, eps, ab = torch.randn(2, 3), torch.randn(2, 3), torch.tensor([0.36, 0.64])
    want = torch.tensor([[0.6], [0.8]]) * eps - torch.tensor([[0.8], [0.6]]) * x0  # α = sqrt(ᾱ), σ = sqrt(1 − ᾱ)
    assert torch.allclose(v_target(x0, eps, ab), want, atol=1e-6)


def test_cosine_shift_and_endpoints() -> None:
    t = torch.linspace(0.05, 0.95, 7)
    plain, shifted = Schedule(kind="cosine"), Schedule(kind="cosine", shift=2.0)
    assert (shifted.alpha_bar(t) > plain.alpha_bar(t)).all()  # less noise at every t
    assert torch.allclose(plain.alpha_bar(t), torch.cos(t * math.pi / 2) ** 2, atol=1e-5)  # Nichol & Dhariwal
    grid = plain.timesteps(10)
    assert grid.steps == 10 and float(grid.alpha_bar[0]) == pytest.approx(1e-6) and float(grid.alpha_bar[-1]) == 1.0


def test_discrete_sqrt_table_and_respacing() -> None:
    sched = Schedule(kind="sqrt", prediction_type="x0", steps=2000)
    ab = sched.alphas_cumprod()
    assert ab.dtype == torch.float64 and ab.shape == (2000,) and bool((ab[1:] < ab[:-1]).all())
    # ᾱ_t = Π(1 − β_i) with β_t = 1 − ᾱ((t+1)/T)/ᾱ(t/T): the product telescopes back to the continuous form
    tau = torch.tensor([100, 1000, 1900], dtype=torch.float64)  # (the last β is clamped at 0.999)
    start = sched.continuous_alpha_bar(torch.zeros(1, dtype=torch.float64))
    cont = sched.continuous_alpha_bar((tau + 1) / 2000) / start
    assert torch.allclose(ab[tau.long()], cont, rtol=1e-9)
    ts = respace(ab, 7)
    assert ts.t.tolist() == [1999, 1666, 1333, 1000, 666, 333, 0, 0] and float(ts.alpha_bar[-1]) == 1.0
    assert torch.equal(sched.timesteps(7).alpha_bar, ts.alpha_bar)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kind": "quadratic"}, "unknown schedule"),
        ({"prediction_type": "score"}, "unknown prediction type"),
        ({"kind": "linear"}, "discrete"),
        ({"steps": 1}, ">= 2"),
        ({"shift": 0.0}, "shift"),
    ],
)
def test_bad_schedules_are_one_line_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(LMControlError, match=message) as err:
        Schedule(**kwargs)
    assert "\n" not in str(err.value)


def test_bad_step_counts() -> None:
    with pytest.raises(LMControlError, match=">= 1"):
        Schedule().timesteps(0)
    with pytest.raises(LMControlError, match="<= diffusion_steps"):
        Schedule(kind="sqrt", steps=10).timesteps(11)
    with pytest.raises(LMControlError, match="unknown sampler 'ddpm'"):
        get_sampler("ddpm")  # one name for the ancestral sampler


# --- samplers ---------------------------------------------------------------------------------------------------
PINNED = {  # first row of the toy outputs; a change in the sampler maths moves these (refactor: bitwise)
    ("cosine", "ddim"): [2.15664, 0.52138, -1.167121, 1.102315],
    ("cosine", "ancestral"): [-1.175415, -1.253326, -0.698551, 0.45247],
    ("sqrt", "ddim"): [-0.069057, -0.178878, -0.282215, -0.377172],
    ("sqrt", "ancestral"): [0.04499, 0.206252, 0.361442, 0.503527],
}


@pytest.mark.parametrize("kind", ["cosine", "sqrt"])
def test_samplers_reproduce_pinned_outputs_and_are_pure(kind: str) -> None:
    sched = Schedule(kind="cosine", prediction_type="v") if kind == "cosine" else Schedule("sqrt", "x0", steps=50)
    ts = sched.timesteps(8)
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    before = x.clone()
    var = 0.2 if kind == "cosine" else 0.0
    d = sample_ddim(toy(sched), x, ts)
    a = sample_ancestral(toy(sched), x, ts, generator=torch.Generator().manual_seed(1), var_interp=var)
    a2 = sample_ancestral(toy(sched), x, ts, generator=torch.Generator().manual_seed(1), var_interp=var)
    assert torch.equal(x, before) and torch.equal(a, a2)
    assert d[0].tolist() == pytest.approx(PINNED[(kind, "ddim")], abs=1e-5)
    assert a[0].tolist() == pytest.approx(PINNED[(kind, "ancestral")], abs=1e-5)


@pytest.mark.parametrize("sampler", ["ddim", "ancestral"])
def test_exact_denoiser_samples_the_data_distribution(sampler: str) -> None:
    """With the exact denoiser of N(0, s²), both samplers turn N(0, 1) noise into samples of std s."""
    s = 0.5
    x_T = torch.randn(4000, 2, generator=torch.Generator().manual_seed(0))
    ts = Schedule(kind="cosine").timesteps(100)
    out = get_sampler(sampler)(gaussian_denoiser(s), x_T, ts, generator=torch.Generator().manual_seed(1))
    assert float(out.std()) == pytest.approx(s, rel=0.05)
    assert abs(float(out.mean())) < 0.03



def test_ancestral_noise_scale_is_a_temperature() -> None:
    """noise_scale 1 is the exact step (pinned output unchanged), smaller scales shrink the spread of the samples
    of N(0, s²) monotonically, 0 is deterministic; out-of-range scales are one-line errors."""
    x_T = torch.randn(4000, 2, generator=torch.Generator().manual_seed(0))
    ts = Schedule(kind="cosine").timesteps(50)
    den = gaussian_denoiser(0.5)

    def run(scale: float, seed: int = 1) -> torch.Tensor:
        return sample_ancestral(den, x_T, ts, generator=torch.Generator().manual_seed(seed), noise_scale=scale)

    assert torch.equal(run(1.0), sample_ancestral(den, x_T, ts, generator=torch.Generator().manual_seed(1)))
    stds = [float(run(scale).std()) for scale in (1.0, 0.5, 0.0)]
    assert stds[0] > stds[1] > stds[2]
    assert torch.equal(run(0.0, seed=1), run(0.0, seed=2))
    with pytest.raises(LMControlError, match="noise_scale"):
        run(1.5)


def test_last_step_lands_on_x0_and_callback_sees_every_step() -> None:
    seen: list[int] = []
    ts = Schedule(kind="sqrt", prediction_type="x0", steps=20).timesteps(5)
    den = toy(Schedule(kind="sqrt", prediction_type="x0", steps=20))
    x = torch.randn(2, 4)
    out = sample_ancestral(den, x, ts, callback=lambda i, x_prev, x0: seen.append(i))
    assert seen == [0, 1, 2, 3, 4]
    # the final x is x̂0 of the last visited step, not a noised point
    last = den(torch.zeros(2, 4), ts.t[-2].expand(2), ts.alpha_bar[-2].expand(2))
    assert out.shape == last.x0.shape


# --- guidance ---------------------------------------------------------------------------------------------------
def test_classifier_free_is_linear_in_the_scale() -> None:
    def out(x: torch.Tensor, t: torch.Tensor, ab: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return x * 0.5 + c

    x, ctx, null = torch.randn(3, 2), torch.ones(3, 2), torch.zeros(2)
    t = ab = torch.full((3,), 0.5)
    for w in (0.0, 1.0, 3.0):
        assert torch.allclose(classifier_free(out, ctx, null, w)(x, t, ab), x * 0.5 + w * ctx)


def test_classifier_guidance_raises_the_log_probability() -> None:
    sched = Schedule(kind="cosine", prediction_type="eps")
    base = sched.denoiser(lambda x, t, ab: torch.zeros_like(x))  # ε̂ = 0: x̂0 = x_t / α
    target = torch.tensor([2.0, -1.0])
    guided = classifier_guidance(base, lambda x0, ab: -((x0 - target) ** 2).sum(-1), x0_clip=10.0)
    x, ab = torch.zeros(4, 2), torch.full((4,), 0.5)
    before, after = base(x, ab, ab).x0, guided(x, ab, ab).x0
    assert (((after - target) ** 2).sum(-1) < ((before - target) ** 2).sum(-1)).all()
    clipped = classifier_guidance(base, lambda x0, ab: 100 * x0.sum(-1), x0_clip=1.0)(x, ab, ab)
    assert float(clipped.x0.abs().max()) <= 1.0


def test_gradient_corrector_moves_free_positions_only_and_skips_late_steps() -> None:
    x = torch.zeros(2, 3, 4)
    frozen = torch.zeros(2, 3, dtype=torch.bool)
    frozen[:, 1] = True
    corr = GradientCorrector(lambda p, t: p.sum(dim=(1, 2)), steps=2, step_size=0.1, fluency=0.0, frozen=frozen,
                             skip_below=10)  # fmt: skip
    out = corr(x, x, torch.tensor(1.0), torch.full((2,), 50))
    assert torch.allclose(out[:, 0], torch.full((2, 4), 0.2)) and torch.equal(out[:, 1], x[:, 1])
    assert torch.equal(corr(x, x, torch.tensor(1.0), torch.full((2,), 5)), x)  # below skip_below: untouched
    with pytest.raises(LMControlError, match=">= 0"):
        GradientCorrector(lambda p, t: p.sum(), steps=-1)
