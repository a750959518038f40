"""Many prefixes, one batch: each row of a generate call names its own prefix (or none).

The per-row prefixes are laid out as one (B, m_max) key/value block: row i's prefix fills its first m_i slots
and the mask hides the rest, so a batch mixing 8 prefixes costs one forward per step, like a batch with one
prefix (Li & Liang 2021, §1: "a single model serving many users' prefixes in one batch"). A row without a prefix
has an all-False mask and sees exactly what it would see alone.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from lmcontrol import LMControlError
from lmcontrol.artifacts import CONFIG_NAME, read_meta
from lmcontrol.controls import Control, ControlSpec, Rows, SoftPrompt
from lmcontrol.prefix.model import CompressedPrompt, Prefix, load_prefix

if TYPE_CHECKING:
    from lmcontrol.models import LanguageModel

log = logging.getLogger(__name__)

PREFIX_KINDS = (Prefix.artifact_kind, CompressedPrompt.artifact_kind)
META_KEY = "prefix"


class PrefixLibrary(Control):
    """A set of named prefixes; ``rows.meta[i]["prefix"]`` picks row i's (missing/None -> ``default``).

    Args:
        prefixes: name -> merged ``Prefix`` (all for the same base model).
        default: the prefix for rows that name none (None = no prefix).
        per_row: read the row's ``prefix`` field; False = every row gets ``default`` (a single-prefix control).
    """

    name = "prefix-library"

    def __init__(self, prefixes: Mapping[str, Prefix], default: str | None = None, per_row: bool = True) -> None:
        if default is not None and default not in prefixes:
            raise LMControlError(f"default prefix '{default}' is not in the library")
        self.prefixes = dict(prefixes)
        self.default = default
        self.per_row = per_row
        self._kv = {n: p.kv_tensor().detach() for n, p in self.prefixes.items()}  # name -> (L, 2, H_kv, m, hd)
        # prefixes trained without the chat template (the E2E one) turn it off; a mixed library leaves it to the call
        chats = {bool(getattr(p.config, "chat", True)) for p in self.prefixes.values()}
        self.chat = False if chats == {False} else None

    @classmethod
    def from_dir(cls, directory: str | Path, lm: LanguageModel | None = None) -> PrefixLibrary:
        """Load every prefix artifact directly under ``directory`` (named after its sub-directory); a directory
        that is itself one artifact gives a library of one, named after the directory."""
        root = Path(directory)
        if not root.is_dir():
            raise LMControlError(f"prefix library not found: {root} is not a directory")
        if (root / CONFIG_NAME).is_file():
            return cls({root.name: load_prefix(str(root), lm)})
        found = {}
        for sub in sorted(p for p in root.iterdir() if (p / CONFIG_NAME).is_file()):
            if read_meta(sub).kind in PREFIX_KINDS:
                found[sub.name] = load_prefix(str(sub), lm)
        if not found:
            raise LMControlError(f"prefix library {root} holds no prefix artifacts")
        log.info("prefix library %s: %d prefixes", root, len(found))
        return cls(found)

    def setup(self, lm: LanguageModel) -> None:
        for p in self.prefixes.values():
            p.check_model(lm)

    def row_names(self, rows: Rows) -> list[str | None]:
        if not self.per_row:
            return [self.default] * len(rows)
        names = []
        for i, meta in enumerate(rows.meta):
            name = meta.get(META_KEY) or self.default
            if name is not None and name not in self.prefixes:
                known = ", ".join(sorted(self.prefixes)) or "none"
                raise LMControlError(f"row {rows.prompt_index[i]} names unknown prefix '{name}' (known: {known})")
            names.append(name)
        return names

    def soft_prompt(self, rows: Rows) -> SoftPrompt | None:
        names = self.row_names(rows)
        used = {n for n in names if n is not None}
        if not used:
            return None
        first = next(iter(self._kv.values()))
        n_layers, _, n_kv, _, hd = first.shape
        m_max = max(self._kv[n].shape[3] for n in used)
        batch = len(names)
        mask = torch.zeros(batch, m_max, dtype=torch.bool, device=first.device)  # (B, m_max)
        kv = first.new_zeros(n_layers, 2, batch, n_kv, m_max, hd)  # (L, 2, B, H_kv, m_max, hd)
        for i, n in enumerate(names):
            if n is None:
                continue
            m = self._kv[n].shape[3]
            kv[:, :, i, :, :m] = self._kv[n]
            mask[i, :m] = True
        return SoftPrompt.from_kv(kv, mask=mask)


def single_prefix_control(path: str | Path, lm: LanguageModel) -> PrefixLibrary:
    """A library of one prefix applied to every row (``--control prefix:DIR`` / ``compressed:DIR``)."""
    prefix = load_prefix(str(path), lm)
    name = Path(path).name
    return PrefixLibrary({name: prefix}, default=name, per_row=False)


def prefix_from_spec(spec: ControlSpec, lm: LanguageModel) -> PrefixLibrary:
    """``prefix:DIR`` / ``compressed:DIR``: one prefix artifact for every row."""
    spec.check_keys(())
    if len(spec.args) != 1:
        raise LMControlError(f"--control {spec.text}: give one artifact directory, e.g. {spec.kind}:DIR")
    return single_prefix_control(spec.args[0], lm)


def prefix_library_from_spec(spec: ControlSpec, lm: LanguageModel) -> PrefixLibrary:
    """``prefix-library:DIR``: every prefix artifact under DIR; each row's ``prefix`` field picks its own."""
    spec.check_keys(())
    if len(spec.args) != 1:
        raise LMControlError(f"--control {spec.text}: give one directory, e.g. {spec.kind}:DIR")
    return PrefixLibrary.from_dir(spec.args[0], lm)
