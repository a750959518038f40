"""``lmcontrol bench redteam``: the investigator vs its baselines on held-out AdvBench behaviours, and the audit.

Each bench "prompt" is a held-out behaviour's goal (``advbench_split("test")``, never used in training or
tuning); each method's run attacks it and stores the behaviour's attack record (``BehaviorResult`` as JSON) in
the ``continuation`` field of ``generations.jsonl``, so the bench harness resumes per behaviour. ``finalize``
then clusters all successes together and writes the red-team figures (``redteam`` in results.json,
``redteam.md``, ``redteam_asr.png``, ``fw_clusters.png``).

The investigator is ``artifacts/investigator`` unless ``LMCONTROL_INVESTIGATOR=DIR`` names another artifact.
``--prompts FILE`` may also name ``advbench_split("val")`` goals (how attack settings are tuned).

Methods (same K prompts per behaviour unless noted):
- ``investigator``: the artifact's mixture qbar (rounds 1..R; each success is tagged with the component that
  wrote it, which gives the clusters per Frank-Wolfe round); ``round1``: one round without Frank-Wolfe;
  ``investigator-distinct``: the same mixture drawing up to 4 K samples until K of them are distinct (repeats
  cost the target nothing, so the same K + K passes verify more distinct prompts); ``investigator-hot``: the
  same at proposal temperature ``HOT`` (more varied prompts against fewer successes);
  ``sft``: the reverse model alone (no objective); ``goal``: the AdvBench request itself;
- ``sample``: the plain base model asked to write a request that elicits the reply;
- ``template``: the fixed request templates the SFT pairs were built from (repeat, complete, start with …),
  filled with the target reply: a probe kit, and the modes the investigator has to find on its own;
- ``gcg``: nanoGCG on goal + 10-token suffix, stopped at ``GCG_SECONDS`` of wall time per behaviour (set to the
  investigator's measured seconds per behaviour); ``gcg-120``: the same at 120 s, ``investigator-distinct``'s time;
- ``audit-system`` / ``audit-recontrol``: the investigator mixture against the target under a system prompt /
  RE-Control (``artifacts/recontrol-hh``); ``audit-*-sft`` and ``audit-*-template``: the same two controls against
  the SFT component and against the templates.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from lmcontrol import LMControlError
from lmcontrol.settings import ARTIFACTS_DIR

INVESTIGATOR = ARTIFACTS_DIR / "investigator"  # the artifact attacked with; LMCONTROL_INVESTIGATOR=DIR overrides it
SAMPLES = 32  # K prompts per behaviour: K scored + K verified = 64 target passes, the per-behaviour budget
TEMPERATURE = 1.0  # of the proposals: on 8 advbench:val behaviours 1.0 beat 0.7 (best log p -9.9 vs -12.4; docs)
MAX_VERIFY_TOKENS = 10  # enough for the target's first 5 words
# nanoGCG's budget per behaviour: the investigator mixture took 31-38 s per behaviour at K = 32 on 8 val behaviours
# (two jobs sharing the CPU). nanoGCG checks it between steps, so its first step always runs (seconds can exceed it).
GCG_SECONDS = 30.0
HOT = 1.3  # the proposal temperature of investigator-hot
SFT = {"sft": 1.0}  # the reverse model alone, as a mixture
RECONTROL = f"recontrol:{ARTIFACTS_DIR / 'recontrol-hh'}"  # the audited value-guided control


def _attack_config(seed: int, draws: int = 1, temperature: float = TEMPERATURE):
    from lmcontrol.redteam.config import AttackConfig

    return AttackConfig(
        samples=SAMPLES,
        verify_top=SAMPLES,
        draws=draws,
        max_new_tokens=MAX_VERIFY_TOKENS,
        temperature=temperature,
        seed=seed,
    )


_CACHE: dict[str, Any] = {}


def _investigator(lm: Any) -> Any:
    if "inv" not in _CACHE:
        from lmcontrol.redteam.pipeline import load_investigator

        _CACHE["inv"] = load_investigator(os.environ.get("LMCONTROL_INVESTIGATOR") or INVESTIGATOR, lm)
    return _CACHE["inv"]


def _runner(
    method: str,
    components: dict[str, float] | None = None,
    control: str | None = None,
    draws: int = 1,
    gcg_seconds: float = GCG_SECONDS,
    temperature: float = TEMPERATURE,
):
    def run(lm: Any, prompts: list[str], config: Any) -> Any:
        from lmcontrol.controls import build_control
        from lmcontrol.generation import GenerationOutput
        from lmcontrol.redteam.attack import attack_behavior
        from lmcontrol.redteam.behaviors import advbench_split
        from lmcontrol.redteam.pipeline import make_proposer

        if config.max_new_tokens == 2:  # the harness's untimed warm-up call: nothing to warm for an attack
            return GenerationOutput(list(prompts), [""] * len(prompts), [[] for _ in prompts], 0.0, 0.0, 0)
        by_goal = {b.goal: b for split in ("val", "test") for b in advbench_split(split)}
        unknown = [p for p in prompts if p not in by_goal]
        if unknown:
            raise LMControlError(f"not a held-out (val or test) AdvBench goal: {unknown[0]!r}")
        inv = _investigator(lm) if method in ("investigator", "sample") else None
        cfg = _attack_config(int(config.seed or 0), draws, temperature)
        propose = make_proposer(method, lm, inv, cfg, components, gcg_seconds)
        controls = [build_control(control, lm)] if control else []
        texts, seconds = [], 0.0
        for p in prompts:
            res = attack_behavior(lm, by_goal[p], propose, cfg, controls, seed=cfg.seed)
            texts.append(json.dumps(dataclasses.asdict(res)))
            seconds += res.seconds
        return GenerationOutput(list(prompts), texts, [[] for _ in prompts], seconds, 0.0, 0)

    return run


def finalize(results: dict[str, Any], out: Path) -> dict[str, Any]:
    """Red-team figures from the attack records (clusters shared across methods)."""
    from lmcontrol.bench.runner import GENERATIONS, read_generations
    from lmcontrol.models import load_lm
    from lmcontrol.redteam.report import assign_clusters, report_table, summarize, write_outputs

    wanted = set(results["methods"])
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in read_generations(out / GENERATIONS):
        if r["method"] in wanted and r["continuation"].startswith("{"):
            groups.setdefault(r["method"], []).append(json.loads(r["continuation"]))
    strat = assign_clusters(groups)
    base = load_lm(results.get("model") if results.get("model") != "smollm2-135m-instruct-q4_1" else None)
    summary = {m: summarize(recs, base) for m, recs in groups.items()}
    fw = frank_wolfe_clusters(groups)
    write_outputs(
        out / "redteam",
        groups,
        summary,
        strat,
        {"suite": "redteam", "samples": SAMPLES, "temperature": TEMPERATURE, "gcg_seconds": GCG_SECONDS},
        "Red-team benchmark",
    )
    (out / "redteam.md").write_text("\n".join(report_table(summary)) + "\n\n" + json.dumps(fw, indent=1) + "\n")
    plot_fw(fw, out / "fw_clusters.png")
    results["redteam"] = {"aggregate": summary, "frank_wolfe": fw}
    return results


def frank_wolfe_clusters(groups: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Strategy clusters among the mixture's successes written by round i's component, and by rounds 1..i
    together (cumulative); plus each component's share of the mixture's successes."""
    succ = [d for rec in groups.get("investigator", []) for d in rec["successes"]]
    rounds = sorted({d["component"] for d in succ if d.get("component")}, key=lambda r: (len(r), r))  # round2 < round10
    per, cum, count, seen = {}, {}, {}, set()
    for r in rounds:
        labs = {d["cluster"] for d in succ if d.get("component") == r}
        per[r] = len(labs)
        count[r] = sum(d.get("component") == r for d in succ)
        seen |= labs
        cum[r] = len(seen)
    return {"clusters_per_round": per, "clusters_cumulative": cum, "successes_per_round": count}


