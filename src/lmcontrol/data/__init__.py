"""Every shared data set is read through this module, as a list of plain dicts with a fixed schema.

    rows = load_dataset("hh-rlhf:harmless-base")          # registered name[:subset]
    rows = load_dataset("e2e", split="test")                # one row per MR, with all its references
    rows = load_dataset("runs/prompts.jsonl", limit=100)    # a local .jsonl/.json/.csv/.tsv/.txt file
    rows = load_dataset("hf:imdb", split="test")            # the Hugging Face hub (needs `datasets`)

Where the data lives
--------------------
The shared data sets sit outside the repository (they are never copied into it). ``data_root()`` is
``$LMCONTROL_DATA`` if set; otherwise the first existing of
``<repo>/../shared/data`` (``Path(__file__).resolve().parents[3] / ".." / "shared" / "data"``, right for an
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

from lmcontrol.data.files import get_field, load_file
from lmcontrol.data.readers import DATA_ENV, FILE_SUFFIXES, MAX_JSON_DEPTH, DataError, Row, data_root, parse_json
from lmcontrol.data.registry import e2e_control_targets, list_datasets, load_dataset

__all__ = [
    "DATA_ENV",
    "FILE_SUFFIXES",
    "MAX_JSON_DEPTH",
    "DataError",
    "Row",
    "data_root",
    "e2e_control_targets",
    "get_field",
    "list_datasets",
    "load_dataset",
    "load_file",
    "parse_json",
]
