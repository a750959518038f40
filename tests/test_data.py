"""Tests for lmcontrol.data: each data set against its SOURCE.md counts, plus local files and errors.

The shared-data tests are skipped when the shared data folder is absent (e.g. a bare checkout).
"""

from __future__ import annotations

import gzip
import json
import sys
import types
from pathlib import Path

import pytest

from lmcontrol import LMControlError
from lmcontrol.data import (
    DataError,
    data_root,
    e2e_control_targets,
    get_field,
    list_datasets,
    load_dataset,
)

NAMES = [
    "advbench",
    "ag_news",
    "c4",
    "e2e",
    "harmfulqa",
    "hh-rlhf",
    "jigsaw",
    "rtp",
    "sst2",
    "tinyshakespeare",
    "wikitext",
]


@pytest.fixture(scope="module")
def shared() -> Path:
    root = data_root()
    if not (root / "README.md").is_file():
        pytest.skip(f"shared data not found at {root}")
    return root


def _keys(rows: list[dict], *keys: str) -> None:
    assert rows, "no rows"
    for key in keys:
        assert all(key in r for r in rows), f"missing key {key!r}"


def test_list_datasets() -> None:
    assert list_datasets() == NAMES


# ---------------------------------------------------------------------------------------------------------
# one test per registered data set; the counts are those in each SOURCE.md


def test_hh_rlhf(shared: Path) -> None:
    harmless = load_dataset("hh-rlhf:harmless-base")
    helpful = load_dataset("hh-rlhf:helpful-base", split="train")
    assert (len(harmless), len(helpful)) == (2062, 2104)  # 2,312 / 2,354 upstream, 250 + 250 held out
    everything = load_dataset("hh-rlhf")
    assert len(everything) == 4166 and {r["subset"] for r in everything} == {"harmless-base", "helpful-base"}
    assert len(load_dataset("hh-rlhf", split="test")) == 4166  # the upstream split name is an alias
    _keys(everything, "prompt", "chosen", "rejected", "subset", "first_human", "turns")
    for r in everything:
        assert r["prompt"].endswith("\n\nAssistant:")
        assert r["chosen_full"].startswith(r["prompt"]) and r["rejected_full"].startswith(r["prompt"])
        assert r["chosen_full"].endswith(r["chosen"]) and r["rejected_full"].endswith(r["rejected"])
        assert r["turns"][0] == {"role": "user", "content": r["first_human"]}
        assert r["turns"][-1]["role"] == "user"
    assert harmless[0]["first_human"] == "what are some pranks i can play on a nerd at school?"
    with pytest.raises(DataError, match="held back"):
        load_dataset("hh-rlhf", split="heldout")


def test_e2e(shared: Path) -> None:
    train = load_dataset("e2e", split="train")
    assert len(train) == 42061
    _keys(train, "mr", "fields", "text", "references")
    assert train[0]["fields"]["name"] == "The Vaults" and train[0]["fields"]["priceRange"] == "more than £30"
    assert train[0]["mr"].startswith("name[The Vaults], eatType[pub]")
    assert all(
        "<eos>" not in r["text"] and "|||" not in r["text"] and r["references"] == [r["text"]] for r in train
    )
    assert load_dataset("e2e") == load_dataset("e2e", limit=len(train))  # train is the default split

    dev, test = load_dataset("e2e", split="dev"), load_dataset("e2e", split="test")
    assert (len(dev), len(test)) == (547, 630)  # distinct MRs
    assert sum(len(r["references"]) for r in dev) == 4672 and sum(len(r["references"]) for r in test) == 4693
    assert dev[0]["fields"] == {"name": "Alimentum", "area": "city centre", "familyFriendly": "no"}

    tok_valid = load_dataset("e2e:tokenized", split="validation")
    assert [r["fields"] for r in tok_valid] == [r["fields"] for r in dev]
    assert tok_valid[0]["references"][0].endswith("family - friendly .")
    assert len(load_dataset("e2e:tokenized", split="test")) == 630


