"""Typer options generated from config dataclasses, so a trainer never re-types ``--seed``/``--steps``/``--lr``.

``config_options("train", TrainConfig, include=("steps", "lr", "seed"), defaults={"steps": 150})`` decorates a
typer command whose parameter ``train`` is a ``TrainConfig``: the command line gets one option per chosen field
(its type, its default, its doc as the ``--help`` text), and the command receives the built, validated
dataclass (a bad value is the config's own one-line ``LMControlError``). Decorators stack, one per config.

A field's help comes from, in order: ``dataclasses.field(metadata={"help": ...})``, the class docstring's
``Attributes:`` section (Google style), or the comment after the field on its line. ``check_resume`` is the
one ``--resume`` check every trainer runs before loading a model.

    @config_options("train", TrainConfig, include=("steps", "lr", "seed"), defaults={"steps": 150})
    def train_thing(out: Annotated[Path, typer.Option(help="...")], train: TrainConfig, resume: Resume = False):
        check_resume(out, resume)
        ...
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import re
import textwrap
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from lmcontrol import LMControlError

F = TypeVar("F", bound=Callable[..., Any])
SIMPLE_TYPES = (int, float, str, bool, Path)

Resume = Annotated[bool, typer.Option("--resume", help="Continue from the checkpoint in OUT/checkpoint.")]
Model = Annotated[str | None, typer.Option(help="Base LM (HF id or path; default: the embedded SmolLM2-135M).")]


def check_resume(out: Path, resume: bool, checkpoint: str = "checkpoint", hint: str = "") -> None:
    """``--resume`` without a checkpoint in ``out/checkpoint`` fails in one line, before any model loads."""
    if resume and not (Path(out) / checkpoint / "state.json").is_file():
        raise LMControlError(f"--resume: no checkpoint in {Path(out) / checkpoint}{hint}")


# ---------------------------------------------------------------------------------------------------------
# field docs


def _docstring_attributes(cls: type) -> dict[str, str]:
    """``Attributes:`` entries of a Google-style class docstring: ``name: text`` (continuation lines joined)."""
    doc = inspect.getdoc(cls) or ""
    m = re.search(r"^Attributes:\s*$(.*?)(?=^\S|\Z)", doc, flags=re.M | re.S)
    if not m:
        return {}
    out: dict[str, str] = {}
    current = None
    for line in textwrap.dedent(m.group(1)).splitlines():
        head = re.match(r"^([A-Za-z_][\w, ]*):\s*(.*)$", line)
        if head and not line.startswith((" ", "\t")):
            names = [n.strip() for n in head.group(1).split(",")]
            for n in names:
                out[n] = head.group(2).strip()
            current = names
        elif current and line.strip():
            for n in current:
                out[n] = f"{out[n]} {line.strip()}".strip()
    return out


def _field_comments(cls: type) -> dict[str, str]:
    """The trailing ``# comment`` of each annotated field line in the class source."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    lines = source.splitlines()
    out: dict[str, str] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            line = lines[node.lineno - 1]
            if "#" in line:
                out[node.target.id] = line.split("#", 1)[1].strip()
    return out


def field_help(cls: type) -> dict[str, str]:
    """Help text per field of dataclass ``cls`` (metadata > docstring ``Attributes:`` > trailing comment)."""
    docs = {**_field_comments(cls), **_docstring_attributes(cls)}
    for f in dataclasses.fields(cls):
        if "help" in f.metadata:
            docs[f.name] = str(f.metadata["help"])
    return {k: _sentence_case(v) for k, v in docs.items()}


def _sentence_case(text: str) -> str:
    """Capitalise the first word unless it is a symbol (``k``, ``m``) or code."""
    first = text.split(" ", 1)[0].rstrip(",.:;")
    return text if len(first) < 2 or not first.isalpha() else text[:1].upper() + text[1:]


# ---------------------------------------------------------------------------------------------------------
# the decorator


