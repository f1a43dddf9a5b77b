"""Every registered base-model family, offline on CPU through its tiny preset: registry lookups, inputs and
token budget, a short training run that lowers the loss, the adapter reloading to the same outputs, the merge
check, generation -> extract_html, inspect-format and the LLaMA-Factory export. Families added to the registry
are tested here automatically."""

from __future__ import annotations

import json
import re

import pytest
import torch
import yaml

from ocr_ft.train.families import FAMILIES, UnknownFamilyError, family_of, get_family, list_families

NAMES = list(FAMILIES)
SAMPLE_HTML = '<table><tr><td rowspan="2">매출액</td><td>1,234</td></tr><tr><td>56</td></tr></table>'


@pytest.fixture(scope="session")
def family_model(tmp_path_factory, table_data):
    """name -> the family's tiny preset directory, built once per session on the table labels."""
    built: dict = {}
    texts = [r["ground_truth_html"] for r in table_data["train"] + table_data["val"]] + [SAMPLE_HTML]

    def get(name: str):
        if name not in built:
            fam = FAMILIES[name]
            built[name] = fam.build_tiny(tmp_path_factory.mktemp(fam.tiny_preset) / "model", texts, seed=0)
        return built[name]

    return get


def family_config(model_dir, **kw):
    from ocr_ft.train.config import TINY_CONFIG_PATH, load_config

    values = dict(base_model=str(model_dir), max_seq_len=640, max_pixels=28 * 28 * 48, learning_rate=1e-2,
                  warmup_ratio=0.0, num_epochs=1, max_steps=6, per_device_batch_size=2,
                  gradient_accumulation_steps=1, save_steps=100, logging_steps=1, eval_steps=None,
                  max_eval_samples=2, report_to="none")
    values.update(kw)
    return load_config(TINY_CONFIG_PATH, **values)


def cell_texts(html: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", html, re.S)]


# --------------------------------------------------------------------------- registry


def test_registry_lookups_and_unknown_model_type_lists_every_family():
    assert NAMES[0] == "glm_ocr" and FAMILIES["glm_ocr"].tiny_preset == "tiny"
    seen_types = [t for f in list_families() for t in f.model_types]
    assert len(seen_types) == len(set(seen_types)), "a model_type is claimed by two families"
    assert len({f.tiny_preset for f in list_families()}) == len(NAMES)
    for fam in list_families():
        for key in (fam.name, fam.tiny_preset, fam.default_hub_id):
            assert family_of(key) is fam
        for mt in fam.model_types:
            assert family_of({"model_type": mt}) is fam
    with pytest.raises(UnknownFamilyError) as err:
        family_of({"model_type": "llama"})
    assert "'llama'" in str(err.value) and all(name in str(err.value) for name in NAMES)
    with pytest.raises(UnknownFamilyError, match="unknown model family 'nope'"):
        get_family("nope")


def test_check_model_dir_names_the_model_type_and_the_families(tmp_path):
    from ocr_ft.train.modeling import BaseModelError, check_model_dir

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}), encoding="utf-8")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(BaseModelError) as err:
        check_model_dir(tmp_path)
    assert "'llama'" in str(err.value) and all(name in str(err.value) for name in NAMES)


def test_family_name_resolves_to_its_hub_id_and_tiny_preset_asks_to_be_built():
    from ocr_ft.train.modeling import BaseModelError, resolve_base_model

    for fam in list_families():
        assert resolve_base_model(fam.name) == fam.default_hub_id
        with pytest.raises(BaseModelError, match=f"--preset {re.escape(fam.tiny_preset)}"):
            resolve_base_model(fam.tiny_preset)


@pytest.mark.parametrize("name", NAMES)
def test_answer_format_round_trip_keeps_the_cells(name):
    fam = FAMILIES[name]
    target = fam.to_target(SAMPLE_HTML)
    assert target.strip()
    html = fam.extract_html(target)
    assert html.startswith("<table") and cell_texts(html) == cell_texts(SAMPLE_HTML)
    assert fam.extract_html("") == "" and fam.extract_html("no table here") == ""


