"""(prefix, continuation) pairs of 32 + 32 decoder tokens cut from real text, with their encoder embeddings.

Paper §4: prefixes and continuations of 32 tokens each from C4. We cut non-overlapping 64-token windows from the
shared C4 sample and WikiText (light detokenisation), keeping whole documents on one side of the split: a C4
document whose URL hashes into the held-out share, and every WikiText *test* line, are held out — so the
benchmark's held-out prefixes were never seen by either network.

Embeddings (unit-norm, from the semantic encoder) are computed once and cached under ``LMCONTROL_CACHE`` as
safetensors + JSON (MiniLM encodes ~500 sentences/s here, so ~25k pairs take about two minutes once).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from lmcontrol import LMControlError
from lmcontrol.dglm.config import SOURCES

if TYPE_CHECKING:
    from lmcontrol.models import LanguageModel

log = logging.getLogger(__name__)

DECODER_TOP_P = 0.95  # the decoder's own continuations are sampled as the benchmarks decode (T = 1, p = 0.95)


@dataclasses.dataclass
class PairSet:
    """Token ids (N, 32) + (N, 32), texts, and unit-norm embeddings (N, d) of prefixes and continuations."""

    prefix_ids: torch.Tensor
    cont_ids: torch.Tensor
    prefix_text: list[str]
    cont_text: list[str]
    prefix_emb: torch.Tensor
    cont_emb: torch.Tensor
    source: list[str]

    def __len__(self) -> int:
        return len(self.prefix_text)

    def take(self, n: int) -> PairSet:
        return PairSet(
            self.prefix_ids[:n],
            self.cont_ids[:n],
            self.prefix_text[:n],
            self.cont_text[:n],
            self.prefix_emb[:n],
            self.cont_emb[:n],
            self.source[:n],
        )


_WIKI_FIXES = [
    (" @-@ ", "-"),
    (" @,@ ", ","),
    (" @.@ ", "."),
    (" 's", "'s"),
    (" n't", "n't"),
    ("( ", "("),
    (" )", ")"),
    ('" ', '"'),
]


def _detok_wikitext(line: str) -> str:
    for a, b in _WIKI_FIXES:
        line = line.replace(a, b)
    return re.sub(r" ([,.;:!?%])", r"\1", line)


def _documents(source: str) -> list[tuple[str, bool]]:
    """(text, held out?) per document of one source."""
    from lmcontrol.data import load_dataset

    if source == "c4":
        docs = load_dataset("c4")
        return [(d["text"], int(hashlib.sha1(d["url"].encode()).hexdigest(), 16) % 10 == 0) for d in docs]
    if source == "wikitext":
        out = []
        for split, held in (("valid", False), ("test", True)):
            for row in load_dataset("wikitext", split=split):
                if "<unk>" not in row["text"] and len(row["text"]) > 200:
                    out.append((_detok_wikitext(row["text"]), held))
        return out
    raise LMControlError(f"unknown DGLM text source '{source}' (known: {', '.join(SOURCES)})")


def _windows(ids: list[int], width: int) -> list[list[int]]:
    return [ids[i : i + width] for i in range(0, len(ids) - width + 1, width)]


def build_pairs(
    lm: LanguageModel,
    sources: tuple[str, ...] = SOURCES,
    prefix_tokens: int = 32,
    cont_tokens: int = 32,
    encoder: str | None = None,
) -> tuple[PairSet, PairSet]:
    """(train, held-out) pair sets, cached by (decoder, encoder, sources, lengths)."""
    from lmcontrol.models import encoder_id
    from lmcontrol.settings import cache_dir

    key = json.dumps([lm.info.name, encoder_id(encoder), sorted(sources), prefix_tokens, cont_tokens, 1])
    folder = cache_dir() / "dglm-pairs" / hashlib.sha1(key.encode()).hexdigest()[:16]
    if (folder / "pairs.json").is_file():
        return _load(folder, "train"), _load(folder, "heldout")
    log.info("building DGLM pairs from %s (once; cached in %s)", ", ".join(sources), folder)
    tok = lm.tokenizer
    parts: dict[str, dict[str, list]] = {s: {"ids": [], "src": []} for s in ("train", "heldout")}
    for source in sources:
        for text, held in _documents(source):
            ids = tok(text, add_special_tokens=False)["input_ids"]
            for w in _windows(ids, prefix_tokens + cont_tokens):
                part = parts["heldout" if held else "train"]
                part["ids"].append(w)
                part["src"].append(source)
    from safetensors.torch import save_file

    from lmcontrol.atomic import atomic_write_dir
    from lmcontrol.eval.embeddings import embed

    def fill(tmp: Path) -> None:  # written into a temporary directory, swapped in whole (atomic_write_dir)
        meta: dict[str, dict[str, list[str]]] = {}
        for split, part in parts.items():
            if not part["ids"]:
                raise LMControlError(f"no {split} text windows of {prefix_tokens + cont_tokens} tokens in {sources}")
            ids = torch.tensor(part["ids"])  # (N, 64)
            p_text = tok.batch_decode(ids[:, :prefix_tokens])
            c_text = tok.batch_decode(ids[:, prefix_tokens:])
            p_emb = torch.from_numpy(embed(p_text, encoder, progress=f"embedding {split} prefixes"))
            c_emb = torch.from_numpy(embed(c_text, encoder, progress=f"embedding {split} continuations"))
            tensors = {
                "prefix_ids": ids[:, :prefix_tokens].contiguous(),
                "cont_ids": ids[:, prefix_tokens:].contiguous(),
                "prefix_emb": p_emb,
                "cont_emb": c_emb,
            }
            save_file(tensors, str(tmp / f"{split}.safetensors"))
            meta[split] = {"prefix_text": p_text, "cont_text": c_text, "source": part["src"]}
        (tmp / "pairs.json").write_text(json.dumps(meta))

    atomic_write_dir(folder, fill)
    return _load(folder, "train"), _load(folder, "heldout")


def _load(folder: Path, split: str) -> PairSet:
    from safetensors.torch import load_file

    t = load_file(str(folder / f"{split}.safetensors"))
    meta = json.loads((folder / "pairs.json").read_text())[split]
    return PairSet(
        t["prefix_ids"],
        t["cont_ids"],
        meta["prefix_text"],
        meta["cont_text"],
        t["prefix_emb"],
        t["cont_emb"],
        meta["source"],
    )


def space_stats(emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std of unit-norm embeddings (the standardisation both networks share)."""
    return emb.mean(0), emb.std(0)


