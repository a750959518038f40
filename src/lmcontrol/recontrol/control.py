"""RE-Control at test time: edit each new token's state by gradient ascent on the value network.

At decoding step t the LM is in state h_t (the edit-site hidden state of the new position). RE-Control
(Kong et al. 2024, Sec. 4.3) looks for a control signal u_t that raises the value of the perturbed state,

    u_t^{(0)} = 0,   u_t^{(k+1)} = u_t^{(k)} + alpha * grad_u V(h_t + u_t^{(k)}),   k = 0 .. n-1     (eq. 9)

and hands h_t + u_t^{(n)} to the rest of the network (the LM head at the ``final`` site). A small, fixed n
is the paper's regulariser: it keeps u close to 0 so the edited state stays where the LM head is
reliable. Only the new token's state is edited; the KV cache is never touched, so earlier positions are
seen as the unedited model computed them. Rows are independent (V acts row-wise), so a batch is optimised
in one pass; other controls compose through the generation loop.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch

from lmcontrol import LMControlError
from lmcontrol.controls import Control, ControlSpec, StepContext
from lmcontrol.recontrol.config import ReControlConfig
from lmcontrol.recontrol.model import ValueNetwork, load_value_network

if TYPE_CHECKING:
    from lmcontrol.models import LanguageModel

log = logging.getLogger(__name__)


def control_signal(
    value: ValueNetwork, h: torch.Tensor, step_size: float, steps: int, max_norm: float = 0.0
) -> torch.Tensor:
    """u after ``steps`` gradient-ascent updates of size ``step_size`` on V(h + u) (eq. 9); (B, d) -> (B, d).

    ``steps == 0`` or ``step_size == 0`` gives u = 0. With ``max_norm > 0`` each row's ||u|| is clipped to
    ``max_norm * ||h||``. Gradients are taken w.r.t. u only (the value net's parameters are untouched).
    """
    h0 = h.detach().float()
    u = torch.zeros_like(h0)
    if steps <= 0 or step_size == 0:
        return u
    with torch.enable_grad():
        for _ in range(steps):
            u.requires_grad_(True)
            v = value(h0 + u).sum()  # rows are independent, so d(sum)/du_i = dV(h_i + u_i)/du_i
            (grad,) = torch.autograd.grad(v, u)  # (B, d)
            u = (u + step_size * grad).detach()
    if max_norm > 0:
        limit = max_norm * h0.norm(dim=-1, keepdim=True)  # (B, 1)
        u = u * (limit / u.norm(dim=-1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0)
    return u


class ReControl(Control):
    """The RE-Control hidden-state edit (``--control recontrol:DIR,step_size=A,steps=N``)."""

    name = "recontrol"

    def __init__(self, value: ValueNetwork, config: ReControlConfig = ReControlConfig()) -> None:
        self.value = value.eval().requires_grad_(False)
        self.config = config
        self.hidden_site = config.site
        # Diagnostics for tests and tuning only: off by default, so a control shared by the server's concurrent
        # requests never writes to itself.
        self.value_gain: list[float] = []  # mean V(h + u) - V(h) per step, when record_gain is set
        self.record_gain = False

    def setup(self, lm: LanguageModel) -> None:
        if self.value.config.hidden_size != lm.info.hidden_size:
            raise LMControlError(
                f"recontrol: the value network takes states of size {self.value.config.hidden_size}, "
                f"but '{lm.info.name}' has hidden size {lm.info.hidden_size}"
            )

    def edit_hidden(self, h: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        cfg = self.config
        u = control_signal(self.value, h, cfg.step_size, cfg.steps, cfg.max_norm)  # (B, d)
        edited = h.float() + u
        if self.record_gain:
            with torch.no_grad():
                active = ~ctx.finished
                gain = (self.value(edited) - self.value(h.float()))[active]
                if gain.numel():
                    self.value_gain.append(float(gain.mean()))
        return edited.to(h.dtype)


def artifact_settings(value: ValueNetwork) -> dict:
    """The artifact's recorded edit site and recommended step size / steps (chosen on a validation split)."""
    extra = (value.meta.extra if value.meta is not None else {}) or {}
    return {
        "site": extra.get("site", "final"),
        "step_size": extra.get("step_size", ReControlConfig.step_size),
        "steps": extra.get("steps", ReControlConfig.steps),
    }


def value_from_spec(spec: ControlSpec, lm: LanguageModel) -> ValueNetwork:
    """The value network named by the spec's first positional argument, checked against ``lm``."""
    if not spec.args:
        raise LMControlError(f"--control {spec.text}: give the value-network directory, e.g. {spec.kind}:DIR")
    return load_value_network(spec.args[0], model_name=lm.info.name, hidden_size=lm.info.hidden_size)


def recontrol_from_spec(spec: ControlSpec, lm: LanguageModel) -> ReControl:
    """``recontrol:DIR[,step_size=A][,steps=N][,max_norm=M]`` (defaults: the artifact's recommendation)."""
    spec.check_keys(["step_size", "steps", "max_norm"])
    value = value_from_spec(spec, lm)
    rec = artifact_settings(value)
    config = ReControlConfig(
        step_size=spec.float("step_size", float(rec["step_size"]), positive=True),
        steps=spec.int("steps", int(rec["steps"]), min_value=1),
        site=str(rec["site"]),
        max_norm=spec.float("max_norm", 0.0, min_value=0.0),
    )
    return ReControl(value, config)