def test_models_cli_prints_one_line_per_family(capsys):
    from ocr_ft.cli import main

    assert main(["models"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(NAMES)
    for line, fam in zip(lines, list_families()):
        cols = line.split("\t")
        assert cols[0] == fam.name and cols[1] == fam.auto_model_class and fam.default_hub_id in cols
        assert repr(fam.table_prompt) in line and f"tiny={fam.tiny_preset}" in cols


# --------------------------------------------------------------------------- per family, on the tiny preset


@pytest.mark.parametrize("name", NAMES)
def test_tiny_preset_loads_with_the_family_prompt_and_exact_budget(name, family_model, table_data):
    from ocr_ft.train.budget import check_budget
    from ocr_ft.train.inputs import build_training_example, load_image
    from ocr_ft.train.modeling import load_processor

    fam = FAMILIES[name]
    model_dir = family_model(name)
    assert json.loads((model_dir / "config.json").read_text())["model_type"] in fam.model_types
    bundle = load_processor(model_dir, family_config(model_dir, prompt="Table Recognition:"))
    assert bundle.family is fam and bundle.prompt == fam.table_prompt  # seed prompt -> the family's own
    assert bundle.eos_token_id in bundle.stop_token_ids
    rec = table_data["train"][0]
    report = check_budget(bundle, [rec], table_data["data_dir"], 640)
    assert report.kept == [rec], report.left_out
    ex = build_training_example(bundle, load_image(table_data["data_dir"] / rec["image_path"]), rec["ground_truth_html"])
    count = report.counts[0]
    assert count.total == len(ex["input_ids"])  # the budget is the real sequence length
    assert count.image == ex["input_ids"].count(bundle.image_token_id) > 0
    supervised = [t for t, lab in zip(ex["input_ids"], ex["labels"]) if lab != -100]
    assert supervised[-1] == bundle.eos_token_id
    assert bundle.tokenizer.decode(supervised[:-1]) == fam.to_target(rec["ground_truth_html"]).strip()


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_training_lowers_loss_adapter_reloads_merge_and_generate(name, family_model, table_data, tmp_path):
    from ocr_ft.evaluate.predictors import extract_table_html
    from ocr_ft.train.inputs import load_image
    from ocr_ft.train.modeling import generate_outputs, load_finetuned, merge_adapter
    from ocr_ft.train.trainer import eval_loss, train

    fam = FAMILIES[name]
    model_dir = family_model(name)
    cfg = family_config(model_dir)
    records, val = table_data["train"][:4], table_data["val"][:2]
    result = train(cfg, records, val, table_data["data_dir"], tmp_path / "run")
    s = result.summary
    assert s["steps"] == 6 and s["final_train_loss"] < s["initial_train_loss"]

    model, bundle, run_cfg = load_finetuned(tmp_path / "run", device="cpu")
    assert bundle.family is fam
    again = eval_loss(model, bundle, val, table_data["data_dir"], 2, torch.device("cpu"))
    assert again == pytest.approx(s["final_eval_loss"], rel=1e-4)  # the saved adapter is the trained one

    image = load_image(table_data["data_dir"] / val[0]["image_path"])
    [g] = generate_outputs(model, bundle, [image], max_new_tokens=12)
    assert isinstance(g.text, str) and 0 < g.new_tokens <= 12
    html = extract_table_html(g.text)  # Generated.text is HTML for every family (own formats converted)
    assert html == "" or html.startswith("<table")
    assert fam.extract_html(g.raw if fam.answer_format != "html" else g.text) == html

    merged = merge_adapter(str(model_dir), result.adapter_dir, tmp_path / "merged", check_records=val[:1],
                           data_dir=table_data["data_dir"], config=run_cfg, max_new_tokens=8)
    assert merged.checked == 1 and (tmp_path / "merged" / "config.json").is_file()


@pytest.mark.parametrize("name", NAMES)
def test_inspect_format_prints_the_family_prompt(name, family_model, table_data, capsys):
    from ocr_ft.train.inspect_format import main

    model_dir = family_model(name)
    image = table_data["data_dir"] / table_data["train"][0]["image_path"]
    assert main(["--model", str(model_dir), "--image", str(image), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    fam = FAMILIES[name]
    assert report["family"] == name and report["answer_format"] == fam.answer_format
    assert report["image_tokens"] > 0 and f"×{report['image_tokens']}" in report["training_text"]
    assert fam.table_prompt in report["generation_prompt_text"]


@pytest.mark.parametrize("name", NAMES)
def test_llamafactory_export_uses_the_family_template_or_says_why_not(name, family_model, tmp_path):
    from ocr_ft.train.llamafactory import NoTemplateError, write_llamafactory_config

    fam = FAMILIES[name]
    cfg = family_config(family_model(name))
    if fam.llamafactory_template is None:
        with pytest.raises(NoTemplateError, match=re.escape(fam.title)):
            write_llamafactory_config(cfg, tmp_path / "lf.yaml", dataset_dir=".")
        return
    path = write_llamafactory_config(cfg, tmp_path / "lf.yaml", dataset_dir=".")
    text = path.read_text(encoding="utf-8")
    y = yaml.safe_load(text)
    assert y["template"] == fam.llamafactory_template and f"template {fam.llamafactory_template})" in text
    assert y["model_name_or_path"] == str(family_model(name)) and y["freeze_vision_tower"] is True


def _tiny_variant(qwen_dir, out, model_type):
    """The tiny Qwen2.5-VL directory with its weights and config swapped for a tiny ``model_type`` model (same
    tokenizer and token ids): Qwen2-VL (14-px patches) or Qwen3-VL (16-px patches, deepstack)."""
    import shutil

    import transformers as T
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    src = json.loads((qwen_dir / "config.json").read_text())
    ids = {k: src[k] for k in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")}
    text = {k: src["text_config"][k] for k in ("vocab_size", "pad_token_id", "bos_token_id", "eos_token_id")}
    text.update(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2)
    rope = {"rope_type": "default", "mrope_section": [8, 12, 12], "rope_theta": 10000.0}
    if model_type == "qwen2_vl":
        cfg = T.Qwen2VLConfig(text_config=dict(text, rope_parameters=rope), **ids, vision_config=dict(
            depth=2, embed_dim=64, hidden_size=256, num_heads=2, mlp_ratio=2, patch_size=14))
        model_cls, ip = T.Qwen2VLForConditionalGeneration, Qwen2VLImageProcessorPil()
    else:
        cfg = T.Qwen3VLConfig(text_config=dict(text, head_dim=64, rope_parameters=dict(rope, mrope_interleaved=True)),
                              **ids, vision_config=dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=2,
                                                        out_hidden_size=256, patch_size=16, num_position_embeddings=64,
                                                        deepstack_visual_indexes=[1]))
        model_cls, ip = T.Qwen3VLForConditionalGeneration, Qwen2VLImageProcessorPil(patch_size=16)
    shutil.copytree(qwen_dir, out)
    (out / "model.safetensors").unlink()
    torch.manual_seed(0)
    model_cls(cfg).save_pretrained(out)
    ip.save_pretrained(out)
    return out


@pytest.mark.skipif("qwen_vl" not in FAMILIES, reason="no Qwen-VL family registered")
@pytest.mark.parametrize("model_type", ["qwen2_vl", "qwen3_vl"])
def test_qwen_vl_family_takes_qwen2_vl_and_qwen3_vl(model_type, family_model, table_data, tmp_path):
    from ocr_ft.train.inputs import TrainingCollator, load_image
    from ocr_ft.train.modeling import apply_lora, generate_outputs, load_model_and_processor, lora_module_names
    from ocr_ft.train.trainer import answer_loss_sum

    model_dir = _tiny_variant(family_model("qwen_vl"), tmp_path / model_type, model_type)
    cfg = family_config(model_dir)
    model, bundle = load_model_and_processor(model_dir, cfg, device="cpu")
    assert type(model).__name__.lower().startswith(model_type.replace("_", "")) and bundle.family.name == "qwen_vl"
    assert bundle.patch_size == (16 if model_type == "qwen3_vl" else 14)
    recs = table_data["train"][:2]
    images = [load_image(table_data["data_dir"] / r["image_path"]) for r in recs]
    batch = TrainingCollator(bundle)([(im, r["ground_truth_html"]) for im, r in zip(images, recs)])
    w, h = images[0].size
    assert int((batch["input_ids"][0] == bundle.image_token_id).sum()) == bundle.family.image_tokens(bundle, w, h)
    loss, n = answer_loss_sum(model, batch)
    assert n > 0 and torch.isfinite(loss)
    outs = generate_outputs(model, bundle, images, max_new_tokens=3, batch_size=2)  # left-padded batch
    assert [0 < g.new_tokens <= 3 for g in outs] == [True, True]
    names = lora_module_names(apply_lora(model, cfg))
    assert names and all(".language_model." in x for x in names)


@pytest.mark.parametrize("name", NAMES)
def test_dry_run_plan_names_the_family_and_its_prompt(name, family_model, table_data):
    from ocr_ft.train.budget import plan

    fam = FAMILIES[name]
    p = plan(family_config(family_model(name)), table_data["train"][:4], table_data["data_dir"])
    d = p.to_dict()
    assert d["family"] == name and d["prompt"] == fam.table_prompt and d["train"]["kept"] == 4
    assert f"({name}, prompt {fam.table_prompt!r})" in p.format()


def test_qwen_vl_prompt_is_the_served_qwen2_5_vl_form_and_tokenizes_as_one_string(family_model, table_data):
    from ocr_ft.train.inputs import build_prompt_inputs, load_image
    from ocr_ft.train.modeling import load_processor

    fam = FAMILIES["qwen_vl"]
    bundle = load_processor(family_model("qwen_vl"), family_config(family_model("qwen_vl")))
    text = bundle.tokenizer.apply_chat_template(fam.messages(bundle.prompt), tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                    f"<|vision_start|><|image_pad|><|vision_end|>{fam.table_prompt}<|im_end|>\n<|im_start|>assistant\n")
    image = load_image(table_data["data_dir"] / table_data["train"][0]["image_path"])
    ours = build_prompt_inputs(bundle, image)
    n = int(ours["image_grid_thw"].prod()) // 4
    whole = bundle.tokenizer(text.replace("<|image_pad|>", "<|image_pad|>" * n), add_special_tokens=False)["input_ids"]
    assert ours["input_ids"][0].tolist() == whole  # what Qwen2_5_VLProcessor's text expansion tokenizes
    assert ours["mm_token_type_ids"][0].tolist() == [int(t == bundle.image_token_id) for t in whole]


@pytest.mark.parametrize("name", NAMES)
def test_serving_preprocessor_config_resizes_like_training(name, family_model, table_data, tmp_path):
    """What a server loads from the saved preprocessor_config.json gives the training pixels and grid."""
    from transformers import AutoImageProcessor

    from ocr_ft.train.inputs import image_fields, load_image
    from ocr_ft.train.modeling import load_processor, save_serving_files

    bundle = load_processor(family_model(name), family_config(family_model(name)))
    save_serving_files(tmp_path, bundle)
    served = AutoImageProcessor.from_pretrained(tmp_path, backend="pil")
    # larger than the tests' pixel cap, so the cap decides the resolution
    image = load_image(table_data["data_dir"] / table_data["train"][1]["image_path"]).resize((840, 336))
    ours, n = image_fields(bundle, image)
    ref = served(images=[image], return_tensors="pt")
    assert n == bundle.family.image_tokens(bundle, *image.size)
    for key, value in ours.items():
        assert ref[key].shape == value.shape and torch.allclose(ref[key].to(value.dtype), value), key
    default = type(served)()(images=[image], return_tensors="pt")  # the processor's own defaults differ
    assert default["pixel_values"].shape != ours["pixel_values"].shape


def test_label_a_family_format_cannot_hold_is_left_out_by_name_and_answer_end_token(family_model, table_data):
    """A family whose target format refuses a label (e.g. OTSL: one table per answer) leaves that sample out
    with the reason, instead of failing the run; ``answer_end_token`` replaces EOS at the end of answers."""
    import dataclasses

    from ocr_ft.train.budget import check_budget
    from ocr_ft.train.inputs import ProcessorBundle, build_training_example, load_image
    from ocr_ft.train.modeling import load_processor

    def one_table_only(html: str) -> str:
        if html.count("<table") != 1:
            raise ValueError(f"{html.count('<table')} tables")
        return html

    glm = load_processor(family_model("glm_ocr"), family_config(family_model("glm_ocr")))
    fam = dataclasses.replace(FAMILIES["glm_ocr"], name="strict", to_target=one_table_only,
                              answer_end_token="<|user|>")
    bundle = ProcessorBundle(glm.tokenizer, glm.image_processor, glm.prompt, glm.min_pixels, glm.max_pixels,
                             family=fam)
    good = table_data["train"][0]
    two = {**table_data["train"][1], "ground_truth_html": good["ground_truth_html"] * 2,
           "metadata": {"original_filename": "two_tables.png"}}
    report = check_budget(bundle, [good, two], table_data["data_dir"], 640)
    assert report.kept == [good]
    [out] = report.left_out
    assert (out.name, out.reason) == ("two_tables.png", "label_format") and "2 tables" in out.detail

    user = glm.tokenizer.convert_tokens_to_ids("<|user|>")
    assert bundle.eos_token_id == user != glm.eos_token_id and {user, glm.eos_token_id} <= set(bundle.stop_token_ids)
    ex = build_training_example(bundle, load_image(table_data["data_dir"] / good["image_path"]), good["ground_truth_html"])
    assert ex["input_ids"][-1] == user and ex["labels"][-1] == user


NATIVE = [n for n in NAMES if FAMILIES[n].native_export is not None]


@pytest.mark.parametrize("name", NATIVE)
def test_native_export_cli_writes_the_family_format(name, table_data, tmp_path, capsys):
    from ocr_ft.storage import atomic_write_jsonl
    from ocr_ft.train.cli import main

    fam = FAMILIES[name]
    recs = table_data["train"][:3]
    atomic_write_jsonl(tmp_path / "train.jsonl", recs)
    out = tmp_path / f"train{fam.native_export_suffix}"
    assert main(["native-export", "--base-model", name, "--split", str(tmp_path / "train.jsonl"),
                 "--data-dir", str(table_data["data_dir"]), "--out", str(out)]) == 0
    assert out.is_file() and out.stat().st_size > 0
    assert f"wrote 3 sample(s) as {fam.native_export_format or fam.title}" in capsys.readouterr().out


def test_native_export_refuses_a_family_without_one_naming_it(table_data, tmp_path, capsys):
    from ocr_ft.storage import atomic_write_jsonl
    from ocr_ft.train.cli import main

    atomic_write_jsonl(tmp_path / "train.jsonl", table_data["train"][:1])
    assert main(["native-export", "--base-model", "glm_ocr", "--split", str(tmp_path / "train.jsonl"),
                 "--data-dir", str(table_data["data_dir"]), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "GLM-OCR has no native export" in err and "ocr-ft train llamafactory" in err
    assert not (tmp_path / "x").exists()


def test_tiny_qwen_vl_is_deterministic_and_ships_the_real_template(tmp_path):
    from ocr_ft.storage import sha256_file
    from ocr_ft.train.families.qwen_vl import CHAT_TEMPLATE_PATH

    fam = FAMILIES["qwen_vl"]

    def digest(d):
        return {p.name: sha256_file(p) for p in sorted(d.iterdir())}

    a = digest(fam.build_tiny(tmp_path / "a", [SAMPLE_HTML], seed=3))
    b = digest(fam.build_tiny(tmp_path / "b", [SAMPLE_HTML], seed=3))
    c = digest(fam.build_tiny(tmp_path / "c", [SAMPLE_HTML], seed=4))
    assert a == b and a["model.safetensors"] != c["model.safetensors"] and a["tokenizer.json"] == c["tokenizer.json"]
    assert (tmp_path / "a" / "chat_template.jinja").read_text(encoding="utf-8") == CHAT_TEMPLATE_PATH.read_text(
        encoding="utf-8")
    with pytest.raises(ValueError, match="non-empty label"):
        fam.build_tiny(tmp_path / "d", ["  "])


def test_own_format_answers_are_converted_from_the_raw_decode(family_model, table_data):
    """A family with its own format sees the output with special tokens kept (a real vocabulary may mark its
    format tags special), up to the first stop token; `Generated.text` is the converted HTML."""
    import dataclasses

    from ocr_ft.train.inputs import ProcessorBundle, load_image
    from ocr_ft.train.modeling import generate_outputs, load_processor

    glm = load_processor(family_model("glm_ocr"), family_config(family_model("glm_ocr")))
    tok = glm.tokenizer
    seen = []

    def to_html(text: str) -> str:  # "<sop>" (a special token here) marks a cell in this made-up format
        seen.append(text)
        cell = text.split("<sop>")[1].split("<|endoftext|>")[0]  # the family strips its own stop token
        return f"<table><tr><td>{cell}</td></tr></table>"

    fam = dataclasses.replace(FAMILIES["glm_ocr"], name="own", answer_format="own", to_html=to_html)
    bundle = ProcessorBundle(tok, glm.image_processor, glm.prompt, glm.min_pixels, glm.max_pixels, family=fam)
    answer = tok.encode("<sop>42", add_special_tokens=False) + [bundle.eos_token_id] + tok.encode("7", add_special_tokens=False)

    class Stub(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def generate(self, input_ids, **kw):
            return torch.cat([input_ids, torch.tensor([answer] * len(input_ids))], dim=1)

    image = load_image(table_data["data_dir"] / table_data["train"][0]["image_path"])
    [g] = generate_outputs(Stub(), bundle, [image], max_new_tokens=8)
    assert seen == [g.raw] and "<sop>" in g.raw and "7" not in g.raw  # raw: special tokens kept, cut at the stop
    assert g.text == "<table><tr><td>42</td></tr></table>" and g.new_tokens == len(answer) - 1


@pytest.mark.parametrize("name", NAMES)
def test_lora_is_scoped_to_the_family_language_model_unless_vision_lora(name, family_model):
    from ocr_ft.train.modeling import apply_lora, load_base_model, lora_module_names

    fam = FAMILIES[name]
    cfg = family_config(family_model(name))
    lm, vis = fam.language_model_path + ".", fam.vision_tower_path + "."
    plain = lora_module_names(apply_lora(load_base_model(cfg.base_model, torch.float32, cfg), cfg))
    assert plain and all(n.startswith(lm) for n in plain)
    both = lora_module_names(apply_lora(load_base_model(cfg.base_model, torch.float32, cfg), cfg.replace(vision_lora=True)))
    assert set(plain) < set(both) and any(n.startswith(vis) for n in both)
    assert all(n.startswith((lm, vis)) for n in both)
    for targets in ("attention", "mlp"):  # narrower choices work on both towers too (no non-linear module hit)
        some = lora_module_names(apply_lora(load_base_model(cfg.base_model, torch.float32, cfg),
                                            cfg.replace(vision_lora=True, lora_targets=targets)))
        assert some and set(some) < set(both)
