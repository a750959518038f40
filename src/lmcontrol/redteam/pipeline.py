"""``lmcontrol redteam``: behaviours x one method (investigator mixture / a component / plain sampling / nanoGCG)
against the target under its controls -> results.json, report.md, asr.png. Composes, holds no maths."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmcontrol import LMControlError
from lmcontrol.models import LanguageModel
from lmcontrol.redteam.attack import (
    BehaviorResult,
    Proposer,
    gcg_proposer,
    goal_proposer,
    investigator_proposer,
    plain_proposer,
    run_attack,
    template_proposer,
)
from lmcontrol.redteam.behaviors import Behavior
from lmcontrol.redteam.config import AttackConfig

log = logging.getLogger(__name__)

METHODS = ("investigator", "sample", "gcg", "goal", "template")


def parse_components(text: str | None) -> dict[str, float] | None:
    """``"round1"`` or ``"round1=0.5,round2=0.5"`` -> adapter weights (None = the artifact's mixture)."""
    if not text:
        return None
    out = {}
    for part in text.split(","):
        name, _, w = part.partition("=")
        try:
            out[name.strip()] = float(w) if w else 1.0
        except ValueError:
            raise LMControlError(f"bad component weight in '{part}' (use NAME or NAME=WEIGHT)") from None
    return out


def make_proposer(
    method: str,
    target: LanguageModel,
    inv: Any,
    config: AttackConfig,
    components: dict[str, float] | None = None,
    gcg_seconds: float = 30.0,
) -> Proposer:
    """The proposer for ``method`` (see ``lmcontrol.redteam.attack``)."""
    if method == "investigator":
        if components:
            missing = [c for c in components if c not in inv.adapters]
            if missing:
                raise LMControlError(f"investigator has no adapter {missing[0]!r} (has: {', '.join(inv.adapters)})")
        return investigator_proposer(inv, config, components)
    if method == "sample":
        return plain_proposer(inv, config)
    if method == "goal":
        return goal_proposer()
    if method == "template":
        return template_proposer()
    if method == "gcg":
        if gcg_seconds <= 0:
            raise LMControlError(f"--gcg-seconds must be > 0, got {gcg_seconds}")
        return gcg_proposer(target, gcg_seconds)
    raise LMControlError(f"unknown method '{method}' (known: {', '.join(METHODS)})")


def load_investigator(path: str | Path | None, target: LanguageModel) -> Any:
    """The investigator artifact for ``target``'s base model (refused with one line if made for another)."""
    from lmcontrol.redteam.config import InvestigatorConfig
    from lmcontrol.redteam.model import Investigator

    if path is None:  # plain-sampling baseline without an artifact: adapters exist but are never used
        return Investigator(target, InvestigatorConfig(base_model=target.info.name))
    return Investigator.load(path, target)


def attack_records(results: Sequence[BehaviorResult]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(r) for r in results]


def run_redteam(
    behaviors: Sequence[Behavior],
    *,
    investigator: str | Path | None,
    out: Path,
    method: str = "investigator",
    controls: Sequence[str] = (),
    components: str | None = None,
    config: AttackConfig = AttackConfig(),
    gcg_seconds: float = 30.0,
    model: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Attack every behaviour with ``method`` and write results.json / report.md / asr.png to ``out``."""
    from lmcontrol.controls import build_control
    from lmcontrol.models import load_lm
    from lmcontrol.redteam.report import assign_clusters, summarize, write_outputs

    if method not in METHODS:
        raise LMControlError(f"unknown method '{method}' (known: {', '.join(METHODS)})")
    if method == "investigator" and investigator is None:
        raise LMControlError("--method investigator needs --investigator DIR")
    target = load_lm(model)
    # plain sampling needs only the base weights; nanoGCG needs no investigator at all
    inv = {
        "investigator": lambda: load_investigator(investigator, target),
        "sample": lambda: load_investigator(None, target),
    }.get(method, lambda: None)()
    built = [build_control(c, target) for c in controls]
    if method == "gcg" and built:
        raise LMControlError("nanoGCG attacks the plain target only (controls are not differentiable through it)")
    propose = make_proposer(method, target, inv, config, parse_components(components), gcg_seconds)
    results = run_attack(target, behaviors, propose, config, built, progress=progress, description=method)
    groups = {method: attack_records(results)}
    strat = assign_clusters(groups)
    summary = {method: summarize(groups[method], target)}
    settings = {
        "method": method,
        "investigator": str(investigator) if investigator else None,
        "controls": list(controls),
        "components": components,
        "attack": dataclasses.asdict(config),
        "gcg_seconds": gcg_seconds if method == "gcg" else None,
        "model": target.info.name,
    }
    write_outputs(out, groups, summary, strat, settings, title=f"Red-team attack: {method}")
    return {"aggregate": summary, "settings": settings}