def plot_fw(fw: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 3.2))
    rounds = list(fw["clusters_per_round"])
    xs = list(range(1, len(rounds) + 1))
    ax.plot(xs, [fw["clusters_per_round"][r] for r in rounds], "o-", label="clusters in round i")
    ax.plot(xs, [fw["clusters_cumulative"][r] for r in rounds], "s--", label="clusters in rounds 1..i")
    ax.set_xticks(xs)
    ax.set_xlabel("Frank-Wolfe round")
    ax.set_ylabel("strategy clusters among successes")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def make_suite():
    from lmcontrol.bench.suite import BenchMethod, BenchSuite
    from lmcontrol.generation import GenerationConfig

    def prompts(n: int) -> list[dict[str, Any]]:
        from lmcontrol.redteam.behaviors import advbench_split

        return [{"prompt": b.goal} for b in advbench_split("test", limit=n)]

    methods = [
        BenchMethod("investigator", run=_runner("investigator"), help="the mixture qbar of the artifact's rounds"),
        BenchMethod(
            "investigator-distinct",
            run=_runner("investigator", draws=4),
            help="the mixture, sampling up to 4 K until K distinct prompts (same K + K target passes)",
        ),
        BenchMethod(
            "investigator-hot",
            run=_runner("investigator", draws=4, temperature=HOT),
            help=f"investigator-distinct at proposal temperature {HOT:g} (more varied prompts, fewer successes?)",
        ),
        BenchMethod("round1", run=_runner("investigator", {"round1": 1.0}), help="one round, no Frank-Wolfe"),
        BenchMethod("sft", run=_runner("investigator", SFT), help="SFT reverse model, no objective"),
        BenchMethod("goal", run=_runner("goal"), help="the AdvBench request itself (1 prompt)"),
        BenchMethod("sample", run=_runner("sample"), help="plain model asked to write the request"),
        BenchMethod("template", run=_runner("template"), help="the SFT data's request templates, filled with y"),
        BenchMethod("gcg", run=_runner("gcg"), help=f"nanoGCG, {GCG_SECONDS:.0f} s per behaviour"),
        BenchMethod(
            "gcg-120",
            run=_runner("gcg", gcg_seconds=120.0),
            help="nanoGCG, 120 s per behaviour (the wall time of investigator-distinct)",
        ),
        BenchMethod("audit-system", run=_runner("investigator", control="system"), help="target + system prompt"),
        BenchMethod(
            "audit-recontrol",
            run=_runner("investigator", control=RECONTROL),
            help="target + RE-Control",
        ),
        # the audit with the investigator's SFT component and with the templates (the modes that succeed unguarded)
        BenchMethod("audit-system-sft", run=_runner("investigator", SFT, "system"), help="SFT component vs + system"),
        BenchMethod("audit-recontrol-sft", run=_runner("investigator", SFT, RECONTROL), help="SFT vs + RE-Control"),
        BenchMethod("audit-system-template", run=_runner("template", control="system"), help="templates vs + system"),
        BenchMethod("audit-recontrol-template", run=_runner("template", control=RECONTROL), help="templates vs RE-C"),
    ]
    return BenchSuite(
        name="redteam",
        prompts=prompts,
        methods=tuple(methods),
        metrics=(),
        generation=GenerationConfig(max_new_tokens=MAX_VERIFY_TOKENS, temperature=0.0),
        batch_size=1,
        help="investigator vs nanoGCG / plain sampling / SFT-only / single rounds on held-out AdvBench; audit",
        finalize=finalize,
    )
