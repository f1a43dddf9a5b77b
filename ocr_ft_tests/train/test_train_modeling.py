"""Model loading errors, LoRA target scoping, adapter save/reload, merge."""

from __future__ import annotations

from pathlib import Path

import json
import shutil

import pytest
import torch
from PIL import Image

from ocr_ft.train.inputs import build_prompt_inputs
from ocr_ft.train.modeling import (
    BaseModelError,
    MergeMismatchError,
    apply_lora,
    generate_html,
    load_base_model,
    load_finetuned,
    load_model_and_processor,
    lora_module_names,
    merge_adapter,
)


# --------------------------------------------------------------------------- clear errors


def test_missing_base_model_dir_is_named(tmp_path, tiny_config):
    missing = tmp_path / "no-model-here"
    with pytest.raises(BaseModelError, match="no-model-here"):
        load_model_and_processor(str(missing), tiny_config)


@pytest.mark.parametrize("damage,match", [
    ("config_garbage", "config.json is unreadable"),
    ("config_missing", "config.json is missing"),
    ("weights_missing", "no weights found"),
    ("wrong_type", "expected a GLM-OCR model"),
])
def test_corrupt_base_model_is_named(tmp_path, tiny_model_dir, tiny_config, damage, match):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    cfg = broken / "config.json"
    if damage == "config_garbage":
        cfg.write_text("{not json", encoding="utf-8")
    elif damage == "config_missing":
        cfg.unlink()
    elif damage == "weights_missing":
        (broken / "model.safetensors").unlink()
    else:
        cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "model_type": "llama"}), encoding="utf-8")
    with pytest.raises(BaseModelError, match=match) as err:
        load_model_and_processor(str(broken), tiny_config.replace(base_model=str(broken)))
    assert str(broken) in str(err.value)


def test_truncated_weights_are_named(tmp_path, tiny_model_dir, tiny_config):
    broken = tmp_path / "truncated"
    shutil.copytree(tiny_model_dir, broken)
    w = broken / "model.safetensors"
    w.write_bytes(w.read_bytes()[:1000])
    with pytest.raises(BaseModelError, match="weights of base model") as err:
        load_base_model(str(broken), torch.float32, tiny_config)
    assert str(broken) in str(err.value)


def test_uncached_hub_id_offline_is_named(monkeypatch, tiny_config):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BaseModelError, match="no-such-org/no-such-glm-ocr.*offline"):
        load_model_and_processor("no-such-org/no-such-glm-ocr", tiny_config.replace(local_files_only=None))


def test_missing_adapter_is_named(tmp_path, tiny_config):
    with pytest.raises(BaseModelError, match="adapter not found.*nothing-here"):
        load_model_and_processor(tiny_config.base_model, tiny_config, adapter_dir=tmp_path / "nothing-here")


# --------------------------------------------------------------------------- LoRA scoping


def test_lora_targets_only_the_language_model(tiny_config):
    plain = load_base_model(tiny_config.base_model, torch.float32, tiny_config)
    lm_linears = {n for n, m in plain.model.language_model.named_modules() if isinstance(m, torch.nn.Linear)}
    model = apply_lora(plain, tiny_config)
    names = lora_module_names(model)
    assert names and not any(".visual." in n for n in names) and not any("lm_head" in n for n in names)
    base = model.get_base_model()
    assert {n.split("language_model.", 1)[1] for n in names} == lm_linears  # every LM linear layer
    assert any(n.endswith("mlp.down_proj") for n in names)
    # the vision tower (which also has down_proj) is frozen
    assert not any(p.requires_grad for p in base.model.visual.parameters())
    assert all(("lora_" in n) == p.requires_grad for n, p in model.named_parameters())


def test_vision_lora_adds_the_vision_tower(tiny_config):
    cfg = tiny_config.replace(vision_lora=True)
    names = lora_module_names(apply_lora(load_base_model(cfg.base_model, torch.float32, cfg), cfg))
    assert any(".visual.blocks." in n and n.endswith("mlp.down_proj") for n in names)
    assert any(".language_model." in n for n in names)


