"""Atomic writes, output-path checks and sweeps of temporaries left by killed writers.

Every file lmcontrol writes goes through here: a temporary sibling named ``.NAME.PID.xxxx.tmp`` is written,
fsync'd and renamed over the target, then the directory is fsync'd, so a crash leaves the old file or the new
one, never half of one, and any error removes the temporary. The PID in the name lets a later run tell a
killed writer's leftovers (``sweep_stale_temps``) from a live one's. ``check_output_path`` lets a command refuse
an unwritable output before it loads anything. ``lmcontrol.artifacts`` re-exports all of these.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from lmcontrol import LMControlError

log = logging.getLogger(__name__)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if isinstance(obj, tuple | set):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


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


def fsync_file(f: Any) -> None:
    """Flush an open file and fsync it, so appended rows survive a crash (the bench runner's generations)."""
    f.flush()
    os.fsync(f.fileno())


def current_umask() -> int:
    """The process umask, read without changing it (Linux ``/proc``); elsewhere set-and-restore, which is racy
    between threads only for that instant."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o077)  # the strictest value while we look, so a racing writer errs on the private side
    os.umask(mask)
    return mask


def plain_mode(path: str | Path, *, directory: bool = False, umask: int | None = None) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would (0666/0777 minus the umask). mkstemp, mkdtemp and
    safetensors create 0600/0700, which a rename would carry into place, leaving an artifact private to its writer.
    Best effort: a file system that refuses chmod (some FUSE/CIFS mounts) keeps what it has."""
    mask = current_umask() if umask is None else umask
    try:
        os.chmod(path, (0o777 if directory else 0o666) & ~mask)
    except OSError:
        pass


def normalize_modes(root: Path) -> None:
    """``plain_mode`` for ``root`` and everything below it (symlinks untouched; the umask read once)."""
    mask = current_umask()
    plain_mode(root, directory=True, umask=mask)
    for p in root.rglob("*"):
        if not p.is_symlink():
            plain_mode(p, directory=p.is_dir(), umask=mask)


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
        plain_mode(tmp)  # mkstemp's 0600 would survive the rename
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


def atomic_save_safetensors(tensors: dict[str, Any], path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """``safetensors.torch.save_file``, but atomic and with a plain write's permissions (see
    ``atomic_write_bytes``): a checkpoint or cache interrupted mid-write is never left half-written."""
    from safetensors.torch import save

    return atomic_write_bytes(path, save(tensors, metadata=metadata))


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
        normalize_modes(tmp)
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
