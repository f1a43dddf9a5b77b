"""Issue 11: one prompt format from training to serving, checked against GLM-OCR's real chat template."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from factories import shared_external

from ocr_ft.train.config import load_config

TEMPLATE = shared_external("glm_ocr", "chat_template.jinja")
REAL_SPECIALS = ["<|endoftext|>", "[gMASK]", "<sop>", "<|user|>", "<|assistant|>", "<|begin_of_image|>",
                 "<|end_of_image|>", "<|image|>", "<|video|>", "<|observation|>", "<think>", "</think>", "/nothink"]


def _reference_prompt(tokenizer, n_image: int) -> str:
    """transformers' own rendering of the shared template (default server call), image run expanded."""
    from jinja2 import Environment  # noqa: F401 - transformers renders with jinja2

    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Table Recognition:"}]}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                         chat_template=TEMPLATE.read_text(encoding="utf-8"))
    assert text.count("<|image|>") == 1
    return text.replace("<|image|>", f"<|image|>×{n_image}")


def test_shipped_template_is_the_real_one_byte_for_byte(tiny_model_dir):
    from ocr_ft.train.tiny import CHAT_TEMPLATE_PATH

    assert CHAT_TEMPLATE_PATH.read_bytes() == TEMPLATE.read_bytes()
    assert (tiny_model_dir / "chat_template.jinja").read_bytes() == TEMPLATE.read_bytes()


