"""One save/load contract for every trained control (value nets, probes, prefixes, diffusion nets, ...).

An artifact is a directory::

    config.json        kind, format version, base model id + hidden size, method config, command, data, metrics
    model.safetensors  the tensors (floating point stored as fp16 by default to keep commits small)
    README.md          a human-readable card generated from config.json

Writes are atomic: everything goes to a temporary sibling directory that is renamed into place, so a killed
run never leaves a half artifact. Loading checks the kind and, when the caller names the model it will be used
with, the base model id and hidden size, and refuses a mismatch with a message naming both. Nothing is ever
unpickled: tensors come from safetensors, metadata from JSON.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from lmcontrol import LMControlError, __version__

if TYPE_CHECKING:  # torch is imported lazily so the CLI starts fast
    import torch

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"


class ArtifactError(LMControlError):
    """An artifact is missing, corrupt, of the wrong kind, or made for another model."""


@dataclasses.dataclass
class ArtifactMeta:
    """Everything in ``config.json``. ``config`` is the method's own (frozen dataclass) config as a dict."""

    kind: str
    base_model: str | None
    hidden_size: int | None
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    command: str | None = None
    data: str | None = None
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    lmcontrol_version: str = __version__
    created: str = ""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=False, default=_json_default)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if isinstance(obj, tuple | set):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def current_command() -> str:
    """The command line that is running, as a user would type it (used as the artifact's provenance)."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).name in {"lmcontrol", "__main__.py", "main.py"}:
        argv[0] = "lmcontrol"
    return shlex.join(argv)


def atomic_write_dir(target: Path, fill: Any, keep: tuple[str, ...] = ()) -> Path:
    """Create ``target`` atomically: ``fill(tmp_dir)`` writes the content, then the directory is swapped in.

    An existing ``target`` is replaced only after the new content is complete. Sub-directories named in ``keep``
    (a trainer's ``checkpoint/``) are carried over from the old ``target``, so saving the final artifact does not
    throw away the state a later ``--resume`` needs.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    moved: list[str] = []
    try:
        fill(tmp)
        for name in keep:
            if (target / name).is_dir() and not (tmp / name).exists():
                os.replace(target / name, tmp / name)
                moved.append(name)
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        for name in moved:  # put carried-over state back before cleaning up
            if target.is_dir() and (tmp / name).exists():
                os.replace(tmp / name, target / name)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def save_artifact(
    path: str | Path,
    *,
    kind: str,
    tensors: dict[str, torch.Tensor],
    base_model: str | None,
    hidden_size: int | None,
    config: dict[str, Any] | None = None,
    command: str | None = None,
    data: str | None = None,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    description: str = "",
    half: bool = True,
) -> Path:
    """Write an artifact directory atomically and return its path.

    Args:
        path: target directory (replaced if it exists).
        kind: what this is, e.g. ``"recontrol.value_network"``; checked on load.
        tensors: name -> tensor; floating tensors are stored as fp16 when ``half``.
        base_model: id of the LM the artifact was trained for (``None`` if model-independent).
        hidden_size: that LM's hidden size (or the encoder's embedding size for encoder-side artifacts).
        config: the method config (a dict; dataclasses are converted by the caller with ``asdict``).
        command: the command that trained it (default: the running command line).
        data: a description of the training data.
        metrics: figures to show on the card (accuracy, loss, ...).
        extra: anything else worth keeping (kept in config.json, shown on the card).
        description: a paragraph for the card.
        half: store floating tensors as fp16.
    """
    from safetensors.torch import save_file

    meta = ArtifactMeta(
        kind=kind,
        base_model=base_model,
        hidden_size=hidden_size,
        config=dict(config or {}),
        command=command if command is not None else current_command(),
        data=data,
        metrics=dict(metrics or {}),
        extra=dict(extra or {}),
        created=_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    prepared = {}
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        if half and t.is_floating_point():
            t = t.half()
        prepared[name] = t

    def fill(tmp: Path) -> None:
        save_file(
            prepared, str(tmp / WEIGHTS_NAME), metadata={"kind": kind, "format_version": str(FORMAT_VERSION)}
        )
        (tmp / CONFIG_NAME).write_text(meta.to_json() + "\n")
        (tmp / CARD_NAME).write_text(render_card(meta, prepared, description))

    out = atomic_write_dir(Path(path), fill, keep=("checkpoint",))
    log.info("saved %s artifact to %s", kind, out)
    return out


def render_card(meta: ArtifactMeta, tensors: dict[str, Any], description: str = "") -> str:
    """A markdown card: what it is, for which model, how it was made, what it scores."""
    n_params = sum(int(t.numel()) for t in tensors.values())
    lines = [f"# {meta.kind}", ""]
    if description:
        lines += [description.strip(), ""]
    lines += [
        f"- base model: `{meta.base_model}` (hidden size {meta.hidden_size})",
        f"- parameters: {n_params:,} in {len(tensors)} tensors",
        f"- format version: {meta.format_version}, lmcontrol {meta.lmcontrol_version}, created {meta.created}",
    ]
    if meta.data:
        lines.append(f"- data: {meta.data}")
    if meta.command:
        lines += ["", "## Reproduce", "", "```", meta.command, "```"]
    if meta.metrics:
        lines += ["", "## Metrics", "", "| metric | value |", "| --- | --- |"]
        for k, v in meta.metrics.items():
            lines.append(f"| {k} | {_fmt(v)} |")
    if meta.config:
        lines += [
            "",
            "## Config",
            "",
            "```json",
            json.dumps(meta.config, indent=2, default=_json_default),
            "```",
        ]
    if meta.extra:
        lines += ["", "## Notes", ""] + [f"- {k}: {_fmt(v)}" for k, v in meta.extra.items()]
    return "\n".join(lines) + "\n"


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def read_meta(path: str | Path) -> ArtifactMeta:
    """Read and validate ``config.json`` only (cheap; no tensors)."""
    path = Path(path)
    cfg = path / CONFIG_NAME
    if not path.is_dir():
        raise ArtifactError(f"artifact not found: {path} is not a directory")
    if not cfg.is_file():
        raise ArtifactError(f"artifact {path} is corrupt: {CONFIG_NAME} is missing")
    try:
        raw = json.loads(cfg.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ArtifactError(f"artifact {path} is corrupt: {CONFIG_NAME} is not valid JSON ({e})") from None
    if not isinstance(raw, dict) or "kind" not in raw:
        raise ArtifactError(f"artifact {path} is corrupt: {CONFIG_NAME} has no 'kind'")
    known = {f.name for f in dataclasses.fields(ArtifactMeta)}
    unknown = set(raw) - known
    if unknown:  # newer writer: keep going, as PEFT does, but say so
        log.warning("artifact %s: ignoring unknown config keys %s", path, sorted(unknown))
    meta = ArtifactMeta(**{k: v for k, v in raw.items() if k in known})
    if int(meta.format_version) > FORMAT_VERSION:
        raise ArtifactError(
            f"artifact {path} has format version {meta.format_version}; this lmcontrol reads <= {FORMAT_VERSION}"
        )
    return meta


def check_compatible(
    meta: ArtifactMeta, path: str | Path, model_name: str | None, hidden_size: int | None
) -> None:
    """Refuse to use an artifact with a model it was not trained for."""
    diffs = []
    if meta.base_model is not None and model_name is not None and meta.base_model != model_name:
        diffs.append(f"base model '{meta.base_model}' != '{model_name}'")
    if meta.hidden_size is not None and hidden_size is not None and int(meta.hidden_size) != int(hidden_size):
        diffs.append(f"hidden size {meta.hidden_size} != {hidden_size}")
    if diffs:
        raise ArtifactError(
            f"artifact {path} ({meta.kind}) was trained for '{meta.base_model}' (hidden size {meta.hidden_size}) "
            f"and cannot be used with '{model_name}' (hidden size {hidden_size}): " + "; ".join(diffs)
        )


def load_artifact(
    path: str | Path,
    *,
    kind: str | tuple[str, ...] | None = None,
    model_name: str | None = None,
    hidden_size: int | None = None,
) -> tuple[ArtifactMeta, dict[str, torch.Tensor]]:
    """Load an artifact's metadata and tensors (as float32), checking kind and model compatibility."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    meta = read_meta(path)
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds is not None and meta.kind not in kinds:
        raise ArtifactError(
            f"artifact {path} is a '{meta.kind}', expected {' or '.join(repr(k) for k in kinds)}"
        )
    check_compatible(meta, path, model_name, hidden_size)
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        raise ArtifactError(f"artifact {path} is corrupt: {WEIGHTS_NAME} is missing")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise ArtifactError(f"artifact {path} is corrupt: cannot read {WEIGHTS_NAME} ({e})") from None
    tensors = {k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()}
    return meta, tensors


C = TypeVar("C")
M = TypeVar("M", bound="PretrainedMixin")


class PretrainedMixin:
    """Gives an ``nn.Module`` with a dataclass ``self.config`` the ``save_pretrained``/``from_pretrained`` pair.

    Subclasses set ``artifact_kind`` and ``config_class`` and are constructed as ``cls(config)``. Model
    provenance (``base_model``, ``hidden_size``) is stored on the instance so a reloaded module can be checked.
    """

    artifact_kind: ClassVar[str]
    config_class: ClassVar[type]
    base_model: str | None = None
    base_hidden_size: int | None = None
    meta: ArtifactMeta | None = None

    def save_pretrained(
        self,
        path: str | Path,
        *,
        base_model: str | None = None,
        hidden_size: int | None = None,
        command: str | None = None,
        data: str | None = None,
        metrics: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        description: str = "",
        half: bool = True,
    ) -> Path:
        return save_artifact(
            path,
            kind=self.artifact_kind,
            tensors=self.state_dict(),  # type: ignore[attr-defined]
            base_model=base_model if base_model is not None else self.base_model,
            hidden_size=hidden_size if hidden_size is not None else self.base_hidden_size,
            config=dataclasses.asdict(self.config),  # type: ignore[attr-defined]
            command=command,
            data=data,
            metrics=metrics,
            extra=extra,
            description=description or (self.__doc__ or "").strip().split("\n")[0],
            half=half,
        )

    @classmethod
    def from_pretrained(
        cls: type[M], path: str | Path, *, model_name: str | None = None, hidden_size: int | None = None
    ) -> M:
        meta, tensors = load_artifact(
            path, kind=cls.artifact_kind, model_name=model_name, hidden_size=hidden_size
        )
        fields = {f.name for f in dataclasses.fields(cls.config_class)}
        unknown = set(meta.config) - fields
        if unknown:
            log.warning("artifact %s: ignoring unknown config keys %s", path, sorted(unknown))
        try:
            config = cls.config_class(**{k: v for k, v in meta.config.items() if k in fields})
            module = cls(config)  # type: ignore[call-arg]
            module.load_state_dict(tensors)  # type: ignore[attr-defined]
        except (TypeError, ValueError, RuntimeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ArtifactError(f"artifact {path} is corrupt or incompatible: {first}") from None
        module.base_model = meta.base_model
        module.base_hidden_size = meta.hidden_size
        module.meta = meta
        module.eval()  # type: ignore[attr-defined]
        return module
