"""``ocr-ft inspect-format``: show exactly what the model sees in training, local evaluation and serving.

:func:`inspect_format` returns, for one image + label, the whole training sequence as text
(``training_text``, special tokens kept, each run of image tokens written once as ``<|image|>×N``), the
supervised part (``supervised_text``: answer + EOS), the prompt local evaluation generates from
(``generation_prompt_text``), the chat-completions body the endpoint predictor sends without the image bytes
(``endpoint_request``) and that request rendered with the model directory's own chat template
(``served_prompt_text``, what vLLM/SGLang build from it). ``--probe`` also generates greedily from the
default prompt on the given images and prints the raw output with special tokens (think blocks included).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from ocr_ft.train.inputs import IGNORE_INDEX, ProcessorBundle, build_prompt_inputs, build_training_example, load_image


def collapse_image_runs(tokenizer: Any, ids: Sequence[int], image_token_id: int, image_token: str) -> str:
    """Decode ``ids`` keeping special tokens; each run of image tokens becomes ``<|image|>×N``."""
    parts, run, chunk = [], 0, []

    def flush_chunk():
        if chunk:
            parts.append(tokenizer.decode(chunk, skip_special_tokens=False))
            chunk.clear()

    for t in list(ids) + [None]:
        if t == image_token_id:
            flush_chunk()
            run += 1
            continue
        if run:
            parts.append(f"{image_token}×{run}")
            run = 0
        if t is not None:
            chunk.append(int(t))
    flush_chunk()
    return "".join(parts)


def served_prompt(tokenizer: Any, request: dict[str, Any], family: Any = None) -> str:
    """The request's messages rendered as an OpenAI-compatible server does: ``image_url`` parts become image
    parts, the model's chat template, ``add_generation_prompt=True``, the request's ``chat_template_kwargs``.
    A tokenizer without a chat template (GOT-OCR 2.0's: its processor writes the prompt by hand) gets the
    ``family``'s own rendering of the request's text."""
    if not getattr(tokenizer, "chat_template", None) and family is not None:
        from ocr_ft.train.inputs import render_prompt

        texts = [p.get("text", "") for m in request["messages"] if isinstance(m["content"], list)
                 for p in m["content"] if p.get("type") == "text"]
        return render_prompt(tokenizer, "".join(texts), family)
    messages = []
    for m in request["messages"]:
        content = m["content"]
        if isinstance(content, list):
            content = [{"type": "image"} if p.get("type") in ("image_url", "image") else p for p in content]
        messages.append({"role": m["role"], "content": content})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                         **request.get("chat_template_kwargs", {}))


def inspect_format(bundle: ProcessorBundle, image: Any, label: str, endpoint_model: str = "MODEL",
                   served_tokenizer: Any = None) -> dict[str, Any]:
    """The format report described in the module docstring, as a dict (JSON-ready).

    ``served_tokenizer``: the tokenizer of the directory a server would load (e.g. an adapter or merged model
    carrying its own chat template); the bundle's tokenizer when None."""
    from ocr_ft.evaluate.predictors import EndpointPredictor

    img = load_image(image) if isinstance(image, (str, Path)) else image
    tok = bundle.tokenizer
    ex = build_training_example(bundle, img, label)
    gen = build_prompt_inputs(bundle, img)
    sup = [t for t, lab in zip(ex["input_ids"], ex["labels"]) if lab != IGNORE_INDEX]
    ep = EndpointPredictor("http://server", model=endpoint_model, prompt=bundle.prompt)
    request = ep.payload(image) if isinstance(image, (str, Path)) else None
    if request is None:
        request = {"model": endpoint_model, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}},
            {"type": "text", "text": bundle.prompt}]}], "temperature": 0.0, "max_tokens": ep.max_tokens}
    for part in request["messages"][0]["content"]:
        if part.get("type") == "image_url":
            url = part["image_url"]["url"]
            part["image_url"]["url"] = url.split(",", 1)[0] + f",<{len(url)} characters of base64 left out>"
    col = lambda ids: collapse_image_runs(tok, ids, bundle.image_token_id, bundle.image_token)  # noqa: E731
    served = served_prompt(served_tokenizer or tok, request, bundle.family)
    n_img = int((gen["input_ids"][0] == bundle.image_token_id).sum())
    return {
        "training_text": col(ex["input_ids"]),
        "supervised_text": tok.decode(sup, skip_special_tokens=False),
        "generation_prompt_text": col(gen["input_ids"][0].tolist()),
        "endpoint_request": request,
        "served_prompt_text": served.replace(bundle.image_token, f"{bundle.image_token}×{n_img}", 1)
        if served.count(bundle.image_token) == 1 else served,
        "image_tokens": n_img,
        "stop_token_ids": bundle.stop_token_ids,
        "family": bundle.family.name,
        "answer_format": bundle.family.answer_format,
        "min_pixels": bundle.min_pixels,
        "max_pixels": bundle.max_pixels,
    }


