"""The registry: one mechanism for every table, entry-point plugins, a loud error on a duplicate name."""

from __future__ import annotations

import importlib.metadata
import sys
import textwrap

import pytest

from lmcontrol import LMControlError, registry
from lmcontrol.registry import Registry, lazy


def _ident(x):
    return x


def _other(x):
    return x


def test_duplicate_name_is_a_loud_error_naming_both():
    table = Registry("widget")
    table.register("w", _ident, "first")
    with pytest.raises(LMControlError, match=r"widget 'w' is registered twice: by .*test_registry.* and by"):
        table.register("w", _other, "second")
    assert table.get("w").factory is _ident  # the first registration stays


def test_same_factory_may_register_again():
    table = Registry("widget")
    first = table.register("w", _ident)
    assert table.register("w", _ident) is first
    assert table.register("l", lazy("json", "dumps")) == table.register("l", lazy("json", "dumps"))
    with pytest.raises(LMControlError, match="registered twice"):
        table.register("l", lazy("json", "loads"))
    # two closures share a qualified name but are different factories
    make = [(lambda: 1), (lambda: 2)]
    table.register("c", make[0])
    with pytest.raises(LMControlError):
        table.register("c", make[1])


def test_unknown_name_lists_the_known_ones():
    table = Registry("gadget")
    table.register("b", _ident)
    table.register("a", _ident)
    with pytest.raises(LMControlError, match=r"unknown gadget 'z' \(known: a, b\)"):
        table.get("z")


def test_lazy_factory_imports_on_call():
    f = lazy("json", "dumps")
    assert f([1]) == "[1]"
    assert f.resolve() is __import__("json").dumps


def test_builtin_tables_are_filled_by_discovery():
    assert {"prefix", "prefix-library", "compressed", "recontrol", "system", "best-of"} <= set(registry.controls())
    assert {"prefix", "recontrol", "base"} <= set(registry.suites())
    assert {"prefix", "recontrol", "reward", "probe"} <= set(registry.trainers())
    assert {"ppl", "dist", "reward", "bleu"} <= set(registry.METRICS.entries())
    assert {"hh", "harmless", "sentiment"} <= set(registry.REWARDS.entries())


