"""One save/load contract for every trained control (value nets, probes, prefixes, diffusion nets, ...).

An artifact is a directory::

    config.json        kind, format version, base model id + hidden size, method config, command, data, metrics
    model.safetensors  the tensors (floating point stored as fp16 by default to keep commits small)
    README.md          a human-readable card generated from config.json

Writes are atomic: everything goes to a temporary sibling directory that is renamed into place, so a killed
run never leaves a half artifact. Loading checks the kind and, when the caller names the model it will be used
with, the base model id and hidden size, and refuses a mismatch with a message naming both. Nothing is ever
unpickled: tensors come from safetensors, metadata from JSON.

Artifacts are untrusted input (they are downloaded and shared), so loading treats them as safetensors, pip and
the HF hub treat files: ``config.json`` is validated against one pydantic schema (``ArtifactSchema``), the
weights' sha256 recorded at save time is verified, every tensor must be floating point and finite, and an
``encoder`` named by a config must be a known encoder name or a path inside the artifact
(``check_config_encoder``). Any failure is one line: ``corrupt artifact: <path>: <reason>``.

This module also holds the atomic single-file writers every command uses (``atomic_write_text``,
``atomic_write_json``) and ``check_output_path``, which commands call before loading anything.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import os
import re
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints, ValidationError

from lmcontrol import LMControlError, __version__
from lmcontrol.atomic import _json_default

# Re-exported (``X as X``): commands, benches and trainers import the writers from lmcontrol.artifacts.
from lmcontrol.atomic import atomic_write_bytes as atomic_write_bytes
from lmcontrol.atomic import atomic_write_dir as atomic_write_dir
from lmcontrol.atomic import atomic_write_json as atomic_write_json
from lmcontrol.atomic import atomic_write_jsonl as atomic_write_jsonl
from lmcontrol.atomic import atomic_write_text as atomic_write_text
from lmcontrol.atomic import check_output_path as check_output_path
from lmcontrol.atomic import fsync_file as fsync_file
from lmcontrol.atomic import sha256_file as sha256_file
from lmcontrol.atomic import sweep_stale_temps as sweep_stale_temps
from lmcontrol.atomic import temp_name as temp_name

if TYPE_CHECKING:  # torch is imported lazily so the CLI starts fast
    import torch

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
RESERVED_NAMES = frozenset({"model.safetensors", "config.json", "README.md", "checkpoint"})
FILE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")  # a plain file name: no path, no hidden file
MAX_CONFIG_BYTES = 16 * 1024 * 1024  # a config is metadata: the largest committed one is 16 kB


class ArtifactError(LMControlError):
    """An artifact is missing, corrupt, of the wrong kind, or made for another model."""


def corrupt(path: str | Path, reason: str) -> ArtifactError:
    """The one-line error for a damaged or tampered artifact."""
    return ArtifactError(f"corrupt artifact: {path}: {reason}")


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
    weights_sha256: str | None = None  # of model.safetensors; verified on load (absent in pre-checksum artifacts)
    files: dict[str, str] = dataclasses.field(default_factory=dict)  # extra file name -> sha256, beside the weights

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=False, default=_json_default)


def current_command() -> str:
    """The command line that is running, as a user would type it (used as the artifact's provenance)."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).name in {"lmcontrol", "__main__.py", "main.py"}:
        argv[0] = "lmcontrol"
    return shlex.join(argv)


def check_tensors(tensors: dict[str, Any], where: str | Path, *, allow_non_float: bool = False) -> None:
    """Refuse non-floating-point or non-finite tensors, naming the first bad one (``corrupt artifact: ...``)."""
    import torch

    for name, t in tensors.items():
        if not t.is_floating_point():
            if allow_non_float:
                continue
            raise corrupt(where, f"tensor '{name}' is {str(t.dtype).removeprefix('torch.')}, not floating point")
        if t.numel() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise corrupt(where, f"tensor '{name}' has {bad} non-finite values (NaN or inf)")


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
    files: dict[str, str] | None = None,
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
        files: extra text files written beside the weights (name -> content, e.g. a vocabulary as
            ``vocab.json``); their sha256 goes into ``config.json`` and ``read_artifact_file`` checks it.
    """
    from safetensors.torch import save_file

    files = dict(files or {})
    for name in files:
        if not FILE_NAME_RE.match(name) or name in RESERVED_NAMES:
            raise ArtifactError(f"bad extra file name {name!r} for {path} (a plain file name other than "
                                f"{', '.join(sorted(RESERVED_NAMES))})")  # fmt: skip

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
    import torch

    prepared = {}
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
            raise ArtifactError(f"refusing to save {path}: tensor '{name}' has non-finite values (NaN or inf)")
        if half and t.is_floating_point():
            # fp16 tops out at 65504: a tensor with larger values stays float32 rather than turning into inf
            fits = not t.numel() or float(t.abs().max()) < torch.finfo(torch.float16).max
            t = t.half() if fits else t.float()
        prepared[name] = t

    def fill(tmp: Path) -> None:
        save_file(
            prepared, str(tmp / WEIGHTS_NAME), metadata={"kind": kind, "format_version": str(FORMAT_VERSION)}
        )
        meta.weights_sha256 = sha256_file(tmp / WEIGHTS_NAME)
        for name, text in files.items():
            (tmp / name).write_text(text, encoding="utf-8")
            meta.files[name] = sha256_file(tmp / name)
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
    if meta.files:
        lines.append("- files beside the weights: " + ", ".join(f"`{name}`" for name in meta.files))
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


CARD_LIST_ITEMS = 24  # longer lists are cut on the card (config.json keeps them whole)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list | tuple) and len(v) > CARD_LIST_ITEMS:
        head = ", ".join(_fmt(x) for x in v[:8])
        return f"[{head}, …] ({len(v)} items; all in {CONFIG_NAME})"
    return str(v)


class ExtraSchema(BaseModel):
    """The ``extra`` keys that loaders read back, typed; other keys are kept as they are."""

    model_config = ConfigDict(extra="allow")

    site: str | None = None
    step_size: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    steps: int | None = Field(default=None, ge=1)
    scale: float | None = Field(default=None, allow_inf_nan=False)
    prompt_name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")  # names a packaged file
    vocab: list[str] | None = None


Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class ArtifactSchema(BaseModel):
    """``config.json`` as a loader may trust it. Strict where a wrong type would crash a loader later."""

    model_config = ConfigDict(extra="ignore")

    kind: str = Field(min_length=1)
    base_model: str | None
    hidden_size: StrictInt | None = Field(ge=1)
    config: dict[str, Any] = {}
    command: str | None = None
    data: str | None = None
    metrics: dict[str, Any] = {}
    extra: ExtraSchema = ExtraSchema()
    format_version: StrictInt = Field(default=FORMAT_VERSION, ge=1)
    lmcontrol_version: str = __version__
    created: str = ""
    weights_sha256: Sha256 | None = None
    files: dict[Annotated[str, StringConstraints(pattern=FILE_NAME_RE.pattern)], Sha256] = {}


def pydantic_reason(err: ValidationError) -> str:
    """The first error of a pydantic ValidationError as ``field.path: message`` (one line)."""
    first = err.errors()[0]
    loc = ".".join(str(x) for x in first.get("loc", ())) or "value"
    return f"{loc}: {first.get('msg', 'invalid')}"


def read_meta(path: str | Path) -> ArtifactMeta:
    """Read and validate ``config.json`` only (cheap; no tensors)."""
    path = Path(path)
    cfg = path / CONFIG_NAME
    if not path.is_dir():
        raise ArtifactError(f"artifact not found: {path} is not a directory")
    if not cfg.is_file():
        raise corrupt(path, f"{CONFIG_NAME} is missing")
    if cfg.stat().st_size > MAX_CONFIG_BYTES:
        raise corrupt(path, f"{CONFIG_NAME} is {cfg.stat().st_size:,} bytes (limit {MAX_CONFIG_BYTES:,})")
    try:
        raw = json.loads(cfg.read_text(encoding="utf-8"), parse_constant=_refuse_constant)
    except RecursionError:
        raise corrupt(path, f"{CONFIG_NAME} is nested too deeply") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:  # JSONDecodeError is a ValueError
        raise corrupt(path, f"{CONFIG_NAME} is not valid JSON ({_first_line(e)})") from None
    if not isinstance(raw, dict):
        raise corrupt(path, f"{CONFIG_NAME} is a JSON {type(raw).__name__}, not an object")
    known = {f.name for f in dataclasses.fields(ArtifactMeta)}
    unknown = set(raw) - known
    if unknown:  # newer writer: keep going, as PEFT does, but say so
        log.warning("artifact %s: ignoring unknown config keys %s", path, sorted(unknown))
    if isinstance(raw.get("format_version"), int) and raw["format_version"] > FORMAT_VERSION:
        raise ArtifactError(
            f"artifact {path} has format version {raw['format_version']}; this lmcontrol reads <= {FORMAT_VERSION}"
        )
    try:
        checked = ArtifactSchema.model_validate(raw)
    except ValidationError as e:
        raise corrupt(path, f"{CONFIG_NAME}: {pydantic_reason(e)}") from None
    values = checked.model_dump()
    values["extra"] = {k: v for k, v in raw.get("extra", {}).items()}  # as written (validated above)
    return ArtifactMeta(**{k: v for k, v in values.items() if k in known})


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:200] if lines else type(e).__name__


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
        raise corrupt(path, f"{WEIGHTS_NAME} is missing")
    if meta.weights_sha256 is not None and sha256_file(weights) != meta.weights_sha256:
        raise corrupt(path, f"{WEIGHTS_NAME} does not match the sha256 in {CONFIG_NAME} (changed or truncated)")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise corrupt(path, f"cannot read {WEIGHTS_NAME} ({_first_line(e)})") from None
    check_tensors(tensors, path)
    return meta, {k: v.float() for k, v in tensors.items()}


def read_artifact_file(path: str | Path, name: str, meta: ArtifactMeta | None = None) -> str | None:
    """The text of extra file ``name`` saved beside the weights (``save_artifact(files=...)``), its sha256
    checked against ``config.json``; None if the artifact has no such file."""
    path = Path(path)
    meta = meta if meta is not None else read_meta(path)
    if name not in meta.files:
        return None
    file = path / name
    if not file.is_file():
        raise corrupt(path, f"{name} is missing")
    if sha256_file(file) != meta.files[name]:
        raise corrupt(path, f"{name} does not match the sha256 in {CONFIG_NAME} (changed or truncated)")
    try:
        return file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise corrupt(path, f"cannot read {name} ({_first_line(e)})") from None


C = TypeVar("C")
M = TypeVar("M", bound="PretrainedMixin")

TRUSTED_ENCODERS_ENV = "LMCONTROL_TRUSTED_ENCODERS"


def check_config_encoder(encoder: str, artifact: Path) -> str:
    """The encoder a loaded config may name: a known encoder name, a path inside the artifact (returned
    absolute), or a name/path the user listed in ``$LMCONTROL_TRUSTED_ENCODERS`` (comma-separated).

    A downloaded artifact must not make lmcontrol load an arbitrary directory of the machine.
    """
    from lmcontrol.models import KNOWN_ENCODERS

    trusted = {e.strip() for e in os.environ.get(TRUSTED_ENCODERS_ENV, "").split(",") if e.strip()}
    if encoder in KNOWN_ENCODERS or encoder in trusted:
        return encoder
    root = artifact.resolve()
    inside = (artifact / encoder).resolve()
    relative = bool(encoder) and not Path(encoder).is_absolute()
    if relative and inside != root and inside.is_relative_to(root) and inside.is_dir():
        return str(inside)
    raise corrupt(
        artifact,
        f"its config names encoder '{encoder}', which is neither a known encoder ({', '.join(KNOWN_ENCODERS)}) "
        f"nor a directory inside the artifact; trust it with {TRUSTED_ENCODERS_ENV}={encoder}",
    )


def load_method_config(config_class: type[C], values: dict[str, Any], path: Path) -> C:
    """The method's config dataclass from ``config.json``'s ``config``, type-checked by pydantic (lax: JSON
    lists become tuples); unknown keys are ignored with a warning and an ``encoder`` is checked
    (``check_config_encoder``)."""
    from pydantic import TypeAdapter
    from pydantic.errors import PydanticSchemaGenerationError, PydanticUndefinedAnnotation

    path = Path(path)
    fields = {f.name for f in dataclasses.fields(config_class)}  # type: ignore[arg-type]
    unknown = set(values) - fields
    if unknown:
        log.warning("artifact %s: ignoring unknown config keys %s", path, sorted(unknown))
    known = {k: v for k, v in values.items() if k in fields}
    if "encoder" in known and isinstance(known["encoder"], str):
        known["encoder"] = check_config_encoder(known["encoder"], path)
    try:
        return TypeAdapter(config_class).validate_python(known)
    except ValidationError as e:
        raise corrupt(path, f"{CONFIG_NAME}: config.{pydantic_reason(e)}") from None
    except (PydanticSchemaGenerationError, PydanticUndefinedAnnotation):
        pass  # an annotation pydantic cannot read: fall back to the dataclass's own checks
    except LMControlError as e:  # the config's own __post_init__ checks
        raise corrupt(path, f"{CONFIG_NAME}: config: {e}") from None
    except (TypeError, ValueError) as e:
        raise corrupt(path, f"{CONFIG_NAME}: config: {_first_line(e)}") from None
    try:
        return config_class(**known)
    except (LMControlError, TypeError, ValueError) as e:
        raise corrupt(path, f"{CONFIG_NAME}: config: {_first_line(e)}") from None


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

    def save_pretrained(self, path: str | Path, **kwargs: Any) -> Path:
        """``save_artifact`` of this module: its kind, weights and config; ``base_model`` / ``hidden_size``
        default to the instance's provenance; every other keyword (``command``, ``data``, ``metrics``,
        ``extra``, ``files``, ``description``, ``half``) goes to ``save_artifact`` as it is."""
        if not kwargs.get("description"):
            kwargs["description"] = (self.__doc__ or "").strip().split("\n")[0]
        if kwargs.get("base_model") is None:
            kwargs["base_model"] = self.base_model
        if kwargs.get("hidden_size") is None:
            kwargs["hidden_size"] = self.base_hidden_size
        return save_artifact(
            path,
            kind=self.artifact_kind,
            tensors=self.state_dict(),  # type: ignore[attr-defined]
            config=dataclasses.asdict(self.config),  # type: ignore[attr-defined]
            **kwargs,
        )

    @classmethod
    def from_pretrained(
        cls: type[M], path: str | Path, *, model_name: str | None = None, hidden_size: int | None = None
    ) -> M:
        meta, tensors = load_artifact(
            path, kind=cls.artifact_kind, model_name=model_name, hidden_size=hidden_size
        )
        config = load_method_config(cls.config_class, meta.config, path)
        try:
            module = cls(config)  # type: ignore[call-arg]
            module.load_state_dict(tensors)  # type: ignore[attr-defined]
        except (TypeError, ValueError, RuntimeError) as e:
            raise corrupt(path, f"weights do not fit the config ({_first_line(e)})") from None
        module.base_model = meta.base_model
        module.base_hidden_size = meta.hidden_size
        module.meta = meta
        module.eval()  # type: ignore[attr-defined]
        return module