def probe(model: Any, bundle: ProcessorBundle, images: Sequence[Any], max_new_tokens: int = 256) -> list[dict]:
    """Greedy generation from the default prompt; raw output with special tokens, per image."""
    from ocr_ft.train.modeling import generate_outputs

    outs = generate_outputs(model, bundle, list(images), max_new_tokens)
    return [{"image": str(im) if isinstance(im, (str, Path)) else f"#{k}", "raw_output": g.raw,
             "starts_with_think": g.raw.lstrip().startswith("<think>"), "truncated": g.truncated,
             "new_tokens": g.new_tokens} for k, (im, g) in enumerate(zip(images, outs))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ocr-ft inspect-format", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="base model directory, hub id or family name (any family of `ocr-ft models`, or a tiny preset's directory)")
    p.add_argument("--image", required=True, action="append", help="PNG of a table (repeat for --probe)")
    p.add_argument("--label", help="HTML label file of the (first) image")
    p.add_argument("--adapter", help="LoRA adapter directory or training run directory (config.yaml + adapter/)")
    p.add_argument("--config", help="training config YAML (prompt, pixel budget); default: the seed recipe")
    p.add_argument("--json", action="store_true", help="print JSON (default: readable text)")
    p.add_argument("--probe", action="store_true",
                   help="also load the weights and generate on every --image (GPU + real weights to see the "
                        "real model's think-block behaviour); prints raw outputs with special tokens")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--device", default=None)
    a = p.parse_args(argv)
    from ocr_ft.train.config import load_config
    from ocr_ft.train.modeling import BaseModelError, load_model_and_processor, load_processor

    try:
        config = load_config(a.config, base_model=a.model) if a.config else load_config(base_model=a.model)
        adapter = a.adapter
        if adapter and (Path(adapter) / "config.yaml").is_file() and (Path(adapter) / "adapter").is_dir():
            config = load_config(Path(adapter) / "config.yaml", base_model=a.model)
            adapter = str(Path(adapter) / "adapter")
        bundle = load_processor(a.model, config)
        label = Path(a.label).read_text(encoding="utf-8") if a.label else "<table><tr><td></td></tr></table>"
        served_tok = None
        if adapter and (Path(adapter) / "chat_template.jinja").is_file():  # the adapter's serving files
            from transformers import AutoTokenizer

            served_tok = AutoTokenizer.from_pretrained(adapter)
        report = inspect_format(bundle, a.image[0], label, served_tokenizer=served_tok)
        if a.probe:
            model, bundle = load_model_and_processor(a.model, config, adapter_dir=adapter, device=a.device)
            report["probe"] = probe(model, bundle, a.image, a.max_new_tokens)
    except (BaseModelError, OSError, ValueError) as exc:
        print(f"ocr-ft inspect-format: {exc}", file=sys.stderr)
        return 1
    if a.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        for k, v in report.items():
            print(f"== {k}\n{v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, indent=2)}\n")
    return 0
