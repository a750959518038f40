"""Train the Bradley-Terry reward model on HH-RLHF preference pairs (``lmcontrol train reward``).

Loss (Bradley & Terry 1952; Ouyang et al. 2022, eq. 1): ``-log σ(r(x, y_chosen) - r(x, y_rejected))``.
The texts are embedded once with the frozen encoder (the slow part: ~12k texts); the heads then train in
seconds. Splits (seeded): 20% of the pairs are held out for the reported pairwise accuracy; 10% of the rest
picks each head's best epoch (early stopping); the heads train on the remaining 72%. Data: the shared
HH-RLHF ``harmless-base`` + ``helpful-base`` pairs (``--data hh-rlhf``), one subset
(``hh-rlhf:helpful-base``), or any file with ``prompt``, ``chosen`` and ``rejected`` fields.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from lmcontrol import LMControlError
from lmcontrol.eval.config import RewardTrainConfig
from lmcontrol.eval.reward import (
    BTRewardModel,
    RewardConfig,
    last_human_turn,
    length_feature,
    pairwise_accuracy,
)

log = logging.getLogger(__name__)


def load_pairs(spec: str, limit: int | None = None) -> list[dict[str, Any]]:
    """Preference rows with string ``prompt``, ``chosen``, ``rejected`` (rows with an empty reply dropped)."""
    from lmcontrol.data import get_field, load_dataset

    rows = load_dataset(spec, split="train", limit=limit)
    for field in ("prompt", "chosen", "rejected"):
        get_field(rows, field, spec)  # raises naming the missing field
    rows = [
        r
        for r in rows
        if str(r["chosen"]).strip() and str(r["rejected"]).strip() and r["chosen"] != r["rejected"]
    ]
    if len(rows) < 20:
        raise LMControlError(
            f"'{spec}' has {len(rows)} usable preference pairs; the reward model needs >= 20"
        )
    return rows


def _fit_head(
    model: BTRewardModel,
    head: int,
    f_c: torch.Tensor,
    f_r: torch.Tensor,
    train: torch.Tensor,
    val: torch.Tensor,
    config: RewardTrainConfig,
) -> tuple[float, int]:
    """Train one head with the BT loss, keep its best epoch on ``val``; returns (val accuracy, epoch)."""
    net = model.heads[head]
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed * 1000 + head)
    best_acc, best_epoch, best_state = -1.0, 0, None
    for epoch in range(config.epochs):
        net.train()
        order = train[torch.randperm(len(train), generator=gen)]
        for start in range(0, len(order), config.batch_size):
            j = order[start : start + config.batch_size]
            margin = net(f_c[j]).squeeze(-1) - net(f_r[j]).squeeze(-1)  # (b,) r(chosen) - r(rejected)
            loss = -torch.nn.functional.logsigmoid(margin).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            acc = pairwise_accuracy(net(f_c[val]).squeeze(-1).numpy(), net(f_r[val]).squeeze(-1).numpy())
        if acc > best_acc:
            best_acc, best_epoch = acc, epoch
            best_state = {k: v.clone() for k, v in net.state_dict().items()}
    assert best_state is not None
    net.load_state_dict(best_state)
    return best_acc, best_epoch


def _subset_accuracy(
    rows: Sequence[dict[str, Any]], idx: np.ndarray, s_c: np.ndarray, s_r: np.ndarray
) -> dict[str, float]:
    """Held-out accuracy per HH subset (rows with a ``subset`` field)."""
    out = {}
    for subset in sorted({str(rows[i].get("subset", "")) for i in idx} - {""}):
        m = np.array([str(rows[i].get("subset")) == subset for i in idx])
        out[f"heldout_accuracy[{subset}]"] = pairwise_accuracy(s_c[m], s_r[m])
    return out


def train_reward(config: RewardTrainConfig) -> tuple[BTRewardModel, dict[str, Any]]:
    """Embed the pairs, train the heads, and measure held-out pairwise accuracy."""
    from lmcontrol.eval.embeddings import embed
    from lmcontrol.models import encoder_id

    torch.manual_seed(config.seed)
    rows = load_pairs(config.data, config.limit)
    n = len(rows)
    perm = np.random.default_rng(config.seed).permutation(n)
    n_held = max(1, int(n * config.heldout))
    n_val = max(1, int((n - n_held) * config.val))
    held, val, train = perm[:n_held], perm[n_held : n_held + n_val], perm[n_held + n_val :]

    e_p = torch.from_numpy(
        embed([last_human_turn(r["prompt"]) for r in rows], config.encoder, progress="prompts")
    )
    e_c = torch.from_numpy(embed([r["chosen"] for r in rows], config.encoder, progress="chosen replies"))
    e_r = torch.from_numpy(embed([r["rejected"] for r in rows], config.encoder, progress="rejected replies"))
    model = BTRewardModel(
        RewardConfig(
            input_dim=int(e_p.shape[1]),
            hidden=config.hidden,
            heads=config.heads,
            dropout=config.dropout,
            encoder=encoder_id(config.encoder),
        )
    )
    f_c = model.features(e_p, e_c, length_feature([r["chosen"] for r in rows]))  # (N, 4d + 1)
    f_r = model.features(e_p, e_r, length_feature([r["rejected"] for r in rows]))
    val_accs = []
    for head in range(config.heads):
        acc, epoch = _fit_head(model, head, f_c, f_r, torch.from_numpy(train), torch.from_numpy(val), config)
        log.info("head %d: validation accuracy %.4f at epoch %d", head, acc, epoch + 1)
        val_accs.append(acc)
    model.eval()
    with torch.no_grad():
        s_c, s_r = model(f_c).numpy(), model(f_r).numpy()  # (N,) ensemble rewards
    metrics: dict[str, Any] = {
        "heldout_pairwise_accuracy": pairwise_accuracy(s_c[held], s_r[held]),
        **_subset_accuracy(rows, held, s_c[held], s_r[held]),
        "validation_accuracy": pairwise_accuracy(s_c[val], s_r[val]),
        "train_accuracy": pairwise_accuracy(s_c[train], s_r[train]),
        "pairs_train": len(train),
        "pairs_val": len(val),
        "pairs_heldout": len(held),
    }
    model.base_model, model.base_hidden_size = model.config.encoder, model.config.input_dim
    log.info("reward model: held-out pairwise accuracy %.4f", metrics["heldout_pairwise_accuracy"])
    return model, metrics