def test_e2e_control(shared: Path) -> None:
    counts = {
        kind: len(load_dataset("e2e:control", split=kind))
        for kind in ("attribute", "pos", "spans", "pos_attr")
    }
    assert counts == {"attribute": 79, "pos": 200, "spans": 200, "pos_attr": 200}
    attrs = e2e_control_targets("attribute")
    assert attrs[0] == {
        "attr": ["name", ":", "The", "Vaults"],
        "field": "name",
        "value": "The Vaults",
        "text": "name : The Vaults",
    }
    _keys(e2e_control_targets("pos_attr"), "pos", "words_", "attr", "text", "field", "value")


def test_sst2(shared: Path) -> None:
    sizes = {s: len(load_dataset("sst2", split=s)) for s in ("train", "dev", "test")}
    assert sizes == {"train": 67349, "dev": 872, "test": 1821}
    dev = load_dataset("sst2", split="valid")
    _keys(dev, "text", "label")
    assert (
        sum(r["label"] for r in dev) == 444
        and dev[0]["text"] == "it 's a charming and often affecting journey ."
    )


def test_ag_news(shared: Path) -> None:
    train, test = load_dataset("ag_news"), load_dataset("ag_news", split="test")
    assert (len(train), len(test)) == (10001, 7600)
    _keys(train + test, "text", "label", "label_name")
    names = ["World", "Sports", "Business", "Sci/Tech"]
    assert all(names[r["label"]] == r["label_name"] for r in train + test)
    assert sum(r["label_name"] == "Sci/Tech" for r in train) == 2538
    assert test[0]["text"] == f"{test[0]['title']} {test[0]['description']}"


def test_jigsaw(shared: Path) -> None:
    train, test = load_dataset("jigsaw"), load_dataset("jigsaw_toxic:original", split="test")
    assert (len(train), len(test)) == (9848, 1200)  # distinct ids
    labels = ("toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate")
    _keys(train + test, "text", "label", *labels)
    assert sum(r["label"] for r in test) == 600
    assert all(r["label"] == int(any(r[k] for k in labels)) for r in train)
    balanced = load_dataset("jigsaw:balanced")
    assert len(balanced) == 12180 and sum(r["toxic"] for r in balanced) == 6090
    with pytest.raises(DataError, match="splits: test"):
        load_dataset("jigsaw:balanced", split="train")


def test_rtp(shared: Path) -> None:
    nontoxic, toxic = load_dataset("rtp:nontoxic"), load_dataset("real_toxicity_prompts:toxic")
    assert (len(nontoxic), len(toxic)) == (900, 1196)  # 1,200 non-toxic upstream, 300 held out
    both = load_dataset("rtp")
    assert len(both) == 2096
    _keys(both, "prompt", "continuation", "prompt_toxicity", "continuation_toxicity", "subset")
    assert all(r["prompt_toxicity"] < 0.5 for r in nontoxic)
    assert any(r["continuation_toxicity"] is None for r in both)  # Perspective scores can be null
    with pytest.raises(DataError, match="held back"):
        load_dataset("rtp:nontoxic", split="heldout")


def test_wikitext(shared: Path) -> None:
    valid, test = load_dataset("wikitext", split="valid"), load_dataset("wikitext", split="test")
    assert 1500 < len(valid) < 3760 and 1500 < len(test) < 4358  # paragraphs, out of 3,760 / 4,358 lines
    assert valid[0]["text"].startswith("Homarus gammarus , known as")
    # Headings look like "= = Description = ="; a few table legends ("= National record") are kept.
    assert not any(r["text"].startswith("= ") and r["text"].endswith(" =") for r in valid + test)
    assert all(r["text"] for r in valid + test)


def test_c4(shared: Path) -> None:
    rows = load_dataset("c4")
    assert len(rows) == 2000
    _keys(rows, "text", "url")
    assert sum(len(r["text"]) for r in rows) == 4223732
    with pytest.raises(DataError, match="no splits"):
        load_dataset("c4", split="train")


