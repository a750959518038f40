"""The investigator q_phi(x | y): a second instance of the base LM plus PEFT LoRA adapters, one per round.

It reads a reply y (as the user turn of its chat template, under a fixed system message) and writes the user
message x that would make the target give y. Frank-Wolfe rounds add one adapter each; the sampler is the
mixture qbar = sum_i eta_i q_i (paper eq. 5): pick a component by eta, then sample a prompt from it. The
target model is never touched: the investigator holds its own deep copy of the base weights.

Artifact: every adapter's LoRA tensors (``<adapter>/<peft key>``) in one fp16 safetensors file, and a nested
JSON config ``{"investigator": ..., "sft": ..., "objective": ...}``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from lmcontrol import LMControlError
from lmcontrol.artifacts import check_compatible, load_artifact, read_meta, save_artifact
from lmcontrol.models import LanguageModel
from lmcontrol.redteam.config import InvestigatorConfig

log = logging.getLogger(__name__)

ARTIFACT_KIND = "redteam.investigator"


def user_turn_prefix(lm: LanguageModel) -> str:
    """The text before a user message in ``lm``'s chat template (its default system turn included), or ""."""
    if not lm.has_chat_template:
        return ""
    mark = "\x00MARK\x00"
    return lm.format_prompt(mark).split(mark)[0]


