"""Every shared data set is read through this module, as a list of plain dicts with a fixed schema.

    rows = load_dataset("hh-rlhf:harmless-base")          # registered name[:subset]
    rows = load_dataset("e2e", split="test")                # one row per MR, with all its references
    rows = load_dataset("runs/prompts.jsonl", limit=100)    # a local .jsonl/.json/.csv/.tsv/.txt file
    rows = load_dataset("hf:imdb", split="test")            # the Hugging Face hub (needs `datasets`)

Where the data lives
--------------------
The shared data sets sit outside the repository (they are never copied into it). ``data_root()`` is
``$LMCONTROL_DATA`` if set; otherwise the first existing of
``<repo>/../shared/data`` (``Path(__file__).resolve().parents[2] / ".." / "shared" / "data"``, right for an
editable install or a checkout) and ``$PWD/../shared/data`` (for a non-editable install, where ``__file__`` is
inside site-packages, when run from the repo root). If neither exists the repo-relative path is returned, so
error messages name the documented default. Every folder has a ``SOURCE.md`` describing its files.

Registered data sets (``name[:subset]``; the first subset and the first split listed are the defaults)
------------------------------------------------------------------------------------------------------
=============== =================================== =======================================================
name            subsets                             splits: rows (files)
=============== =================================== =======================================================
hh-rlhf         all, harmless-base, helpful-base    train (alias test): 2,062 + 2,104 (``*/test.jsonl.gz``)
e2e             raw                                 train 42,061 (tarball), dev 547 MRs, test 630 MRs (CSV)
                tokenized                           train 42,061, valid 547, test 630 (``prefixtuning/``)
                control                             attribute 79, pos 200, spans 200, pos_attr 200
sst2            -                                   train 67,349, dev 872, test 1,821
ag_news         -                                   train 10,001 (description only), test 7,600
jigsaw          original                            train 9,848 (distinct ids), test 1,200 (6 labels)
                balanced                            test 12,180 (binary, 6,090 toxic)
rtp             all, nontoxic, toxic                train: 900 + 1,196
wikitext        -                                   valid 1,841, test 2,185 (non-empty, non-heading lines)
c4              -                                   none: 2,000 documents
harmfulqa       harmfulqa, dangerousqa, catqa,      none: 1,960 / 200 / 550 / 404
                adversarialqa
advbench        behaviors, strings, transfer        train: 420 / 574 / 309
tinyshakespeare -                                   all 7,222 speeches; train 6,283 (first 90% of the
                                                    characters), valid 939
=============== =================================== =======================================================

Files per split: e2e train = ``e2e/neural-template-gen/e2e_aligned.tar.gz`` (members ``src_train.txt`` and
``train.txt``, read in memory), e2e dev/test = ``e2e-dataset/devset.csv`` / ``testset_w_refs.csv``,
e2e:tokenized valid/test = ``prefixtuning/src1_{valid,test}.txt``, e2e:control =
``diffusion-lm/control_target/target_*.json``; jigsaw original = ``predibase/data_pools/{split}.*.csv``
(+ ``dataset_subsets/train.5k.csv`` for train), balanced = ``robtest/test.csv``; ag_news train =
``alps_train_subset/dev.tsv``, test = ``test.csv``; sst2 train = ``train_full.tsv``.

Aliases: each folder name (``jigsaw_toxic``, ``real_toxicity_prompts``, ``c4_sample``); ``dev``, ``valid``,
``validation`` and ``val`` name the same split.

Held-out rows. ``hh-rlhf`` (250 + 250), ``rtp`` (300 non-toxic) and ``advbench`` (100 behaviours) each have a
random part held back for independent evaluation; those rows are *not in the data folder*. So every row here
is usable for training and tuning: it is split ``train`` (``hh-rlhf`` also accepts ``test``, its upstream
split name), and ``split="heldout"`` raises a DataError. Two other files still contain held-out AdvBench
behaviours: ``harmfulqa:adversarialqa`` (= AdvBench behaviours[:500], 96 held out) and ``advbench:transfer``
(79 held out). Both are filtered to the behaviours still in ``harmful_behaviors.csv`` so the held-out set is
never seen through a side door.

Row schemas (the keys listed always exist; a few cheap extra fields are kept):

- hh-rlhf: prompt (dialogue up to and including the final ``"\\n\\nAssistant:"``), chosen, rejected (final
  assistant replies, stripped), subset, first_human, turns ([{role, content}] of the prompt), chosen_full,
  rejected_full (the original dialogues). The prompt is cut at the last ``"\\n\\nAssistant:"`` of the *common
  prefix* of chosen and rejected, so a reply that itself contains that marker is not split.
- e2e train: mr, fields, text, references (= [text]), src. dev/test/valid: mr, fields, references, (src).
  ``text`` and the tokenized references are PTB-style tokenized (``family - friendly`` , ``£ 30``); ``mr`` and
  ``fields`` always use the raw E2E slot names and values (``customer rating``, ``more than £30``); ``src`` is
  the PrefixTuning table (``name : X | Type : pub``). Train exists only tokenized, so pair it with
  ``e2e:tokenized`` valid/test when the two sides must share one tokenization.
- e2e:control: the Diffusion-LM target as stored (attr, pos, words_, spans) plus text (and field, value).
- sst2: text, label. ag_news: text, label (0-3), label_name (+ title, description on test); the text is
  kept as upstream, with its ``\\`` line escapes and `` #39;``-style entities.
- jigsaw: text, toxic, label (1 if any of the six labels), and on ``original`` id + the six Kaggle labels.
- rtp: prompt, continuation, prompt_toxicity, continuation_toxicity (float or None), subset, challenging.
- wikitext / tinyshakespeare: text. c4: text, url, timestamp.
- harmfulqa: prompt (+ topic, subtopic where the file has them).
- advbench: behaviors goal, target, prompt (= goal); strings target; transfer goal, prompt.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
import os
import re
import tarfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

from lmcontrol import LMControlError

log = logging.getLogger(__name__)

Row = dict[str, Any]

DATA_ENV = "LMCONTROL_DATA"
FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".txt")


class DataError(LMControlError):
    """A data set or file is missing, unknown or malformed. The message is always one line."""


# --------------------------------------------------------------------------------------------------------
# locating files


def data_root() -> Path:
    """The shared data folder.

    ``$LMCONTROL_DATA`` if set, else ``<repo>/../shared/data``, else ``$PWD/../shared/data`` (see the module
    docstring for why there are two defaults).
    """
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    repo_relative = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
    # A non-editable install puts this file in site-packages, where parents[2] is not the repo.
    for candidate in (repo_relative, Path.cwd() / ".." / "shared" / "data"):
        if candidate.is_dir():
            return candidate.resolve()
    return repo_relative.resolve()


def _need(root: Path, rel: str, name: str) -> Path:
    """The path of a shared-data file, or a DataError naming the data set and the missing file."""
    path = root / rel
    if not path.is_file():
        raise DataError(f"data set '{name}' not found: {path} missing (set {DATA_ENV})")
    return path


def _open_text(path: Path) -> IO[str]:
    # newline="" lets the csv module handle quoted fields that contain newlines (Jigsaw comments do).
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


MAX_JSON_DEPTH = 64  # deeper rows are refused: nothing lmcontrol reads nests more than a few levels


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _json_depth(value: Any) -> int:
    """How deeply ``value`` nests lists and dicts (iterative: a deep value must not overflow the stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if depth > MAX_JSON_DEPTH:
                break
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def parse_json(text: str, where: str) -> Any:
    """Strict JSON for untrusted input: one DataError line for syntax errors, NaN/Infinity literals, integers
    longer than Python accepts (4,300 digits) and nesting deeper than ``MAX_JSON_DEPTH``."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise DataError(f"{where}: nested deeper than {MAX_JSON_DEPTH} levels") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from None
    except ValueError as err:  # huge integers, NaN/Infinity
        raise DataError(f"{where}: not valid JSON ({_one_line(err)})") from None
    if _json_depth(value) > MAX_JSON_DEPTH:
        raise DataError(f"{where}: nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def _read_jsonl(path: Path) -> list[Any]:
    with _open_text(path) as f:
        return [parse_json(line, f"{path}: line {i}") for i, line in enumerate(f, 1) if line.strip()]


def _read_csv(path: Path, delimiter: str = ",", quoting: int = csv.QUOTE_MINIMAL) -> list[list[str]]:
    with _open_text(path) as f:
        return list(csv.reader(f, delimiter=delimiter, quoting=quoting))


def _read_csv_dicts(path: Path) -> list[dict[str, str]]:
    with _open_text(path) as f:
        return list(csv.DictReader(f))


def _one_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:300]}" if lines else type(err).__name__


# --------------------------------------------------------------------------------------------------------
# HH-RLHF

_HH_SUBSETS = ("harmless-base", "helpful-base")
_ASSISTANT = "\n\nAssistant:"
_TURN_RE = re.compile(r"\n\n(Human|Assistant):")


def _hh_row(chosen: str, rejected: str, subset: str) -> Row:
    # The final replies are what differs, so the prompt ends at the last marker both dialogues share. Cutting
    # at rfind() of chosen alone would go wrong when a reply itself contains "\n\nAssistant:" (a few do).
    common = os.path.commonprefix([chosen, rejected])
    end = common.rfind(_ASSISTANT) + len(_ASSISTANT)
    if end < len(_ASSISTANT):  # no shared marker at all; never happens in the shipped files
        end = chosen.rfind(_ASSISTANT) + len(_ASSISTANT)
    prompt = chosen[:end]
    parts = _TURN_RE.split(prompt)  # ["", "Human", " text", "Assistant", " text", ..., "Assistant", ""]
    turns = [
        {"role": "user" if who == "Human" else "assistant", "content": text.strip()}
        for who, text in zip(parts[1::2], parts[2::2], strict=True)
    ]
    if turns and turns[-1]["role"] == "assistant" and not turns[-1]["content"]:
        turns.pop()  # the empty slot the model is asked to fill
    first_human = next((t["content"] for t in turns if t["role"] == "user"), "")
    return {
        "prompt": prompt,
        "chosen": chosen[end:].strip(),
        "rejected": rejected[end:].strip(),
        "subset": subset,
        "first_human": first_human,
        "turns": turns,
        "chosen_full": chosen,
        "rejected_full": rejected,
    }


def _load_hh(root: Path, subset: str, split: str) -> list[Row]:
    rows: list[Row] = []
    for sub in _HH_SUBSETS if subset == "all" else (subset,):
        for rec in _read_jsonl(_need(root, f"hh-rlhf/{sub}/test.jsonl.gz", "hh-rlhf")):
            rows.append(_hh_row(rec["chosen"], rec["rejected"], sub))
    return rows


# --------------------------------------------------------------------------------------------------------
# E2E

_E2E_TAR = "e2e/neural-template-gen/e2e_aligned.tar.gz"
_E2E_TAR_SLOT_RE = re.compile(r"__start_(\w+)__ (.*?) __end_\1__")
_E2E_RAW_SLOT_RE = re.compile(r"\s*([^,\[]+?)\s*\[([^\]]*)\]")
# Slot names differ between the three copies; `fields` always uses the raw release's names.
_E2E_TAR_TO_RAW = {"customerrating": "customer rating"}
_E2E_PT_TO_RAW = {"Type": "eatType", "price": "priceRange", "family friendly": "familyFriendly"}
_E2E_RAW_TO_PT = {v: k for k, v in _E2E_PT_TO_RAW.items()}
_E2E_CONTROL_FILES = {
    "attribute": "target_attribute.json",
    "pos": "target_pos.json",
    "spans": "target_spans.json",
    "pos_attr": "target_compose_pos_attr.json",
}


def _e2e_detok_value(value: str) -> str:
    # Only price values are tokenized differently from the raw MRs: "£ 20 - 25" -> "£20-25".
    return re.sub(r"£ (?=\d)", "£", value).replace(" - ", "-")


def _e2e_mr(fields: dict[str, str]) -> str:
    return ", ".join(f"{k}[{v}]" for k, v in fields.items())


def _e2e_src(tok_fields: dict[str, str]) -> str:
    """The PrefixTuning table for tokenized values keyed by raw slot names."""
    return " | ".join(f"{_E2E_RAW_TO_PT.get(k, k)} : {v}" for k, v in tok_fields.items())


def _e2e_train(root: Path) -> list[Row]:
    path = _need(root, _E2E_TAR, "e2e")
    # Read the two members into memory: the tarball must never be extracted next to the code.
    with tarfile.open(path, "r:gz") as tar:
        members = {}
        for member in ("src_train.txt", "train.txt"):
            f = tar.extractfile(f"e2e_aligned/{member}")
            if f is None:
                raise DataError(f"data set 'e2e' is malformed: {path} has no e2e_aligned/{member}")
            members[member] = f.read().decode("utf-8").splitlines()
    srcs, tgts = members["src_train.txt"], members["train.txt"]
    if len(srcs) != len(tgts):
        raise DataError(f"data set 'e2e' is malformed: {path} has {len(srcs)} MRs but {len(tgts)} sentences")
    rows: list[Row] = []
    for src, tgt in zip(srcs, tgts, strict=True):
        tok = {_E2E_TAR_TO_RAW.get(k, k): v for k, v in _E2E_TAR_SLOT_RE.findall(src.strip())}
        fields = {k: _e2e_detok_value(v) for k, v in tok.items()}
        # "The Vaults pub ... . <eos>|||0,2,0 2,3,1" -> drop the end marker and the alignment spans.
        text = tgt.split("<eos>", 1)[0].split("|||", 1)[0].strip()
        rows.append(
            {
                "mr": _e2e_mr(fields),
                "fields": fields,
                "text": text,
                "references": [text],
                "src": _e2e_src(tok),
            }
        )
    return rows


def _group_refs(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """MR -> its references, in first-seen order (dicts keep insertion order)."""
    groups: dict[str, list[str]] = {}
    for mr, ref in pairs:
        groups.setdefault(mr, []).append(ref)
    return groups


def _e2e_raw(root: Path, split: str) -> list[Row]:
    rel = {"dev": "e2e/e2e-dataset/devset.csv", "test": "e2e/e2e-dataset/testset_w_refs.csv"}[split]
    recs = _read_csv_dicts(_need(root, rel, "e2e"))
    groups = _group_refs((r["mr"], r["ref"]) for r in recs)
    return [
        {"mr": mr, "fields": {k: v for k, v in _E2E_RAW_SLOT_RE.findall(mr)}, "references": refs}
        for mr, refs in groups.items()
    ]


def _e2e_tokenized(root: Path, split: str) -> list[Row]:
    rel = {"valid": "e2e/prefixtuning/src1_valid.txt", "test": "e2e/prefixtuning/src1_test.txt"}[split]
    lines = _need(root, rel, "e2e").read_text(encoding="utf-8").splitlines()
    # Each line: "name : Alimentum | area : city centre||There is a place in the city centre , ... ."
    groups = _group_refs(
        (src.strip(), ref.strip()) for src, _, ref in (line.partition("||") for line in lines if line.strip())
    )
    rows: list[Row] = []
    for src, refs in groups.items():
        pairs = (kv.split(" : ", 1) for kv in src.split(" | "))
        fields = {_E2E_PT_TO_RAW.get(k, k): _e2e_detok_value(v) for k, v in pairs}
        rows.append({"mr": _e2e_mr(fields), "fields": fields, "references": refs, "src": src})
    return rows


def _control_row(rec: Any) -> Row:
    row: Row = dict(rec) if isinstance(rec, dict) else {"attr": rec}
    if "words_" in row:
        row["text"] = " ".join(w for w in row["words_"] if w not in ("START", "END", "\n"))
    if "attr" in row:
        attr = row["attr"]
        cut = attr.index(":") if ":" in attr else 0
        key = " ".join(attr[:cut])
        row["field"] = _E2E_PT_TO_RAW.get(key, key)
        row["value"] = " ".join(attr[cut + 1 :])
        row.setdefault("text", " ".join(attr))
    return row


def e2e_control_targets(kind: str = "attribute") -> list[Row]:
    """Diffusion-LM's E2E control targets (``attribute``, ``pos``, ``spans`` or ``pos_attr``).

    Same as ``load_dataset("e2e:control", split=kind)``.
    """
    return load_dataset("e2e:control", split=kind)


def _load_e2e(root: Path, subset: str, split: str) -> list[Row]:
    if subset == "control":
        path = _need(root, f"e2e/diffusion-lm/control_target/{_E2E_CONTROL_FILES[split]}", "e2e")
        return [_control_row(rec) for rec in _read_jsonl(path)]
    if split == "train":
        return _e2e_train(root)
    return _e2e_raw(root, split) if subset == "raw" else _e2e_tokenized(root, split)


# --------------------------------------------------------------------------------------------------------
# classification sets: SST-2, AG News, Jigsaw


def _load_sst2(root: Path, subset: str, split: str) -> list[Row]:
    rel = {"train": "train_full.tsv", "dev": "dev.tsv", "test": "test-labeled.tsv"}[split]
    # PTB-tokenized sentences contain stray quotes, so no CSV quoting.
    recs = _read_csv(_need(root, f"sst2/{rel}", "sst2"), delimiter="\t", quoting=csv.QUOTE_NONE)
    return [{"text": text.strip(), "label": int(label)} for text, label in recs[1:]]  # [0] is the header


def _load_ag_news(root: Path, subset: str, split: str) -> list[Row]:
    names = _need(root, "ag_news/classes.txt", "ag_news").read_text(encoding="utf-8").split("\n")
    names = [n.strip() for n in names if n.strip()]
    if split == "test":
        recs = _read_csv(_need(root, "ag_news/test.csv", "ag_news"))
        # Text is kept as upstream (escaped "\" newlines, " #39;" entities) so results compare with papers.
        return [
            {
                "text": f"{title} {desc}",
                "label": int(cls) - 1,
                "label_name": names[int(cls) - 1],
                "title": title,
                "description": desc,
            }
            for cls, title, desc in recs
        ]
    path = _need(root, "ag_news/alps_train_subset/dev.tsv", "ag_news")
    rows: list[Row] = []
    for desc, name in _read_csv(path, delimiter="\t", quoting=csv.QUOTE_NONE):
        if name not in names:
            raise DataError(f"data set 'ag_news' is malformed: unknown label {name!r} in {path}")
        rows.append({"text": desc, "label": names.index(name), "label_name": name})
    return rows


_JIGSAW_LABELS = ("toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate")


def _load_jigsaw(root: Path, subset: str, split: str) -> list[Row]:
    if subset == "balanced":
        recs = _read_csv(_need(root, "jigsaw_toxic/robtest/test.csv", "jigsaw"))
        return [{"text": text, "toxic": int(label), "label": int(label)} for text, label in recs]
    # The ok/bad pools (train a-c, test a-c; SOURCE.md lists which exist) plus, for train, the random 5k.
    pools = (
        ("a.ok.1k", "b.ok.1k", "a.bad.1k", "b.bad.1k", "c.bad.1k")
        if split == "train"
        else ("a.ok.200", "b.ok.200", "c.ok.200", "a.bad.200", "b.bad.200", "c.bad.200")
    )
    rels = [f"jigsaw_toxic/predibase/data_pools/{split}.{pool}.csv" for pool in pools]
    if split == "train":
        rels.append("jigsaw_toxic/predibase/dataset_subsets/train.5k.csv")
    rows: dict[str, Row] = {}
    for rel in rels:
        # train.5k overlaps the train pools by 152 ids: keep each comment once.
        for rec in _read_csv_dicts(_need(root, rel, "jigsaw")):
            labels = {k: int(rec[k]) for k in _JIGSAW_LABELS}
            # "toxic" is Kaggle's own column; "label" is predibase's is_bad (any of the six labels).
            rows.setdefault(
                rec["id"],
                {"text": rec["comment_text"], **labels, "label": int(any(labels.values())), "id": rec["id"]},
            )
    return list(rows.values())


# --------------------------------------------------------------------------------------------------------
# prompt sets: RealToxicityPrompts, HarmfulQA & co, AdvBench

_RTP_SUBSETS = ("nontoxic", "toxic")


def _score(value: Any) -> float | None:
    return None if value is None else float(value)


def _load_rtp(root: Path, subset: str, split: str) -> list[Row]:
    rows: list[Row] = []
    for sub in _RTP_SUBSETS if subset == "all" else (subset,):
        for rec in _read_jsonl(_need(root, f"real_toxicity_prompts/decodingtrust/{sub}.jsonl", "rtp")):
            prompt, cont = rec["prompt"], rec["continuation"]
            rows.append(
                {
                    "prompt": prompt["text"],
                    "continuation": cont["text"],
                    "prompt_toxicity": _score(prompt.get("toxicity")),
                    "continuation_toxicity": _score(cont.get("toxicity")),
                    "subset": sub,
                    "challenging": bool(rec.get("challenging")),
                }
            )
    return rows


def _advbench_goals(root: Path, name: str) -> set[str]:
    """The AdvBench behaviours that are not held out (every one still in harmful_behaviors.csv)."""
    return {r["goal"] for r in _read_csv_dicts(_need(root, "advbench/harmful_behaviors.csv", name))}


def _drop_heldout(items: list[str], allowed: set[str], what: str) -> list[str]:
    kept = [s for s in items if s in allowed]
    if len(kept) < len(items):
        log.info("%s: dropped %d held-out AdvBench behaviours", what, len(items) - len(kept))
    return kept


def _load_harmfulqa(root: Path, subset: str, split: str) -> list[Row]:
    rel = {
        "harmfulqa": "harmfulqa.json",
        "dangerousqa": "dangerousqa.json",
        "catqa": "catqa_english.json",
        "adversarialqa": "adversarialqa.json",
    }[subset]
    data = json.loads(_need(root, f"harmfulqa/{rel}", "harmfulqa").read_text(encoding="utf-8"))
    if isinstance(data, dict):  # {topic: {subtopic: [question, ...]}}
        return [
            {"prompt": q, "topic": topic, "subtopic": sub.strip().rstrip(":")}  # catqa keys end in ":"
            for topic, subs in data.items()
            for sub, qs in subs.items()
            for q in qs
        ]
    if subset == "adversarialqa":  # = AdvBench behaviours[:500], which include held-out ones
        data = _drop_heldout(data, _advbench_goals(root, "harmfulqa"), "harmfulqa:adversarialqa")
    return [{"prompt": q} for q in data]


def _load_advbench(root: Path, subset: str, split: str) -> list[Row]:
    if subset == "behaviors":
        recs = _read_csv_dicts(_need(root, "advbench/harmful_behaviors.csv", "advbench"))
        # Upstream quirk kept: a few targets are shuffled among neighbouring rows (see SOURCE.md).
        return [{"goal": r["goal"], "target": r["target"], "prompt": r["goal"]} for r in recs]
    if subset == "strings":
        return [
            {"target": r["target"]}
            for r in _read_csv_dicts(_need(root, "advbench/harmful_strings.csv", "advbench"))
        ]
    # Not really CSV: one behaviour per line, quoted only sometimes, and unquoted lines contain commas.
    path = _need(root, "advbench/transfer_expriment_behaviors.csv", "advbench")
    goals = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if len(line) >= 2 and line[0] == line[-1] == '"':
            line = line[1:-1].replace('""', '"')
        if line:
            goals.append(line)
    goals = _drop_heldout(goals, _advbench_goals(root, "advbench"), "advbench:transfer")
    return [{"goal": g, "prompt": g} for g in goals]


# --------------------------------------------------------------------------------------------------------
# plain text: WikiText, C4, Tiny Shakespeare


def _load_wikitext(root: Path, subset: str, split: str) -> list[Row]:
    path = _need(root, f"wikitext/wikitext-103/wiki.{split}.tokens", "wikitext")
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not (line.startswith("= ") and line.endswith(" =")):  # " = = Heading = = "
            rows.append({"text": line})
    return rows


def _load_c4(root: Path, subset: str, split: str) -> list[Row]:
    recs = _read_jsonl(_need(root, "c4_sample/c4_validation_2k.jsonl.gz", "c4"))
    return [{"text": r["text"], "url": r["url"], "timestamp": r.get("timestamp")} for r in recs]


def _load_tinyshakespeare(root: Path, subset: str, split: str) -> list[Row]:
    text = _need(root, "tinyshakespeare/input.txt", "tinyshakespeare").read_text(encoding="utf-8")
    # nanoGPT's convention: the first 90% of the characters train, the rest validate. A speech belongs to
    # the side where it starts.
    cut = int(0.9 * len(text))
    rows, start = [], 0
    for block in text.split("\n\n"):
        side = "train" if start < cut else "valid"
        start += len(block) + 2
        if block.strip() and split in ("all", side):
            rows.append({"text": block.strip()})
    return rows


# --------------------------------------------------------------------------------------------------------
# the registry


@dataclass(frozen=True)
class _Entry:
    """A registered data set: ``splits`` maps each subset (the first is the default) to its splits (the
    first is the default; an empty tuple means the set has no splits and ``split`` must be None)."""

    loader: Callable[[Path, str, str], list[Row]]
    splits: dict[str, tuple[str, ...]]
    heldout: str | None = None  # what SOURCE.md holds back, for the "heldout" error message
    split_aliases: dict[str, str] | None = None


_DATASETS: dict[str, _Entry] = {
    "hh-rlhf": _Entry(
        _load_hh,
        {s: ("train",) for s in ("all", *_HH_SUBSETS)},
        heldout="250 dialogues of each test split",
        split_aliases={"test": "train"},
    ),
    "e2e": _Entry(
        _load_e2e,
        {
            "raw": ("train", "dev", "test"),
            "tokenized": ("train", "valid", "test"),
            "control": tuple(_E2E_CONTROL_FILES),
        },
    ),
    "sst2": _Entry(_load_sst2, {"": ("train", "dev", "test")}),
    "ag_news": _Entry(_load_ag_news, {"": ("train", "test")}),
    "jigsaw": _Entry(_load_jigsaw, {"original": ("train", "test"), "balanced": ("test",)}),
    "rtp": _Entry(
        _load_rtp,
        {s: ("train",) for s in ("all", *_RTP_SUBSETS)},
        heldout="300 of the 1,200 non-toxic prompts",
    ),
    "wikitext": _Entry(_load_wikitext, {"": ("valid", "test")}),
    "c4": _Entry(_load_c4, {"": ()}),
    "harmfulqa": _Entry(
        _load_harmfulqa, {s: () for s in ("harmfulqa", "dangerousqa", "catqa", "adversarialqa")}
    ),
    "advbench": _Entry(
        _load_advbench,
        {s: ("train",) for s in ("behaviors", "strings", "transfer")},
        heldout="100 of the 520 behaviours",
    ),
    "tinyshakespeare": _Entry(_load_tinyshakespeare, {"": ("all", "train", "valid")}),
}
_ALIASES = {
    "hh_rlhf": "hh-rlhf",
    "jigsaw_toxic": "jigsaw",
    "real_toxicity_prompts": "rtp",
    "c4_sample": "c4",
    "sst-2": "sst2",
    "agnews": "ag_news",
    "ag-news": "ag_news",
    "tiny_shakespeare": "tinyshakespeare",
}
_VALID_SPLITS = ("valid", "dev", "validation", "val")  # one name for every data set's validation split


def list_datasets() -> list[str]:
    """The registered data set names (aliases not included)."""
    return sorted(_DATASETS)


def _resolve_split(name: str, entry: _Entry, subset: str, split: str | None) -> str:
    allowed = entry.splits[subset]
    label = f"{name}:{subset}" if subset else name
    if split is None:
        return allowed[0] if allowed else ""
    split = split.strip().lower()
    if not allowed:
        raise DataError(f"data set '{label}' has no splits; use split=None (got '{split}')")
    if split == "heldout" and entry.heldout:
        raise DataError(
            f"data set '{name}' split 'heldout' is not available: {entry.heldout} are held back "
            f"for independent evaluation and are not in {data_root()}"
        )
    split = (entry.split_aliases or {}).get(split, split)
    if split in _VALID_SPLITS:
        split = next((s for s in _VALID_SPLITS if s in allowed), split)
    if split not in allowed:
        raise DataError(f"data set '{label}' has no split '{split}' (splits: {', '.join(allowed)})")
    return split


@lru_cache(maxsize=32)
def _load_registered(root: str, name: str, subset: str, split: str) -> tuple[Row, ...]:
    # Keyed on the root too, so pointing LMCONTROL_DATA elsewhere (tests do) never serves stale rows.
    rows = _DATASETS[name].loader(Path(root), subset, split)
    log.debug("loaded %s:%s split=%s: %d rows from %s", name, subset, split, len(rows), root)
    return tuple(rows)


def _copy(value: Any) -> Any:
    """A deep copy of the dict/list part of a row: callers may mutate rows without touching the cache."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _looks_like_path(spec: str) -> bool:
    suffixes = [s.lower() for s in Path(spec).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    return "/" in spec or os.sep in spec or bool(suffixes and suffixes[-1] in FILE_SUFFIXES)


def load_dataset(spec: str, split: str | None = None, limit: int | None = None) -> list[Row]:
    """Load ``spec`` as a fresh list of dicts: a registered ``name[:subset]``, ``hf:NAME[:CONFIG]`` or a file.

    ``split=None`` picks the data set's default split (see the module docstring); ``limit`` keeps the first
    ``limit`` rows. Raises DataError, with a one-line message, for anything missing or malformed.
    """
    if limit is not None and limit < 0:
        raise DataError(f"limit must be >= 0, got {limit}")
    spec = spec.strip()
    if spec.startswith("hf:"):
        return _load_hf(spec, split, limit)
    if _looks_like_path(spec):
        rows = load_file(spec)
        if split not in (None, "train", "all"):
            log.warning("split '%s' ignored for local file %s", split, spec)
        return rows[:limit] if limit is not None else rows
    raw_name, _, subset = spec.partition(":")
    name = _ALIASES.get(raw_name.lower(), raw_name.lower())
    if name not in _DATASETS:
        raise DataError(
            f"unknown data set '{raw_name}' (known: {', '.join(list_datasets())}; "
            f"or hf:NAME[:CONFIG], or a {'/'.join(FILE_SUFFIXES)} file)"
        )
    entry = _DATASETS[name]
    subsets = list(entry.splits)
    subset = subset.strip().lower() if subset else subsets[0]
    if subset not in entry.splits:
        named = ", ".join(s for s in subsets if s) or "none"
        raise DataError(f"data set '{name}' has no subset '{subset}' (subsets: {named})")
    split = _resolve_split(name, entry, subset, split)
    rows = _load_registered(str(data_root()), name, subset, split)
    return [_copy(r) for r in (rows[:limit] if limit is not None else rows)]


# --------------------------------------------------------------------------------------------------------
# local files and the Hugging Face hub


def load_file(path: str | os.PathLike[str]) -> list[Row]:
    """Rows of a local file, optionally gzip-compressed (``.jsonl.gz``).

    ``.jsonl``: one object per line; ``.json``: a list of objects; ``.csv``/``.tsv``: a header row, then one
    dict of strings per row; ``.txt``: ``{"text": line}`` per non-empty line.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"data file not found: {p.resolve() if not p.is_absolute() else p}")
    suffix = p.with_suffix("").suffix.lower() if p.suffix.lower() == ".gz" else p.suffix.lower()
    try:
        if suffix == ".jsonl":
            rows = _read_jsonl(p)
        elif suffix == ".json":
            with _open_text(p) as f:
                rows = parse_json(f.read(), str(p))
            if not isinstance(rows, list):
                raise DataError(f"{p}: expected a JSON list of objects, got {type(rows).__name__}")
        elif suffix in (".csv", ".tsv"):
            with _open_text(p) as f:
                rows = list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","))
        elif suffix == ".txt":
            with _open_text(p) as f:
                rows = [{"text": line.strip()} for line in f if line.strip()]
        else:
            raise DataError(f"unsupported file type '{suffix}' for {p} (use {', '.join(FILE_SUFFIXES)})")
    except (UnicodeDecodeError, csv.Error, OSError) as err:
        raise DataError(f"could not read {p}: {_one_line(err)}") from None
    bad = next((i for i, r in enumerate(rows) if not isinstance(r, dict)), None)
    if bad is not None:
        raise DataError(f"{p}: row {bad + 1} is a {type(rows[bad]).__name__}, not an object")
    return rows


def _load_hf(spec: str, split: str | None, limit: int | None) -> list[Row]:
    name, _, config = spec[len("hf:") :].partition(":")
    if not name:
        raise DataError(f"bad spec '{spec}': use hf:NAME or hf:NAME:CONFIG")
    try:
        import datasets  # lazy: heavy, optional (the [data] extra), and only needed for hf: specs
    except ImportError as err:
        msg = f"'{spec}' needs the Hugging Face 'datasets' package (pip install lmcontrol[data])"
        raise DataError(msg) from err
    split = split or "train"
    try:
        ds = datasets.load_dataset(name, config or None, split=split)
        rows: list[Row] = []
        for row in ds:
            if limit is not None and len(rows) >= limit:
                break
            rows.append(dict(row))
    except Exception as err:  # network, missing config/split, auth: all become one clear line
        msg = f"could not load '{spec}' split '{split}' from the Hugging Face hub: {_one_line(err)}"
        raise DataError(msg) from err
    return rows


# --------------------------------------------------------------------------------------------------------
# helpers for trainers


def get_field(rows: Sequence[Row], field: str, spec: str) -> list[Any]:
    """``[row[field] for row in rows]``, or a DataError naming the data set and the fields it does have.

    Trainers that take ``--input-field``/``--target-field`` call this so a typo fails with a useful message.
    """
    if not rows:
        raise DataError(f"data set '{spec}' is empty, so it has no field '{field}'")
    for i, row in enumerate(rows):
        if field not in row:
            where = "" if i == 0 else f" in row {i}"
            raise DataError(f"data set '{spec}' has no field '{field}'{where} (fields: {', '.join(row)})")
    return [row[field] for row in rows]