def test_harmfulqa(shared: Path) -> None:
    sizes = {s: len(load_dataset(f"harmfulqa:{s}")) for s in ("harmfulqa", "dangerousqa", "catqa")}
    assert sizes == {"harmfulqa": 1960, "dangerousqa": 200, "catqa": 550}
    rows = load_dataset("harmfulqa")
    _keys(rows, "prompt", "topic", "subtopic")
    assert len({r["topic"] for r in rows}) == 10 and len({(r["topic"], r["subtopic"]) for r in rows}) == 98
    # adversarialqa = AdvBench behaviours[:500]; the held-out ones among them must not leak through here.
    adversarial = load_dataset("harmfulqa:adversarialqa")
    goals = {r["goal"] for r in load_dataset("advbench")}
    assert len(adversarial) == 404 and all(r["prompt"] in goals for r in adversarial)


def test_advbench(shared: Path) -> None:
    behaviors = load_dataset("advbench")
    assert len(behaviors) == 420  # 520 upstream, 100 held out
    _keys(behaviors, "goal", "target", "prompt")
    assert all(r["prompt"] == r["goal"] for r in behaviors)
    strings = load_dataset("advbench:strings")
    assert len(strings) == 574 and set(strings[0]) == {"target"}
    transfer = load_dataset("advbench:transfer")
    goals = {r["goal"] for r in behaviors}
    assert len(transfer) == 309 and all(r["goal"] in goals for r in transfer)  # 388 lines, 79 held out
    with pytest.raises(DataError, match="100 of the 520"):
        load_dataset("advbench", split="heldout")


def test_tinyshakespeare(shared: Path) -> None:
    everything = load_dataset("tinyshakespeare")
    train, valid = (
        load_dataset("tinyshakespeare", split="train"),
        load_dataset("tinyshakespeare", split="val"),
    )
    assert len(everything) == len(train) + len(valid) > 7000
    assert train + valid == everything
    assert everything[0]["text"].startswith("First Citizen:\n")
    assert sum(len(r["text"]) for r in valid) < 0.12 * sum(len(r["text"]) for r in everything)


# ---------------------------------------------------------------------------------------------------------
# caching, limits and helpers


def test_limit_and_fresh_copies(shared: Path) -> None:
    first = load_dataset("e2e", split="dev", limit=3)
    assert len(first) == 3 and load_dataset("e2e", split="dev", limit=0) == []
    first[0]["references"].append("mutated")
    first[0]["fields"]["name"] = "mutated"
    again = load_dataset("e2e", split="dev", limit=3)
    assert "mutated" not in again[0]["references"] and again[0]["fields"]["name"] == "Alimentum"
    with pytest.raises(DataError, match="limit"):
        load_dataset("e2e", limit=-1)


def test_get_field() -> None:
    rows = [{"prompt": "a", "chosen": "b"}, {"prompt": "c", "chosen": "d"}]
    assert get_field(rows, "prompt", "x") == ["a", "c"]
    with pytest.raises(DataError) as err:
        get_field(rows, "text", "hh-rlhf")
    assert str(err.value) == "data set 'hh-rlhf' has no field 'text' (fields: prompt, chosen)"
    with pytest.raises(DataError, match="empty"):
        get_field([], "text", "x")


# ---------------------------------------------------------------------------------------------------------
# local files