def decoder_pairs(
    lm: LanguageModel, pairs: PairSet, seed: int = 0, encoder: str | None = None, batch_size: int = 64
) -> PairSet:
    """``pairs`` with each continuation replaced by the frozen decoder's own sample of it (T = 1, p = 0.95, cut to the
    human continuation's length; rows whose sample ends sooner are dropped), re-embedded; cached like
    ``build_pairs`` (the samples depend on ``seed`` and ``batch_size``: one decoding seed per batch).

    Trained on these, the prompt generator learns p_decoder(continuation | prefix, proposal) instead of the human
    text distribution: with an uninformative proposal it falls back on the decoder's own fluent continuation.
    """
    from safetensors.torch import save_file

    from lmcontrol.atomic import atomic_write_dir
    from lmcontrol.eval.embeddings import embed
    from lmcontrol.generation import GenerationConfig, generate
    from lmcontrol.models import encoder_id
    from lmcontrol.settings import cache_dir

    n, width = len(pairs), pairs.cont_ids.shape[1]
    digest = hashlib.sha1(pairs.prefix_ids.numpy().tobytes()).hexdigest()[:12]
    key = json.dumps([lm.info.name, encoder_id(encoder), digest, n, width, seed, batch_size, DECODER_TOP_P, 1])
    folder = cache_dir() / "dglm-decoder-pairs" / hashlib.sha1(key.encode()).hexdigest()[:16]
    if not (folder / "pairs.json").is_file():
        from tqdm.auto import tqdm

        config = GenerationConfig(max_new_tokens=width + 8, temperature=1.0, top_p=DECODER_TOP_P, chat=False)
        keep: list[int] = []
        conts: list[list[int]] = []
        for i in tqdm(range(0, n, batch_size), desc="sampling decoder continuations", unit="batch"):
            chunk = pairs.prefix_text[i : i + batch_size]
            out = generate(lm, chunk, dataclasses.replace(config, seed=seed + i))
            for j, text in enumerate(out.texts):
                ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
                if len(ids) >= width:
                    keep.append(i + j)
                    conts.append(ids[:width])
        if not keep:
            raise LMControlError("the decoder ended every sampled continuation early: no decoder pairs")
        cont_ids = torch.tensor(conts)
        cont_text = lm.tokenizer.batch_decode(cont_ids)
        cont_emb = torch.from_numpy(embed(cont_text, encoder, progress="embedding decoder continuations"))
        idx = torch.tensor(keep)

        def fill(tmp: Path) -> None:
            tensors = {
                "prefix_ids": pairs.prefix_ids[idx].contiguous(),
                "cont_ids": cont_ids,
                "prefix_emb": pairs.prefix_emb[idx].contiguous(),
                "cont_emb": cont_emb,
            }
            save_file(tensors, str(tmp / "train.safetensors"))
            meta = {"prefix_text": [pairs.prefix_text[k] for k in keep], "cont_text": cont_text,
                    "source": [pairs.source[k] for k in keep]}  # fmt: skip
            (tmp / "pairs.json").write_text(json.dumps({"train": meta}))

        atomic_write_dir(folder, fill)
        log.info("decoder pairs: kept %d of %d (the rest ended early)", len(keep), n)
    return _load(folder, "train")