def _option_type(hint: Any, where: str) -> Any:
    """The hint typer will parse: a simple type or ``T | None``; anything else is a programming error."""
    if hint in SIMPLE_TYPES:
        return hint
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 2 and type(None) in args:
        inner = next(a for a in args if a is not type(None))
        if inner in SIMPLE_TYPES:
            return hint
    raise TypeError(f"{where}: type {hint!r} has no command-line form; exclude the field")


def config_options(
    param: str,
    cls: type,
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    defaults: Mapping[str, Any] | None = None,
    help: Mapping[str, str] | None = None,
    fixed: Mapping[str, Any] | None = None,
    rename: Mapping[str, str] | None = None,
) -> Callable[[F], F]:
    """Replace the command parameter ``param`` (a ``cls`` instance) by one typer option per field of ``cls``.

    Args:
        param: the decorated function's parameter that receives the built dataclass.
        cls: a dataclass; fields without a default are required options.
        include: fields to expose, in this order (default: all, minus ``exclude`` and ``fixed``).
        exclude: fields to leave at their dataclass default.
        defaults: per-field command-line defaults that differ from the dataclass's (e.g. ``steps`` of one method).
        help: per-field help overriding the field's own doc.
        fixed: fields set by the command, not the user (e.g. ``{"progress": True}``).
        rename: field -> option name where two configs of one command share a field name (``batch_size`` ->
            ``rollout_batch`` gives ``--rollout-batch``).
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"config_options needs a dataclass, got {cls!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    fixed = dict(fixed or {})
    names = list(include) if include is not None else [n for n in fields if n not in exclude and n not in fixed]
    rename = dict(rename or {})
    unknown = [n for n in [*names, *exclude, *(defaults or {}), *fixed, *rename] if n not in fields]
    if unknown:
        raise TypeError(f"{cls.__name__} has no field(s) {', '.join(unknown)}")
    docs = {**field_help(cls), **(help or {})}

    def decorate(fn: F) -> F:
        sig = inspect.signature(fn)
        fn_hints = typing.get_type_hints(fn, include_extras=True)
        if param not in sig.parameters:
            raise TypeError(f"{fn.__name__} has no parameter '{param}'")
        taken = set(sig.parameters) - {param}
        clash = [rename.get(n, n) for n in names if rename.get(n, n) in taken]
        if clash:
            raise TypeError(f"{fn.__name__}: option(s) {', '.join(clash)} of {cls.__name__} clash with its parameters")
        new_params, annotations = [], {}
        for name in names:
            f = fields[name]
            if defaults and name in defaults:
                default = defaults[name]
            elif f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = inspect.Parameter.empty
            hint = _option_type(hints[name], f"{cls.__name__}.{name}")
            annotation = Annotated[hint, typer.Option(help=docs.get(name, ""), show_default=True)]
            option = rename.get(name, name)
            new_params.append(
                inspect.Parameter(option, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
            )
            annotations[option] = annotation
        params = []
        for p in sig.parameters.values():
            if p.name == param:
                continue
            params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=fn_hints.get(p.name, p.annotation)))
        # typer reads options in signature order: the function's own first, then the config's
        new_sig = sig.replace(parameters=[*params, *new_params])

        @functools.wraps(fn)
        def wrapper(**kwargs: Any) -> Any:
            values = {n: kwargs.pop(rename.get(n, n)) for n in names}
            kwargs[param] = cls(**values, **fixed)
            return fn(**kwargs)

        wrapper.__signature__ = new_sig  # type: ignore[attr-defined]
        wrapper.__annotations__ = {
            **{p.name: p.annotation for p in params},
            **annotations,
            **({"return": fn_hints["return"]} if "return" in fn_hints else {}),
        }
        del wrapper.__wrapped__  # typer must see the new signature, not the original one
        return wrapper  # type: ignore[return-value]

    return decorate