def teacher_forced_logprobs(
    model: torch.nn.Module, tokenizer: Any, contexts: Sequence[str], targets: Sequence[str], eos: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of log p(target | context) per row and the number of target tokens (B,), in one batched pass.

    ``contexts`` are already formatted (chat template included); ``eos`` appends the end-of-turn token to each
    target. Gradients flow if the caller has them enabled (used by the objective's policy gradient).
    """
    ctx_ids = tokenizer(list(contexts), add_special_tokens=False)["input_ids"]
    tgt_ids = tokenizer(list(targets), add_special_tokens=False)["input_ids"]
    eos_id = tokenizer.eos_token_id
    rows = []
    for c, t in zip(ctx_ids, tgt_ids, strict=True):
        t = list(t) + ([eos_id] if eos else [])
        rows.append((list(c), t))
    width = max(len(c) + len(t) for c, t in rows)
    pad = int(tokenizer.pad_token_id)
    device = next(model.parameters()).device
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    tmask = torch.zeros((len(rows), width), dtype=torch.bool)  # positions whose token is a target token
    for i, (c, t) in enumerate(rows):  # right padding: every row starts at position 0
        ids[i, : len(c) + len(t)] = torch.tensor(c + t)
        mask[i, : len(c) + len(t)] = 1
        tmask[i, len(c) : len(c) + len(t)] = True
    ids, mask, tmask = ids.to(device), mask.to(device), tmask.to(device)
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()  # (B, T-1, V)
    logp = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)  # (B, T-1)
    sel = tmask[:, 1:]
    return (logp * sel).sum(-1), sel.sum(-1)


class Investigator:
    """q_phi(x | y) with named LoRA adapters over its own copy of the base LM."""

    def __init__(self, base: LanguageModel, config: InvestigatorConfig) -> None:
        from peft import LoraConfig

        from lmcontrol.models import lora_model

        if config.base_model != base.info.name:
            config = dataclasses.replace(config, base_model=base.info.name)
        self.config = config
        self.base_name = base.info.name
        self.tokenizer = base.tokenizer
        self.lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=list(config.target_modules),
            bias="none",
            task_type="CAUSAL_LM",
        )
        model = copy.deepcopy(base.model)  # the investigator's own weights; the target stays untouched
        self.peft = lora_model(model, self.lora, adapter_name=config.adapters[0])
        for name in config.adapters[1:]:
            self.peft.add_adapter(name, self.lora)
        self.peft.eval()
        # The LoRA-injected causal LM, as a LanguageModel bundle for lmcontrol.generation.generate.
        self.lm = LanguageModel(model=self.peft.base_model.model, tokenizer=base.tokenizer, info=base.info)
        self.set_adapter(config.adapters[0])

    # ---- adapters ------------------------------------------------------------------------------------------
    @property
    def adapters(self) -> tuple[str, ...]:
        return self.config.adapters

    def set_adapter(self, name: str, trainable: bool = False) -> None:
        """Make ``name`` the active adapter (and the only trainable one if ``trainable``)."""
        if name not in self.adapters:
            raise LMControlError(f"investigator has no adapter '{name}' (has: {', '.join(self.adapters)})")
        self.peft.base_model.set_adapter(name)
        for pname, p in self.peft.named_parameters():
            p.requires_grad_(trainable and "lora_" in pname and f".{name}." in pname)

    def add_adapter(self, name: str, init_from: str, eta: Sequence[float] | None = None) -> None:
        """Add adapter ``name`` initialised as a copy of ``init_from`` (each FW round starts from the SFT model)."""
        from peft import get_peft_model_state_dict, set_peft_model_state_dict

        if name in self.adapters:
            return
        self.peft.add_adapter(name, self.lora)
        state = get_peft_model_state_dict(self.peft, adapter_name=init_from)
        set_peft_model_state_dict(self.peft, state, adapter_name=name)
        adapters = (*self.adapters, name)
        self.config = dataclasses.replace(
            self.config, adapters=adapters, eta=tuple(eta) if eta is not None else (*self.config.eta, 0.0)
        )

    def set_eta(self, eta: dict[str, float]) -> None:
        self.config = dataclasses.replace(self.config, eta=tuple(float(eta.get(a, 0.0)) for a in self.adapters))

    def trainable_parameters(self, name: str) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in self.peft.named_parameters() if "lora_" in n and f".{name}." in n}

    @contextlib.contextmanager
    def base_only(self) -> Iterator[None]:
        """The plain base LM (all adapters off): the prior p(x) and the plain-model baseline."""
        with self.peft.disable_adapter():
            yield

    # ---- q(x | y) -----------------------------------------------------------------------------------------
    def context(self, reply: str) -> str:
        """The investigator's input for reply y: its chat template with y as the user turn."""
        return self.lm.format_prompt(reply, chat=True, system=self.config.system)

    def logprob(
        self, replies: Sequence[str], prompts: Sequence[str], adapter: str, batch_size: int = 32
    ) -> torch.Tensor:
        """log q_adapter(x | y) per pair (B,), summed over x's tokens and the end-of-turn token."""
        self.set_adapter(adapter, trainable=torch.is_grad_enabled())
        out = []
        for s in range(0, len(prompts), batch_size):
            lp, _ = teacher_forced_logprobs(
                self.lm.model,
                self.tokenizer,
                [self.context(y) for y in replies[s : s + batch_size]],
                prompts[s : s + batch_size],
            )
            out.append(lp)
        return torch.cat(out)

    @torch.no_grad()
    def mixture_logprob(self, replies: Sequence[str], prompts: Sequence[str], eta: dict[str, float]) -> torch.Tensor:
        """log qbar(x | y) = logsumexp_i(log eta_i + log q_i(x | y)) over the adapters with eta_i > 0 (eq. 5)."""
        total = sum(eta.values())
        parts = [math.log(w / total) + self.logprob(replies, prompts, a) for a, w in eta.items() if w > 0]
        if not parts:
            raise LMControlError("mixture has no component with eta > 0")
        return torch.logsumexp(torch.stack(parts), dim=0)

    @torch.no_grad()
    def prior_logprob(self, prompts: Sequence[str], batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
        """log p_prior(x) under the plain base LM: x as a complete user turn after the template's default
        system turn (its end-of-turn token included); and the token counts."""
        head = user_turn_prefix(self.lm)
        sums, counts = [], []
        with self.base_only():
            for s in range(0, len(prompts), batch_size):
                chunk = prompts[s : s + batch_size]
                lp, n = teacher_forced_logprobs(self.lm.model, self.tokenizer, [head] * len(chunk), chunk)
                sums.append(lp)
                counts.append(n)
        return torch.cat(sums), torch.cat(counts)

    # ---- sampling -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self,
        replies: Sequence[str],
        n: int,
        *,
        adapters: dict[str, float] | None = None,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_new_tokens: int = 40,
        seed: int = 0,
        batch_size: int = 32,
    ) -> list[list[str]]:
        """``n`` prompts per reply from the mixture over ``adapters`` (name -> weight; default: the config's eta).

        Each sample first picks a component by its weight, then decodes from it (temperature / top-p).
        """
        from lmcontrol.generation import GenerationConfig, generate

        weights = adapters if adapters is not None else dict(zip(self.adapters, self.config.eta, strict=True))
        names = [a for a, w in weights.items() if w > 0]
        if not names:
            raise LMControlError("no adapter with a positive mixture weight to sample from")
        gen = torch.Generator().manual_seed(seed)
        probs = torch.tensor([weights[a] for a in names], dtype=torch.float)
        comp = torch.multinomial(probs / probs.sum(), len(replies) * n, replacement=True, generator=gen).tolist()
        out: list[list[str]] = [[""] * n for _ in replies]
        self.last_components = {}  # prompt -> the adapter that wrote it (the last call only)
        for ci, name in enumerate(names):
            jobs = [j for j, c in enumerate(comp) if c == ci]
            if not jobs:
                continue
            self.set_adapter(name)
            for s in range(0, len(jobs), batch_size):
                chunk = jobs[s : s + batch_size]
                cfg = GenerationConfig(
                    max_new_tokens=max_new_tokens,
                    temperature=temperature,
                    top_p=top_p,
                    seed=None,
                    system=self.config.system,
                )
                # seed=None: rows draw from the global RNG (seeded here), so repeated prompts give distinct
                # samples; a per-request seed would give n copies of one sample
                torch.manual_seed(seed * 7919 + ci * 104729 + s)
                res = generate(self.lm, [replies[j // n] for j in chunk], cfg)
                for j, text in zip(chunk, res.texts, strict=True):
                    out[j // n][j % n] = text.strip()
                    self.last_components[text.strip()] = name
        return out

    @torch.no_grad()
    def continue_prefixes(
        self,
        reply: str,
        prompts: Sequence[str],
        *,
        adapters: dict[str, float] | None = None,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_new_tokens: int = 40,
        seed: int = 0,
    ) -> list[str]:
        """Refinement: keep the first half (in words) of each prompt and let the mixture write the rest."""
        from lmcontrol.generation import GenerationConfig, generate

        weights = adapters if adapters is not None else dict(zip(self.adapters, self.config.eta, strict=True))
        name = max(weights, key=lambda a: weights[a])
        self.set_adapter(name)
        heads = [" ".join(p.split()[: max(1, len(p.split()) // 2)]) for p in prompts]
        ctx = self.context(reply)
        cfg = GenerationConfig(
            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=None, chat=False
        )
        torch.manual_seed(seed)  # see sample(): one global stream, distinct rows
        texts = generate(self.lm, [ctx + h for h in heads], cfg).texts
        return [
            f"{h}{t}" if t[:1] in (",", ".", "!", "?", "'") else f"{h} {t.lstrip()}"
            for h, t in zip(heads, texts, strict=True)
        ]

    # ---- artifact -----------------------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        tensors = {}
        for name in self.adapters:
            for k, v in get_peft_model_state_dict(self.peft, adapter_name=name).items():
                tensors[f"{name}/{k}"] = v
        return tensors

    def save(self, path: str | Path, *, sections: dict[str, Any] | None = None, **kwargs: Any) -> Path:
        """Save every adapter (fp16) and the nested config (``investigator`` + ``sections``) atomically."""
        config = {"investigator": dataclasses.asdict(self.config), **(sections or {})}
        return save_artifact(
            path,
            kind=ARTIFACT_KIND,
            tensors=self.state_tensors(),
            base_model=self.base_name,
            hidden_size=self.lm.info.hidden_size,
            config=config,
            **kwargs,
        )

    @classmethod
    def load(cls, path: str | Path, base: LanguageModel) -> Investigator:
        """Load an investigator artifact for ``base`` (an artifact made for another base model is refused)."""
        from peft import set_peft_model_state_dict

        meta = read_meta(path)
        if meta.kind != ARTIFACT_KIND:
            raise LMControlError(f"artifact {path} is a '{meta.kind}', expected '{ARTIFACT_KIND}'")
        check_compatible(meta, path, base.info.name, base.info.hidden_size)
        _, tensors = load_artifact(
            path, kind=ARTIFACT_KIND, model_name=base.info.name, hidden_size=base.info.hidden_size
        )
        raw = dict(meta.config.get("investigator", {}))
        fields = {f.name for f in dataclasses.fields(InvestigatorConfig)}
        try:
            config = InvestigatorConfig(**{k: v for k, v in raw.items() if k in fields})
        except TypeError as e:
            raise LMControlError(f"artifact {path} has a bad investigator config: {e}") from None
        inv = cls(base, config)
        for name in config.adapters:
            state = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith(f"{name}/")}
            if not state:
                raise LMControlError(f"artifact {path} is corrupt: no tensors for adapter '{name}'")
            set_peft_model_state_dict(inv.peft, state, adapter_name=name)
        inv.meta = meta
        return inv

    meta: Any = None
    last_components: dict[str, str] = {}  # noqa: RUF012 (replaced per call)
