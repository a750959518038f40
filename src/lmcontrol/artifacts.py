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
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from lmcontrol import LMControlError, __version__

if TYPE_CHECKING:  # torch is imported lazily so the CLI starts fast
    import torch

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
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


# ---------------------------------------------------------------------------------------------------------
# atomic writes and output checks


def _fsync_dir(directory: Path) -> None:
    """Make a rename inside ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            with open(p, "rb") as f:
                os.fsync(f.fileno())


def temp_name(target: Path) -> str:
    """The prefix of a temporary sibling of ``target``: ``.NAME.PID.`` (the PID lets a sweep see it is stale)."""
    return f".{target.name}.{os.getpid()}."


_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[^.]*\.tmp$")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but is not ours
        return True
    return True


def sweep_stale_temps(directory: Path, name: str | None = None, max_age_seconds: float = 24 * 3600) -> int:
    """Delete temporary siblings (``.NAME.PID.xxxx.tmp``) left by killed writers; returns how many went.

    A temp is stale when its process is gone or it is older than ``max_age_seconds``.
    """
    removed = 0
    if not directory.is_dir():
        return 0
    for p in directory.iterdir():
        m = _TEMP_RE.match(p.name)
        legacy = m is None and p.name.startswith(f".{name or ''}") and p.name.endswith(".tmp")  # no PID
        if not (m is not None or legacy) or (m is not None and name is not None and m["name"] != name):
            continue
        try:
            age = time.time() - p.lstat().st_mtime
        except OSError:
            continue
        if m is None:
            if age < max_age_seconds:
                continue
        elif int(m["pid"]) == os.getpid() or (_pid_alive(int(m["pid"])) and age < max_age_seconds):
            continue
        log.warning("removing stale temporary %s", p)
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed += 1
    return removed


def _write_error(path: Path, e: OSError) -> LMControlError:
    return LMControlError(f"cannot write {path}: {e.strerror or type(e).__name__}")


def atomic_write_bytes(path: str | Path, data: bytes, *, fsync: bool = True) -> Path:
    """Write ``path`` all-or-nothing: a temporary sibling, fsync'd, renamed over ``path``; nothing is left
    behind on any error. An ``OSError`` (directory in the way, no space, read-only) becomes one LMControlError."""
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise IsADirectoryError(21, "is a directory")
        fd, tmp = tempfile.mkstemp(prefix=temp_name(path), suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        if fsync:
            _fsync_dir(path.parent)
    except OSError as e:
        raise _write_error(path, e) from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | Path, text: str, *, fsync: bool = True) -> Path:
    """``Path.write_text``, but atomic (see ``atomic_write_bytes``); UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


def atomic_write_json(path: str | Path, obj: Any, *, indent: int | None = 2, fsync: bool = True) -> Path:
    """``obj`` as JSON (paths, tuples and numpy/torch scalars converted), written atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, default=_json_default) + "\n", fsync=fsync)


def atomic_write_jsonl(path: str | Path, rows: Any, *, fsync: bool = True) -> Path:
    """One JSON object per line, written atomically."""
    text = "".join(json.dumps(r, ensure_ascii=False, default=_json_default) + "\n" for r in rows)
    return atomic_write_text(path, text, fsync=fsync)


def check_output_path(path: str | Path, *, flag: str = "--output", directory: bool = False) -> Path:
    """Refuse an output path that cannot be written, before any work is done (so nothing is wasted or left).

    ``directory=False``: ``path`` will be a file, so it must not be a directory. ``directory=True``: it must be
    a directory or not exist yet. Either way the nearest existing ancestor must be a writable directory
    (tested by creating and removing a probe file, which also catches read-only file systems and root).
    """
    path = Path(path)
    if directory and path.exists() and not path.is_dir():
        raise LMControlError(f"{flag} {path} is a file; give a directory")
    if not directory and path.is_dir():
        raise LMControlError(f"{flag} {path} is a directory; give a file path")
    ancestor = path if directory else path.parent
    ancestor = ancestor if str(ancestor) else Path(".")
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise LMControlError(f"{flag} {path}: {ancestor} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".lmcontrol-write-probe.", dir=ancestor)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise LMControlError(f"{flag} {path}: cannot write in {ancestor} ({e.strerror or type(e).__name__})") from None
    return path


def atomic_write_dir(target: Path, fill: Any, keep: tuple[str, ...] = ()) -> Path:
    """Create ``target`` atomically: ``fill(tmp_dir)`` writes the content, then the directory is swapped in.

    An existing ``target`` is replaced only after the new content is complete (and fsync'd). Sub-directories
    named in ``keep`` (a trainer's ``checkpoint/``) are carried over from the old ``target``, so saving the final
    artifact does not throw away the state a later ``--resume`` needs. Temporaries left by killed writers are
    swept first.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise LMControlError(f"cannot write {target}: it is a file, not a directory")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale_temps(target.parent, target.name)
        tmp = Path(tempfile.mkdtemp(prefix=temp_name(target), suffix=".tmp", dir=target.parent))
    except OSError as e:
        raise _write_error(target, e) from None
    moved: list[str] = []
    try:
        fill(tmp)
        _fsync_tree(tmp)
        for name in keep:
            if (target / name).is_dir() and not (tmp / name).exists():
                os.replace(target / name, tmp / name)
                moved.append(name)
        if target.exists():
            old = target.with_name(f".{target.name}.{os.getpid()}.old.tmp")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException as e:
        for name in moved:  # put carried-over state back before cleaning up
            if target.is_dir() and (tmp / name).exists():
                os.replace(tmp / name, target / name)
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise _write_error(target, e) from None
        raise
    return target


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


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


class ExtraSchema(BaseModel):
    """The ``extra`` keys that loaders read back, typed; other keys are kept as they are."""

    model_config = ConfigDict(extra="allow")

    site: str | None = None
    step_size: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    steps: int | None = Field(default=None, ge=1)
    scale: float | None = Field(default=None, allow_inf_nan=False)
    prompt_name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")  # names a packaged file
    vocab: list[str] | None = None


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
    weights_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


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