def test_tiny_has_real_special_tokens_by_name(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    for t in REAL_SPECIALS:
        assert len(tok.encode(t, add_special_tokens=False)) == 1, t
    gen = json.loads((tiny_model_dir / "generation_config.json").read_text())
    assert sorted(gen["eos_token_id"]) == sorted(tok.convert_tokens_to_ids(["<|endoftext|>", "<|user|>"]))


def _template_dir(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A tokenizer directory whose chat template is loaded from the shared file (not the package's copy)."""
    from transformers import AutoTokenizer

    d = tmp_path / "tokdir"
    shutil.copytree(tiny_model_dir, d)
    (d / "chat_template.jinja").unlink()
    tok = AutoTokenizer.from_pretrained(d)
    tok.chat_template = TEMPLATE.read_text(encoding="utf-8")
    tok.save_pretrained(d)
    return d


@pytest.mark.parametrize("which", ["tiny", "shared_template_dir"])
def test_prompts_equal_real_template_rendering(which, tiny_model_dir, table_data, tmp_path):
    from ocr_ft.train.inspect_format import inspect_format
    from ocr_ft.train.modeling import load_processor

    model_dir = tiny_model_dir if which == "tiny" else _template_dir(tiny_model_dir, tmp_path)
    bundle = load_processor(model_dir, load_config(base_model=str(model_dir), max_pixels=28 * 28 * 48))
    rec = table_data["train"][0]
    report = inspect_format(bundle, table_data["data_dir"] / rec["image_path"], rec["ground_truth_html"])
    ref = _reference_prompt(bundle.tokenizer, report["image_tokens"])
    assert ref.endswith("Table Recognition:<|assistant|>\n") and "/nothink" not in ref and "<think>" not in ref
    assert report["generation_prompt_text"] == ref
    assert report["training_text"].startswith(ref)
    assert report["training_text"] == ref + rec["ground_truth_html"].strip() + "<|endoftext|>"
    assert report["supervised_text"] == rec["ground_truth_html"].strip() + "<|endoftext|>"
    assert report["served_prompt_text"] == ref
    req = report["endpoint_request"]
    assert "chat_template_kwargs" not in req and "base64 left out" in json.dumps(req)
    assert [p["type"] for p in req["messages"][0]["content"]] == ["image_url", "text"]


def test_serving_files_carry_template_and_pixel_budget(tiny_model_dir, tmp_path):
    from ocr_ft.train.modeling import load_processor, save_serving_files

    cfg = load_config(base_model=str(tiny_model_dir), max_pixels=28 * 28 * 48, min_pixels=28 * 28 * 4)
    bundle = load_processor(tiny_model_dir, cfg)
    out = save_serving_files(tmp_path / "srv", bundle, max_new_tokens=777)
    pre = json.loads((out / "preprocessor_config.json").read_text())
    assert pre["size"] == {"shortest_edge": 28 * 28 * 4 * 2, "longest_edge": 28 * 28 * 48 * 2}
    assert pre["ocr_ft_pixel_budget"] == {"min_pixels": 28 * 28 * 4, "max_pixels": 28 * 28 * 48}
    assert (out / "chat_template.jinja").read_bytes() == TEMPLATE.read_bytes()
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["max_new_tokens"] == 777 and sorted(gen["eos_token_id"]) == bundle.stop_token_ids
    # reloading the served directory gives the same pixel budget to the image processor
    from transformers import AutoImageProcessor

    back = AutoImageProcessor.from_pretrained(out, backend="pil")
    assert back.size["longest_edge"] == 28 * 28 * 48 * 2


def test_is_truncated():
    from types import SimpleNamespace

    from ocr_ft.train.inputs import is_truncated

    b = SimpleNamespace(stop_token_ids=[0, 5])
    assert is_truncated(b, [1, 2, 3], 3)
    assert not is_truncated(b, [1, 5, 0], 3)
    assert not is_truncated(b, [1, 2], 3)


@pytest.mark.slow
def test_cli_inspect_format_and_probe(tiny_model_dir, table_data, tmp_path, capsys):
    from ocr_ft.cli import main

    rec = table_data["train"][1]
    label = tmp_path / "l.html"
    label.write_text(rec["ground_truth_html"], encoding="utf-8")
    img = str(table_data["data_dir"] / rec["image_path"])
    img2 = str(table_data["data_dir"] / table_data["train"][2]["image_path"])
    assert main(["inspect-format", "--model", str(tiny_model_dir), "--image", img, "--label", str(label),
                 "--json", "--probe", "--image", img2, "--max-new-tokens", "4", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["training_text"].startswith(out["generation_prompt_text"])
    assert "<|image|>×" in out["training_text"] and out["training_text"].count("<|image|>") == 1
    assert len(out["probe"]) == 2
    for p in out["probe"]:
        assert p["new_tokens"] <= 4 and isinstance(p["raw_output"], str)
        assert p["truncated"] == (p["new_tokens"] == 4 and "<|endoftext|>" not in p["raw_output"]
                                  and "<|user|>" not in p["raw_output"])
    assert main(["inspect-format", "--model", str(tmp_path / "nope"), "--image", img]) == 1


def test_generation_budget_covers_the_longest_label(tiny_model_dir, table_data):
    from transformers import AutoTokenizer

    from ocr_ft.train.budget import generation_budget

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    labels = [r["ground_truth_html"] for r in table_data["train"]] + [table_data["oversized"]["ground_truth_html"]]
    longest = max(len(tok.encode(lb.strip(), add_special_tokens=False)) for lb in labels)
    n = generation_budget(tok, labels, margin=0.25, minimum=1)
    assert n >= longest + 1 and n == -(-(longest + 1) * 5 // 4)
    assert generation_budget(tok, [], minimum=64) == 64
    with pytest.raises(ValueError, match="margin"):
        generation_budget(tok, labels, margin=-1)


def test_llamafactory_export_trains_the_same_text(tiny_model_dir, tmp_path):
    """The export's user/assistant turns, rendered the way LLaMA-Factory's glm_ocr template does
    (``<|user|>\\n{content}<|assistant|>`` + ``\\n{answer}<|endoftext|>``, image placeholder expanded to the
    image block), give exactly the text ocr-ft trains on; the README states the one difference."""
    from PIL import Image
    from transformers import AutoTokenizer

    from ocr_ft.dataset.export import export_llamafactory
    from ocr_ft.dataset.records import Record
    from ocr_ft.train.inputs import ANSWER_PREFIX, render_prompt

    (tmp_path / "d").mkdir()
    Image.new("RGB", (56, 56), "white").save(tmp_path / "d" / "a.png")
    html = "  <table><tr><td>자산</td></tr></table>\n"
    rec = Record(image_path="a.png", ground_truth_html=html, nesting_level=1, source="existing",
                 category="plain", metadata={}, content_hash="h", image_sha256="ab" * 32,
                 image_width=56, image_height=56)
    export_llamafactory({"train": [rec]}, tmp_path / "d", tmp_path / "out")
    row = json.loads((tmp_path / "out" / "train_sharegpt.json").read_text())[0]
    user, answer = row["messages"][0]["content"], row["messages"][1]["content"]
    lf_text = ("[gMASK]<sop>" + "<|user|>\n" + user.replace("<image>", "<|begin_of_image|><|image|><|end_of_image|>")
               + "<|assistant|>" + "\n" + answer + "<|endoftext|>")
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ours = render_prompt(tok, "Table Recognition:") + ANSWER_PREFIX + html.strip() + "<|endoftext|>"
    assert lf_text == ours
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "supervised" in readme and "<think></think>" in readme


@pytest.mark.slow
def test_inspect_format_with_a_trained_adapter(trained_run, table_data, capsys):
    from ocr_ft.cli import main

    result, _ = trained_run
    rec = table_data["val"][0]
    img = str(table_data["data_dir"] / rec["image_path"])
    base = load_config(result.config_path).base_model
    assert main(["inspect-format", "--model", base, "--image", img, "--adapter", str(result.output_dir), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    # the adapter's own chat template (its serving files) renders the same prompt local evaluation uses
    assert out["served_prompt_text"] == out["generation_prompt_text"]
    assert out["max_pixels"] == load_config(result.config_path).max_pixels  # the run's pixel budget, not the seed's