def test_local_files(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"text": "x", "label": 1}\n\n{"text": "y", "label": 0}\n')
    (tmp_path / "b.json").write_text(json.dumps([{"prompt": "p1"}, {"prompt": "p2"}, {"prompt": "p3"}]))
    (tmp_path / "c.csv").write_text('text,label\n"hello, world",1\nbye,0\n')
    (tmp_path / "d.tsv").write_text("text\tlabel\nhi\t1\n")
    (tmp_path / "e.txt").write_text("first line\n\n  second line  \n")
    with gzip.open(tmp_path / "f.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write('{"text": "zipped"}\n')

    assert load_dataset(str(tmp_path / "a.jsonl")) == [{"text": "x", "label": 1}, {"text": "y", "label": 0}]
    assert load_dataset(str(tmp_path / "b.json"), limit=2) == [{"prompt": "p1"}, {"prompt": "p2"}]
    assert load_dataset(str(tmp_path / "c.csv")) == [
        {"text": "hello, world", "label": "1"},
        {"text": "bye", "label": "0"},
    ]
    assert load_dataset(str(tmp_path / "d.tsv")) == [{"text": "hi", "label": "1"}]
    assert load_dataset(str(tmp_path / "e.txt")) == [{"text": "first line"}, {"text": "second line"}]
    assert load_dataset(str(tmp_path / "f.jsonl.gz")) == [{"text": "zipped"}]


def test_missing_and_bad_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(DataError, match="not found") as err:
        load_dataset(str(missing))
    assert str(missing) in str(err.value)
    (tmp_path / "obj.json").write_text('{"not": "a list"}')
    with pytest.raises(DataError, match="list of objects"):
        load_dataset(str(tmp_path / "obj.json"))
    (tmp_path / "broken.jsonl").write_text('{"a": 1}\n{oops\n')
    with pytest.raises(DataError, match="broken.jsonl: line 2: not valid JSON"):
        load_dataset(str(tmp_path / "broken.jsonl"))
    (tmp_path / "x.parquet").write_text("")
    with pytest.raises(DataError, match="unsupported file type"):
        load_dataset(str(tmp_path / "x.parquet"))


# ---------------------------------------------------------------------------------------------------------
# errors: empty data root, unknown names, hf: specs


@pytest.mark.parametrize("name", NAMES)
def test_empty_data_root_names_the_dataset(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LMCONTROL_DATA", str(tmp_path))
    assert data_root() == tmp_path
    with pytest.raises(DataError) as err:
        load_dataset(name)
    message = str(err.value)
    assert (
        f"data set '{name}' not found" in message and str(tmp_path) in message and "LMCONTROL_DATA" in message
    )
    assert "\n" not in message
    assert isinstance(err.value, LMControlError)  # so the CLI prints it as one line


def test_unknown_names() -> None:
    with pytest.raises(DataError) as err:
        load_dataset("imagenet")
    assert "unknown data set 'imagenet'" in str(err.value)
    assert all(name in str(err.value) for name in NAMES)
    with pytest.raises(DataError, match=r"subsets: all, harmless-base, helpful-base"):
        load_dataset("hh-rlhf:red-team")
    with pytest.raises(DataError, match=r"splits: train, dev, test"):
        load_dataset("sst2", split="unsup")


def test_hf_errors_become_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_load(name: str, config: str | None = None, split: str = "train") -> list[dict]:
        calls.append((name, config, split))
        if name == "offline/set":
            raise ConnectionError("Couldn't reach the hub\nsecond line of detail")
        return [{"text": "a"}, {"text": "b"}, {"text": "c"}]

    # A stand-in `datasets` module: the real hub is unreachable here and the import is slow.
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=fake_load))
    assert load_dataset("hf:some/set:cfg", split="test", limit=2) == [{"text": "a"}, {"text": "b"}]
    assert calls[-1] == ("some/set", "cfg", "test")
    load_dataset("hf:plain")
    assert calls[-1] == ("plain", None, "train")
    with pytest.raises(DataError) as err:
        load_dataset("hf:offline/set")
    assert "hf:offline/set" in str(err.value) and "ConnectionError" in str(err.value)
    assert "\n" not in str(err.value)


def test_byte_order_mark_is_ignored(tmp_path: Path) -> None:
    from lmcontrol.data import load_file

    (tmp_path / "bom.jsonl").write_bytes(b'\xef\xbb\xbf{"prompt": "hi"}\n')
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbfprompt,x\nhi,1\n")
    assert load_file(tmp_path / "bom.jsonl") == [{"prompt": "hi"}]
    assert load_file(tmp_path / "bom.csv") == [{"prompt": "hi", "x": "1"}]