# --------------------------------------------------------------------------- save / reload / merge


def test_adapter_saves_and_reloads_to_the_same_logits(tmp_path, tiny_config):
    model = apply_lora(load_base_model(tiny_config.base_model, torch.float32, tiny_config), tiny_config).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)  # B starts at zero; make the adapter matter
    base, bundle = load_model_and_processor(tiny_config.base_model, tiny_config, device="cpu")
    inputs = build_prompt_inputs(bundle, Image.new("RGB", (224, 84), "white"))
    model.save_pretrained(tmp_path / "adapter")
    reloaded, _ = load_model_and_processor(tiny_config.base_model, tiny_config, adapter_dir=tmp_path / "adapter")
    with torch.no_grad():
        before, after, base_out = (m(**inputs).logits for m in (model, reloaded, base))
    assert torch.equal(before, after)
    assert not torch.allclose(before, base_out)  # the adapter changes the outputs


def test_merged_equals_adapter_greedy(trained_run, table_data, tmp_path):
    result, _ = trained_run
    model, bundle, config = load_finetuned(result.output_dir)
    records = table_data["val"][:2]
    res = merge_adapter(config.base_model, result.adapter_dir, tmp_path / "merged", check_records=records,
                        data_dir=table_data["data_dir"], config=config, max_new_tokens=16)
    assert res.checked == 2 and (tmp_path / "merged" / "config.json").is_file()
    images = [table_data["data_dir"] / r["image_path"] for r in records]
    merged, mb = load_model_and_processor(tmp_path / "merged", config.replace(base_model=str(tmp_path / "merged")))
    assert generate_html(merged, mb, images, max_new_tokens=16) == generate_html(model, bundle, images, max_new_tokens=16)
    assert res.outputs == generate_html(model, bundle, images, max_new_tokens=16)
    # issue 11: the merged model and the adapter carry the training format and pixel budget for a server
    import json as _json

    from factories import shared_external

    template = shared_external("glm_ocr", "chat_template.jinja").read_bytes()
    for d in (tmp_path / "merged", Path(result.adapter_dir)):
        pre = _json.loads((d / "preprocessor_config.json").read_text())
        assert pre["size"] == {"shortest_edge": config.min_pixels * 2, "longest_edge": config.max_pixels * 2}, d
        assert (d / "chat_template.jinja").read_bytes() == template, d
        gen = _json.loads((d / "generation_config.json").read_text())
        assert sorted(gen["eos_token_id"]) == bundle.stop_token_ids and gen["do_sample"] is False, d


def test_merge_mismatch_raises_and_writes_nothing(trained_run, table_data, tmp_path, monkeypatch):
    import ocr_ft.train.modeling as modeling

    from ocr_ft.train.config import load_config

    result, _ = trained_run
    config = load_config(result.config_path)
    calls = iter([["<table>a</table>"], ["<table>b</table>"]])  # adapter output, then merged output
    monkeypatch.setattr(modeling, "generate_html", lambda *a, **k: next(calls))
    with pytest.raises(MergeMismatchError, match="differs from adapter"):
        merge_adapter(config.base_model, result.adapter_dir, tmp_path / "m", check_records=table_data["val"][:1],
                      data_dir=table_data["data_dir"], config=config)
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("targets, parent", [("attention", "self_attn"), ("mlp", "mlp")])
def test_lora_targets_narrow_to_attention_or_mlp(tiny_config, targets, parent):
    cfg = tiny_config.replace(lora_targets=targets)
    names = lora_module_names(apply_lora(load_base_model(cfg.base_model, torch.float32, cfg), cfg))
    assert names and all(n.rsplit(".", 2)[-2] == parent for n in names)
    assert all(".language_model." in n for n in names)
    everything = lora_module_names(apply_lora(load_base_model(cfg.base_model, torch.float32, tiny_config),
                                              tiny_config))
    assert set(names) < set(everything)