@pytest.fixture
def fake_plugin(tmp_path, monkeypatch):
    """A separately 'installed' package: a module on sys.path named by a fake lmcontrol.plugins entry point."""
    (tmp_path / "lmc_fake_plugin.py").write_text(
        textwrap.dedent(
            """
            from lmcontrol.controls import Control
            from lmcontrol.registry import register_control, register_reward

            class Shout(Control):
                def system_prompt(self):
                    return "Answer in capital letters."

            def _shout(spec, lm):
                return Shout()

            register_control("shout", _shout, "a control from an installed package")
            register_reward("length", lambda: (lambda ps, rs: [float(len(r)) for r in rs]), "response length")
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = importlib.metadata.EntryPoint(name="fake", value="lmc_fake_plugin", group=registry.ENTRY_POINT_GROUP)
    real = importlib.metadata.entry_points

    def entry_points(**kwargs):
        if kwargs.get("group") == registry.ENTRY_POINT_GROUP:
            return importlib.metadata.EntryPoints([ep])
        return real(**kwargs)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    yield
    registry.CONTROLS.unregister("shout")
    registry.REWARDS.unregister("length")
    sys.modules.pop("lmc_fake_plugin", None)


def test_entry_point_plugin_adds_a_control_and_a_reward(fake_plugin, tiny):
    from lmcontrol.controls import build_control
    from lmcontrol.eval.reward import load_reward

    registry.discover(force=True)
    assert "shout" in registry.controls()
    assert registry.controls()["shout"].source == "lmc_fake_plugin"
    control = build_control("shout", tiny)
    assert control.system_prompt() == "Answer in capital letters."
    assert load_reward("length")(["p", "q"], ["ab", "abcd"]) == [2.0, 4.0]
    registry.discover(force=True)  # discovering again re-registers the same factories: no error


def test_entry_point_clashing_with_a_builtin_is_refused(tmp_path, monkeypatch):
    (tmp_path / "lmc_clash_plugin.py").write_text(
        "from lmcontrol.registry import register_control\n"
        "register_control('prefix', lambda spec, lm: None, 'a second prefix')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = importlib.metadata.EntryPoint(name="clash", value="lmc_clash_plugin", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **kw: importlib.metadata.EntryPoints([ep]))
    try:
        with pytest.raises(LMControlError, match="plugin 'clash'.*control kind 'prefix' is registered twice"):
            registry.discover(force=True)
    finally:
        sys.modules.pop("lmc_clash_plugin", None)


def test_broken_entry_point_is_one_line(monkeypatch):
    ep = importlib.metadata.EntryPoint(name="broken", value="lmc_no_such_module_xyz", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **kw: importlib.metadata.EntryPoints([ep]))
    with pytest.raises(LMControlError, match="plugin 'broken' \\(lmc_no_such_module_xyz\\) failed to load"):
        registry.discover(force=True)


# ---------------------------------------------------------------------------------------------------------
# the `--control` spec grammar: kind[:item,item,...], an item is key=value or a positional value


def test_control_spec_grammar():
    from lmcontrol.controls import parse_control_spec

    s = parse_control_spec("  cd-prefix:artifacts/v , topk=5,beta = 10 ,guide=a,guide=b  ")
    assert s.kind == "cd-prefix" and s.args == ("artifacts/v",)
    assert s.options == (("topk", "5"), ("beta", "10"), ("guide", "a"), ("guide", "b"))
    assert s.values("guide") == ["a", "b"] and s.str("guide") == "b"  # keys repeat; the last one wins for str
    assert s.int("topk", 1) == 5 and s.float("beta", 0.0) == 10.0 and s.float("missing", 0.5) == 0.5
    assert s.text == "cd-prefix:artifacts/v , topk=5,beta = 10 ,guide=a,guide=b"
    assert parse_control_spec("system").args == () and parse_control_spec("system:").args == ()
    assert parse_control_spec("best-of:4,reward=hh").args == ("4",)
    assert parse_control_spec("x:url=a=b").options == (("url", "a=b"),)  # split at the first '='
    assert parse_control_spec("x:a,,b").args == ("a", "b")  # empty items are skipped


@pytest.mark.parametrize(
    ("text", "call", "message"),
    [
        ("k:beta=abc", lambda s: s.float("beta", 1.0), "beta='abc' is not a number"),
        ("k:beta=nan", lambda s: s.float("beta", 1.0), "beta must be finite"),
        ("k:beta=-1", lambda s: s.float("beta", 1.0, positive=True), "beta must be > 0"),
        ("k:beta=0.1", lambda s: s.float("beta", 1.0, min_value=0.5), "beta must be >= 0.5"),
        ("k:n=1.5", lambda s: s.int("n", 1), "n='1.5' is not an integer"),
        ("k:n=0", lambda s: s.int("n", 1, min_value=1), "n must be >= 1"),
        ("k:zz=1,topk=2", lambda s: s.check_keys(["topk"]), r"unknown option\(s\) zz \(allowed: topk\)"),
    ],
)
def test_control_spec_values_are_checked_in_one_line(text, call, message):
    from lmcontrol.controls import parse_control_spec

    with pytest.raises(LMControlError, match=message) as e:
        call(parse_control_spec(text))
    assert "\n" not in str(e.value) and str(e.value).startswith(f"--control {text}")


def test_control_spec_errors(tiny):
    from lmcontrol.controls import build_control, parse_control_spec

    with pytest.raises(LMControlError, match="empty --control spec"):
        parse_control_spec("   ")
    with pytest.raises(LMControlError, match=r"unknown control kind 'nope' \(known: .*prefix"):
        build_control("nope:x", tiny)
    with pytest.raises(LMControlError, match="give one artifact directory"):
        build_control("prefix", tiny)
    with pytest.raises(LMControlError, match="unknown option"):
        build_control("prefix:dir,scale=2", tiny)


def test_every_benchmark_the_docs_quote_is_a_registered_suite(cli):
    """`lmcontrol bench NAME` in the README or docs must name a suite that `lmcontrol bench --help` lists."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    quoted = set()
    for path in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        quoted |= set(re.findall(r"lmcontrol bench ([a-z0-9][a-z0-9-]*)", path.read_text(encoding="utf-8")))
    assert quoted, "the docs quote no benchmark"
    code, out, _ = cli("bench", "--help")
    listed = set(re.findall(r"^\s*([a-z0-9][a-z0-9-]*) — ", out, flags=re.M))
    assert code == 0 and not quoted - listed, f"quoted but not listed: {sorted(quoted - listed)}"
