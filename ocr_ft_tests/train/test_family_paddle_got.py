"""What is particular to the PaddleOCR-VL and GOT-OCR 2.0 families, checked against transformers' own
processors on the tiny presets: the exact prompt, the image-token expansion, the real image geometry, LoRA
scope, the tokenizer keeping the table format's tags whole, and answers in OTSL / LaTeX tabular becoming HTML.
(test_families.py covers training, adapter reload, merge and generation for every family.)"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from ocr_ft.train.families import get_family
from ocr_ft.train.families import got_ocr2, paddleocr_vl

LABELS = [
    '<table><tr><td rowspan="2">자산</td><td colspan="2">1,234</td></tr><tr><td>부채</td><td>5%</td></tr></table>',
    "<table><thead><tr><th>구분</th><th>금액</th></tr></thead><tbody><tr><td>예금 &amp; 적금</td><td>56</td></tr></tbody></table>",
    "<table><tr><td>외부<table><tr><td>내부</td><td>7</td></tr></table></td><td>8</td></tr></table>",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """family name -> its tiny preset directory, built once."""
    out = {}
    for mod in (paddleocr_vl, got_ocr2):
        out[mod.FAMILY.name] = mod.build_tiny(tmp_path_factory.mktemp(mod.FAMILY.name) / "model", LABELS, seed=0)
    return out


def bundle_of(model_dir, family, max_pixels=28 * 28 * 64):
    from transformers import AutoImageProcessor, AutoTokenizer

    from ocr_ft.train.inputs import ProcessorBundle

    return ProcessorBundle(AutoTokenizer.from_pretrained(model_dir), AutoImageProcessor.from_pretrained(model_dir),
                           family.table_prompt, 28 * 28 * 4, max_pixels, source=str(model_dir), family=family)


def table_image(width=230, height=130) -> Image.Image:
    im = Image.new("RGB", (width, height), "white")
    for x in range(0, width, 40):
        for y in range(height):
            im.putpixel((x, y), (0, 0, 0))
    return im


# --------------------------------------------------------------------------- PaddleOCR-VL


def test_paddleocr_vl_prompt_is_the_chat_template_with_image_markers(tiny):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny["paddleocr_vl"])
    assert tok.chat_template == paddleocr_vl.CHAT_TEMPLATE_FILE.read_text(encoding="utf-8")
    text = paddleocr_vl.render_prompt(tok, "Table Recognition:")
    assert text == ("<|begin_of_sentence|>User: <|IMAGE_START|><|IMAGE_PLACEHOLDER|><|IMAGE_END|>"
                    "Table Recognition:\nAssistant: ")
    # what transformers 5 renders when left alone: the tokenizer's image_token reaches the template and the
    # start/end markers the model was trained with are gone - the reason render_prompt passes them
    plain = tok.apply_chat_template(paddleocr_vl.FAMILY.messages("Table Recognition:"), tokenize=False,
                                    add_generation_prompt=True)
    assert "<|IMAGE_START|>" not in plain and plain.count("<|IMAGE_PLACEHOLDER|>") == 1
    # an assistant turn ends with </s>, the family's EOS
    full = tok.apply_chat_template(paddleocr_vl.FAMILY.messages("Table Recognition:") + [
        {"role": "assistant", "content": [{"type": "text", "text": "<fcel>a<nl>"}]}], tokenize=False, image_token="I")
    assert full.endswith("Assistant: <fcel>a<nl></s>")


def test_paddleocr_vl_inputs_equal_the_official_processor(tiny):
    from transformers import AutoProcessor

    from ocr_ft.train.inputs import build_generation_batch

    bundle = bundle_of(tiny["paddleocr_vl"], paddleocr_vl.FAMILY)
    image = table_image()
    ours = build_generation_batch(bundle, [image])
    proc = AutoProcessor.from_pretrained(tiny["paddleocr_vl"])
    ref = proc(images=[image], text=[paddleocr_vl.render_prompt(bundle.tokenizer, bundle.prompt)],
               images_kwargs={"size": bundle.processor_size}, return_tensors="pt")
    assert ours["input_ids"].tolist() == ref["input_ids"].tolist()
    assert ours["mm_token_type_ids"].tolist() == ref["mm_token_type_ids"].tolist()
    assert torch.equal(ours["image_grid_thw"], ref["image_grid_thw"])
    assert torch.allclose(ours["pixel_values"], ref["pixel_values"])
    n = int((ours["input_ids"] == bundle.image_token_id).sum())
    assert n == int(ref["image_grid_thw"].prod()) // 4 == paddleocr_vl.FAMILY.image_tokens(bundle, *image.size)


def test_paddleocr_vl_real_geometry_counts_tokens_from_the_size_alone(tiny):
    """The real preprocessor values (147,384 .. 2,822,400 px, 14-px patches, 2x2 merge): the count from the size
    equals what the image processor produces, for small, wide and large images."""
    bundle = bundle_of(tiny["paddleocr_vl"], paddleocr_vl.FAMILY)
    bundle.image_processor = paddleocr_vl.image_processor()
    bundle.min_pixels, bundle.max_pixels = paddleocr_vl.PREPROCESSOR["min_pixels"], paddleocr_vl.PREPROCESSOR["max_pixels"]
    for w, h in ((300, 200), (2480, 600), (1654, 2339)):
        fields, n = paddleocr_vl.FAMILY.process_image(bundle, Image.new("RGB", (w, h), "white"))
        assert n == paddleocr_vl.FAMILY.image_tokens(bundle, w, h) == int(fields["image_grid_thw"].prod()) // 4
        assert fields["pixel_values"].shape[1:] == (3, 14, 14)  # temporal patch 1
    a4 = paddleocr_vl.FAMILY.image_tokens(bundle, 1654, 2339)  # an A4 page at 200 dpi: over the cap, scaled down
    assert a4 * 28 * 28 <= paddleocr_vl.PREPROCESSOR["max_pixels"] < 1654 * 2339 and a4 > 3000


def test_paddleocr_vl_answer_is_otsl_and_tokens_stay_whole(tiny):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny["paddleocr_vl"])
    fam = paddleocr_vl.FAMILY
    target = fam.to_target(LABELS[0])
    assert target == "<fcel>자산<fcel>1,234<lcel><nl><ucel><fcel>부채<fcel>5%<nl>"
    assert fam.to_target(LABELS[2]) == "<fcel>외부 내부 7<fcel>8<nl>"  # OTSL cannot nest: the text is kept
    pieces = tok.tokenize(target)
    assert {"<fcel>", "<lcel>", "<ucel>", "<nl>"} <= set(pieces)
    ids = tok.encode(target, add_special_tokens=False)
    assert tok.decode(ids, skip_special_tokens=True) == target  # the tags are ordinary tokens: decoding keeps them
    # model output -> HTML: ragged rows repaired, a stray span tag made a cell, chatter before the table dropped
    html = fam.extract_html("Assistant: <fcel>a<fcel>b<nl><fcel>c<nl><lcel>d<ucel><nl>")
    assert html == '<table><tr><td>a</td><td>b</td></tr><tr><td>c</td><td rowspan="2"></td></tr><tr><td>d</td></tr></table>'
    assert fam.extract_html("<table><tr><td>x</td></tr></table>") == "<table><tr><td>x</td></tr></table>"
    assert fam.extract_html("<fcel>a<fcel>b</s>") == "<table><tr><td>a</td><td>b</td></tr></table>"  # raw decode
    assert fam.extract_html("no table") == "" and fam.extract_html("<nl><nl>") == ""


# --------------------------------------------------------------------------- GOT-OCR 2.0


def test_got_ocr2_prompt_and_inputs_equal_the_official_processor(tiny):
    from transformers import AutoProcessor

    from ocr_ft.train.inputs import build_generation_batch, build_training_example

    bundle = bundle_of(tiny["got_ocr2"], got_ocr2.FAMILY)
    assert bundle.tokenizer.chat_template is None
    assert got_ocr2.render_prompt(bundle.tokenizer, bundle.prompt) == (
        "<|im_start|>system\nYou should follow the instructions carefully and explain your answers in detail."
        "<|im_end|><|im_start|>user\n<img><imgpad></img>\n OCR with format: <|im_end|><|im_start|>assistant\n")
    image = table_image(400, 90)
    ours = build_generation_batch(bundle, [image])
    proc = AutoProcessor.from_pretrained(tiny["got_ocr2"])
    n = got_ocr2.tokens_per_view(bundle)
    assert n == 16  # tiny: a 256-px view
    ref = proc(images=image, format=True, num_image_tokens=n, return_tensors="pt")
    assert ours["input_ids"].tolist() == ref["input_ids"].tolist()
    assert torch.allclose(ours["pixel_values"], ref["pixel_values"]) and ours["pixel_values"].shape == (1, 3, 256, 256)
    assert set(ours) == {"input_ids", "attention_mask", "pixel_values"}  # no grid, no token types
    ex = build_training_example(bundle, image, LABELS[0])
    answer = [t for t, lab in zip(ex["input_ids"], ex["labels"]) if lab != -100]
    im_end, endoftext = (bundle.tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>"))
    assert bundle.tokenizer.eos_token == "<|endoftext|>"  # Qwen's EOS, as the real GOT tokenizer has
    assert answer[-1] == im_end == bundle.eos_token_id  # but answers end as GOT's training ends them
    assert {im_end, endoftext} <= set(bundle.stop_token_ids)


def test_got_ocr2_real_view_is_256_tokens_whatever_the_image(tiny):
    bundle = bundle_of(tiny["got_ocr2"], got_ocr2.FAMILY)
    bundle.image_processor = got_ocr2.image_processor()  # the real 1024-px view
    assert got_ocr2.processor_size(bundle) == {"height": 1024, "width": 1024}
    for w, h in ((120, 80), (2480, 600), (1654, 2339)):
        assert got_ocr2.FAMILY.image_tokens(bundle, w, h) == 256
    fields, n = got_ocr2.FAMILY.process_image(bundle, Image.new("RGB", (700, 300), "white"))
    assert n == 256 and fields["pixel_values"].shape == (1, 3, 1024, 1024)


def test_got_ocr2_answer_is_latex_tabular_and_tokens_stay_whole(tiny):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny["got_ocr2"])
    fam = got_ocr2.FAMILY
    target = fam.to_target(LABELS[0])
    assert target == ("\\begin{tabular}{ccc}\n\\multirow{2}{*}{자산} & \\multicolumn{2}{c}{1,234} \\\\\n"
                      " & 부채 & 5\\% \\\\\n\\end{tabular}")
    assert "\\begin{tabular}{cc}\n내부 & 7" in fam.to_target(LABELS[2])  # nesting kept as a nested tabular
    pieces = tok.tokenize(target)
    assert {"\\begin{tabular}", "\\multirow", "\\multicolumn", " & ", " \\\\", "\\end{tabular}"} <= set(pieces)
    assert tok.decode(tok.encode(target, add_special_tokens=False)) == target
    for label in LABELS:  # back to HTML: the cells, spans and nesting survive; only th/thead are lost
        assert fam.extract_html(fam.to_target(label)) == label.replace("th>", "td>").replace(
            "<thead>", "").replace("</thead>", "").replace("<tbody>", "").replace("</tbody>", "")
    two = LABELS[0] + LABELS[2]
    assert fam.to_target(two).count("\\begin{tabular}") == 3 and fam.extract_html(fam.to_target(two)) == two
    with pytest.raises(ValueError, match="no table"):
        fam.to_target("<p>text</p>")
    mmd = "# 재무상태표\n\n\\begin{tabular}{|c|c|}\n\\hline 구분 & 금액 \\\\\n\\hline 예금 & 1 \\\\\n\\hline\n\\end{tabular}"
    assert fam.extract_html(mmd) == "<table><tr><td>구분</td><td>금액</td></tr><tr><td>예금</td><td>1</td></tr></table>"
    assert fam.extract_html("plain OCR text") == ""
    assert fam.extract_html("\\begin{tabular}{c} a \\end{tabular}<|im_end|>") == "<table><tr><td>a</td></tr></table>"


# --------------------------------------------------------------------------- both


@pytest.mark.parametrize("name, vision", [("paddleocr_vl", "model.visual"), ("got_ocr2", "model.vision_tower")])
def test_lora_goes_on_the_language_model_only_unless_vision_lora(name, vision, tiny):
    from ocr_ft.train.config import TINY_CONFIG_PATH, load_config
    from ocr_ft.train.modeling import apply_lora, load_base_model, lora_module_names

    for vision_lora in (False, True):
        cfg = load_config(TINY_CONFIG_PATH, base_model=str(tiny[name]), vision_lora=vision_lora)
        model = apply_lora(load_base_model(tiny[name], torch.float32, cfg), cfg)
        names = lora_module_names(model)
        lm = [n for n in names if n.startswith("model.language_model.")]
        vis = [n for n in names if n.startswith(vision + ".")]
        assert lm and {n.rsplit(".", 1)[-1] for n in lm} >= {"q_proj", "v_proj", "down_proj"}
        assert len(lm) + len(vis) == len(names)  # never the projector, never lm_head
        assert bool(vis) == vision_lora


@pytest.mark.parametrize("mod", [paddleocr_vl, got_ocr2], ids=["paddleocr_vl", "got_ocr2"])
def test_tiny_build_is_deterministic_and_loads_offline(mod, tiny, tmp_path, monkeypatch):
    from transformers import AutoConfig, AutoModelForImageTextToText

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    first = tiny[mod.FAMILY.name]
    again = mod.build_tiny(tmp_path / "again", LABELS, seed=0)
    for name in ("model.safetensors", "tokenizer.json", "config.json", "preprocessor_config.json"):
        assert (first / name).read_bytes() == (again / name).read_bytes(), name
    cfg = AutoConfig.from_pretrained(again, local_files_only=True)
    assert cfg.model_type in mod.FAMILY.model_types
    model = AutoModelForImageTextToText.from_pretrained(again, local_files_only=True)
    assert type(model).__name__ == cfg.architectures[0] and sum(p.numel() for p in model.parameters()) < 5_000_000
    with pytest.raises(ValueError, match="at least one non-empty label"):
        mod.build_tiny(tmp_path / "none", ["", "  "])


def test_families_are_registered_with_their_own_formats():
    assert get_family("paddleocr_vl") is paddleocr_vl.FAMILY and paddleocr_vl.FAMILY.answer_format == "otsl"
    assert get_family("got_ocr2") is got_ocr2.FAMILY and got_ocr2.FAMILY.answer_format == "latex"
    assert paddleocr_vl.FAMILY.llamafactory_template is None and got_ocr2.FAMILY.llamafactory_template is None


@pytest.mark.parametrize("name", ["paddleocr_vl", "got_ocr2"])
def test_batched_generation_equals_one_image_at_a_time(name, tiny):
    """Left padding (PaddleOCR-VL: M-RoPE positions from mm_token_type_ids; GOT: plain positions) changes nothing."""
    from ocr_ft.train.config import TINY_CONFIG_PATH, load_config
    from ocr_ft.train.modeling import generate_outputs, load_model_and_processor

    cfg = load_config(TINY_CONFIG_PATH, base_model=str(tiny[name]), max_pixels=28 * 28 * 64)
    model, bundle = load_model_and_processor(tiny[name], cfg, device="cpu")
    images = [table_image(230, 130), Image.effect_noise((120, 300), 60).convert("RGB")]
    alone = [generate_outputs(model, bundle, [im], max_new_tokens=10)[0] for im in images]
    together = generate_outputs(model, bundle, images, max_new_tokens=10, batch_size=2)
    assert [g.raw for g in together] == [g.raw for g in alone]
    assert all(0 < g.new_tokens <= 10 for g in together)


def test_own_training_formats_erniekit_and_got(tmp_path):
    import json

    from ocr_ft.storage import read_jsonl

    n, left = paddleocr_vl.write_erniekit_jsonl(
        [("images/a.png", LABELS[0]), ("images/b.png", LABELS[0] + LABELS[1])], tmp_path / "train.jsonl")
    assert n == 1 and left[0][0] == "images/b.png" and "exactly one table" in left[0][1]
    (row,) = read_jsonl(tmp_path / "train.jsonl")
    assert row == {"image_info": [{"matched_text_index": 0, "image_url": "images/a.png"}],
                   "text_info": [{"text": "Table Recognition:", "tag": "mask"},
                                 {"text": paddleocr_vl.to_target(LABELS[0]), "tag": "no_mask"}]}
    n, left = got_ocr2.write_got_json([("images/a.png", LABELS[2]), ("images/c.png", "<p>none</p>")],
                                      tmp_path / "got.json")
    assert n == 1 and left == [("images/c.png", "the label holds no table")]
    (rec,) = json.loads((tmp_path / "got.json").read_text(encoding="utf-8"))
    assert rec["image"] == "images/a.png"
    assert rec["conversations"][0] == {"from": "human", "value": "<image>\nOCR with format: "}
    assert got_ocr2.FAMILY.extract_html(rec["conversations"][1]["value"]) == LABELS[2]


def test_native_export_is_wired_for_both_families():
    assert paddleocr_vl.FAMILY.native_export is paddleocr_vl.write_erniekit_jsonl
    assert paddleocr_vl.FAMILY.native_export_suffix == ".jsonl" and "ERNIEKit" in paddleocr_vl.FAMILY.native_export_format
    assert got_ocr2.FAMILY.native_export is got_ocr2.write_got_json and got_ocr2.FAMILY.native_export_suffix == ".json"
