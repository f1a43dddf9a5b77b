"""The ``tiny`` preset: a GLM-OCR-architecture model of a few million parameters, built offline.

:func:`build_tiny_model` writes an ordinary model directory (``config.json``, ``model.safetensors``,
``generation_config.json``, ``tokenizer.json`` + ``tokenizer_config.json`` + ``chat_template.jinja``,
``preprocessor_config.json``) that :func:`ocr_ft.train.modeling.load_model_and_processor` loads with
``from_pretrained`` like the real weights. The tokenizer is a byte-level BPE trained here on the given label
texts: every Hangul syllable and every digit is one token, HTML table tags and ``rowspan="``/``colspan="`` are
single added tokens, and the GLM chat special tokens exist. Same texts and seed -> byte-identical directory.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, Sequence

from ocr_ft.storage import atomic_dir, atomic_write_json, sha256_json

# Special tokens of GLM-OCR's tokenizer, by name (../shared/external/glm_ocr/README.md); the tiny vocabulary
# numbers them differently. The think markers and /nothink are what the real template can emit.
SPECIAL_TOKENS = [
    "<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>",
    "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>",
    "<|begin_of_image|>", "<|end_of_image|>", "<|begin_of_video|>", "<|end_of_video|>",
    "<|image|>", "<|video|>", "<think>", "</think>", "/nothink",
]
# Table markup kept whole (ordinary, non-special tokens: decoding keeps them).
HTML_TOKENS = [
    "<table>", "</table>", "<thead>", "</thead>", "<tbody>", "</tbody>", "<tr>", "</tr>",
    "<td>", "</td>", "<th>", "</th>", "<td", "<th", ' rowspan="', ' colspan="', 'rowspan="', 'colspan="',
    '">', "<br>", "<br/>", "<b>", "</b>",
]
# GLM-OCR's real chat template, shipped unchanged as package data (where it comes from:
# glm_ocr_chat_template.SOURCE.txt beside it). Default generation prompt for one image:
# [gMASK]<sop><|user|>\n<|begin_of_image|><|image|><|end_of_image|>PROMPT<|assistant|>\n
CHAT_TEMPLATE_PATH = Path(__file__).with_name("glm_ocr_chat_template.jinja")
CHAT_TEMPLATE = CHAT_TEMPLATE_PATH.read_text(encoding="utf-8")

HANGUL_SYLLABLE = r"[\uac00-\ud7a3]"

# Tiny dimensions: GLM-OCR's vision geometry (14-px patches, 2x2 merge, temporal patch 2) so the image-token
# arithmetic is the real one; small widths and depths.
TEXT_CONFIG = dict(
    hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    head_dim=64, max_position_embeddings=8192, rms_norm_eps=1e-5, tie_word_embeddings=False,
    rope_parameters={"rope_type": "default", "mrope_section": [8, 12, 12], "partial_rotary_factor": 1.0,
                     "rope_theta": 10000},
)
VISION_CONFIG = dict(
    depth=2, hidden_size=128, intermediate_size=256, num_heads=2, out_hidden_size=256, patch_size=14,
    spatial_merge_size=2, temporal_patch_size=2, image_size=336,
)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 8192, special_tokens: Sequence[str] | None = None,
                    chat_template: str | None = None, eos_token: str = "<|endoftext|>",
                    pad_token: str | None = None, extra_tokens: Sequence[str] = (), **tokenizer_kwargs: Any):
    """Byte-level BPE trained on ``texts`` (see module docstring); returns a transformers fast tokenizer.

    Defaults are GLM-OCR's: its special tokens, chat template and ``<|endoftext|>`` as EOS and padding. Other
    families pass their own ``special_tokens`` (numbered first, in order), ``chat_template``, ``eos_token`` /
    ``pad_token`` (``pad_token`` None: the EOS), ``extra_tokens`` (ordinary added tokens kept whole, after the
    HTML tags) and further ``PreTrainedTokenizerFast`` keyword arguments (e.g. ``image_token``)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tag_split = re.compile("|".join(re.escape(t) for t in sorted(dict.fromkeys([*HTML_TOKENS, *extra_tokens]), key=len, reverse=True)))
    pieces = [p for text in texts for p in tag_split.split(text) if p]  # tags are added whole, not learned
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(HANGUL_SYLLABLE), behavior="isolated"),
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=1, special_tokens=list(SPECIAL_TOKENS if special_tokens is None else special_tokens),
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(pieces, trainer)
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in [*HTML_TOKENS, *extra_tokens]])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=eos_token, pad_token=pad_token or eos_token, padding_side="right",
        model_max_length=TEXT_CONFIG["max_position_embeddings"], **tokenizer_kwargs,
    )
    fast.chat_template = CHAT_TEMPLATE if chat_template is None else chat_template
    return fast


def build_tiny_model(out_dir: str | Path, texts: Iterable[str], seed: int = 0, vocab_size: int = 8192) -> Path:
    """Build the tiny GLM-OCR model directory at ``out_dir`` (replaced atomically) and return its path.

    ``texts`` are label HTML strings the tokenizer is trained on. Deterministic for the same texts and seed.
    """
    from transformers import GlmOcrConfig, GlmOcrForConditionalGeneration
    from transformers.models.glm46v.image_processing_pil_glm46v import Glm46VImageProcessorPil

    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise ValueError("build_tiny_model needs at least one non-empty label text to train the tokenizer on")
    tokenizer = train_tokenizer(texts, vocab_size=vocab_size)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    eos = [ids["<|endoftext|>"], ids["<|user|>"]]
    vocab = -(-len(tokenizer) // 64) * 64  # round up: room for every token, tensor-friendly size
    config = GlmOcrConfig(
        text_config=dict(TEXT_CONFIG, vocab_size=vocab, pad_token_id=ids["<|endoftext|>"], eos_token_id=eos),
        vision_config=dict(VISION_CONFIG),
        image_token_id=ids["<|image|>"], video_token_id=ids["<|video|>"],
        image_start_token_id=ids["<|begin_of_image|>"], image_end_token_id=ids["<|end_of_image|>"],
        video_start_token_id=ids["<|begin_of_video|>"], video_end_token_id=ids["<|end_of_video|>"],
        tie_word_embeddings=False,
    )
    config.architectures = ["GlmOcrForConditionalGeneration"]
    return save_tiny_model(out_dir, GlmOcrForConditionalGeneration, config, seed,
                           {"eos_token_id": eos, "pad_token_id": ids["<|endoftext|>"]}, tokenizer,
                           Glm46VImageProcessorPil(), {
                               "preset": "tiny",
                               "seed": seed,
                               "texts_sha256": sha256_json(texts),
                               "num_texts": len(texts),
                               "vocab_size": vocab,
                               "tokenizer_size": len(tokenizer),
                           })


def save_tiny_model(out_dir: str | Path, model_class: Any, config: Any, seed: int, generation: dict[str, Any],
                    tokenizer: Any, image_processor: Any, manifest: dict[str, Any]) -> Path:
    """Shared tail of every family's tiny builder: ``model_class(config)`` initialised from ``seed`` (the global
    RNG is left as it was), greedy generation settings, and the directory written atomically with the
    tokenizer, the image processor and ``tiny_manifest.json`` (``manifest`` + the parameter count)."""
    import torch
    from transformers import GenerationConfig

    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = model_class(config).eval()
    finally:
        torch.random.set_rng_state(state)
    model.generation_config = GenerationConfig(**generation, do_sample=False)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        image_processor.save_pretrained(tmp)
        atomic_write_json(tmp / "tiny_manifest.json",
                          {**manifest, "parameters": sum(p.numel() for p in model.parameters())})
    return out_dir
