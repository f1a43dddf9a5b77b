"""Padding-free packing: a packed micro-batch gives the padded batch's answer loss and LoRA gradients, a packed
run trains, reports no padding, and a model that cannot pack is refused."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from ocr_ft.train.inputs import IGNORE_INDEX, TrainingCollator, load_image
from ocr_ft.train.packing import (PACKED_LENGTHS, PACKED_SDPA, PackingCollator, check_packing, pack_examples,
                                  prepare_model_for_packing, prepare_packed_batch, supports_packing, token_counts)

RTOL = 1e-4


def _items(table_data, indices):
    data_dir = table_data["data_dir"]
    return [(load_image(data_dir / table_data["train"][i]["image_path"]), table_data["train"][i]["ground_truth_html"])
            for i in indices]


@pytest.fixture(scope="module")
def lora_model_factory(tiny_config):
    from ocr_ft.train.modeling import apply_lora, load_base_model, load_processor

    config = tiny_config.replace(lora_dropout=0.0)
    bundle = load_processor(config.base_model, config)

    def make(attn: str):
        torch.manual_seed(0)
        model = load_base_model(config.base_model, torch.float32, config,
                                attn_implementation="sdpa" if attn == PACKED_SDPA else attn)
        model = apply_lora(model, config)
        if attn == PACKED_SDPA:  # what the trainer does with packing: true (sdpa -> sdpa per packed sample)
            assert prepare_model_for_packing(model) == PACKED_SDPA
        # LoRA B starts at zero (its A gets no gradient then): give B values so both matrices are compared
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0.0, 0.02)
        return model.train()

    return make, bundle


def _loss_and_grads(model, batch):
    from ocr_ft.train.trainer import answer_loss_sum

    model.zero_grad(set_to_none=True)
    s, n = answer_loss_sum(model, batch)
    s.backward()
    grads = {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.requires_grad}
    return float(s.detach()), n, grads


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


# sdpa / eager: transformers' block-diagonal mask from the packed position ids; PACKED_SDPA: sdpa per sample
@pytest.mark.parametrize("attn", ["sdpa", "eager", PACKED_SDPA])
def test_packed_batch_gives_the_padded_loss_and_lora_gradients(lora_model_factory, table_data, attn):
    make, bundle = lora_model_factory
    model = make(attn)
    items = _items(table_data, [0, 1, 2])
    padded = TrainingCollator(bundle)(items)
    packed = PackingCollator(bundle)(items)
    lengths = padded["attention_mask"].sum(1).tolist()
    assert len(set(lengths)) > 1, "the samples must differ in length, or the padded batch has no padding"
    assert packed["input_ids"].shape == (1, sum(lengths)) and "attention_mask" not in packed
    assert packed[PACKED_LENGTHS].tolist() == lengths

    s_pad, n_pad, g_pad = _loss_and_grads(model, padded)
    s_pack, n_pack, g_pack = _loss_and_grads(model, packed)
    assert n_pack == n_pad > 0
    assert s_pack == pytest.approx(s_pad, rel=RTOL)
    assert g_pad.keys() == g_pack.keys() and any("lora_A" in k for k in g_pad) and any("lora_B" in k for k in g_pad)
    worst = max(_rel(g_pack[k], g_pad[k]) for k in g_pad)
    assert worst < RTOL, f"largest relative LoRA-gradient difference {worst:.2e}"

    # the check can fail: the right per-sample RoPE rows but a text row that runs on over the whole row (one
    # causal mask, no per-sample blocks) lets later samples attend to earlier ones and changes the loss
    right = prepare_packed_batch(model.get_base_model(), packed)
    leaky = {**right, "position_ids": right["position_ids"].clone()}
    leaky["position_ids"][0] = torch.arange(leaky["position_ids"].shape[-1])
    s_leaky, _, _ = _loss_and_grads(model, leaky)
    assert abs(s_leaky - s_pad) > 10 * RTOL * abs(s_pad)


def test_packed_positions_restart_per_sample(lora_model_factory, table_data):
    make, bundle = lora_model_factory
    model = make("sdpa")
    items = _items(table_data, [3, 4])
    packed = PackingCollator(bundle)(items)
    prepared = prepare_packed_batch(model.get_base_model(), packed)
    assert PACKED_LENGTHS not in prepared and prepared["position_ids"].shape == (4, 1, packed["input_ids"].shape[1])
    n0 = int(packed[PACKED_LENGTHS][0])
    text = prepared["position_ids"][0, 0]
    assert text[:n0].tolist() == list(range(n0)) and text[n0] == 0
    # each sample's multimodal rows are what get_rope_index gives for that sample on its own
    single = TrainingCollator(bundle)(items[1:])
    alone, _ = model.get_base_model().model.get_rope_index(single["input_ids"], single["mm_token_type_ids"],
                                                           image_grid_thw=single["image_grid_thw"])
    assert torch.equal(prepared["position_ids"][1:, :, n0:], alone)
    padded = TrainingCollator(bundle)(items)
    assert prepare_packed_batch(model.get_base_model(), padded) is padded
    with pytest.raises(ValueError, match="attention_mask"):
        prepare_packed_batch(model.get_base_model(), {**packed, "attention_mask": torch.ones_like(packed["input_ids"])})


def test_prepare_model_for_packing_switches_only_the_language_model(lora_model_factory):
    make, _ = lora_model_factory
    model = make("sdpa")
    base = model.get_base_model()
    assert prepare_model_for_packing(model) == PACKED_SDPA
    assert base.config.text_config._attn_implementation == PACKED_SDPA
    assert base.config.vision_config._attn_implementation == "sdpa"  # images are attended one by one already
    assert supports_packing(model) == (True, "")
    eager = make("eager")
    assert prepare_model_for_packing(eager) == "eager"  # its mask comes from the packed position ids


def test_pack_examples_keeps_samples_apart():
    a = {"input_ids": [5, 6, 7], "labels": [IGNORE_INDEX, 6, 7], "mm_token_type_ids": [0, 1, 0],
         "pixel_values": torch.zeros(4, 3), "image_grid_thw": torch.tensor([[1, 2, 2]])}
    b = {"input_ids": [8, 9], "labels": [8, 9], "mm_token_type_ids": [1, 0],
         "pixel_values": torch.ones(4, 3), "image_grid_thw": torch.tensor([[1, 2, 2]])}
    out = pack_examples([a, b])
    assert out["input_ids"].tolist() == [[5, 6, 7, 8, 9]]
    # b's first label is dropped: the last token of a must not learn to predict b's first token
    assert out["labels"].tolist() == [[IGNORE_INDEX, 6, 7, IGNORE_INDEX, 9]]
    assert out[PACKED_LENGTHS].tolist() == [3, 2] and out["pixel_values"].shape == (8, 3)
    with pytest.raises(ValueError, match="empty"):
        pack_examples([])
    with pytest.raises(ValueError, match="2 labels"):
        pack_examples([{**a, "labels": [1, 2]}])


def test_token_counts_padded_and_packed():
    lengths = [10, 4, 6, 6]
    padded = token_counts([[0, 1], [2, 3]], lengths, packed=False)
    assert padded == {"real_tokens": 26, "grid_tokens": 32, "padding_tokens": 6, "padding_fraction": 1 - 26 / 32}
    packed = token_counts([[0, 1], [2, 3]], lengths, packed=True)
    assert packed["grid_tokens"] == packed["real_tokens"] == 26 and packed["padding_fraction"] == 0.0


def test_models_that_cannot_pack_are_refused():
    other = SimpleNamespace(config=SimpleNamespace(model_type="llava", _attn_implementation="sdpa"),
                            model=SimpleNamespace(get_rope_index=lambda *a, **k: None))
    ok, why = supports_packing(other)
    assert not ok and "llava" in why
    with pytest.raises(ValueError, match="packing: true.*llava"):
        check_packing(other)
    flex = SimpleNamespace(config=SimpleNamespace(model_type="glm_ocr", _attn_implementation="flex_attention",
                                                  text_config=SimpleNamespace(_attn_implementation="flex_attention")),
                           model=SimpleNamespace(get_rope_index=lambda *a, **k: None))
    ok, why = supports_packing(flex)
    assert not ok and "flex_attention" in why
    no_rope = SimpleNamespace(config=SimpleNamespace(model_type="glm_ocr"), model=SimpleNamespace())
    assert not supports_packing(no_rope)[0]


def test_packing_is_a_config_key_in_the_fingerprint():
    from ocr_ft.train.config import ConfigError, load_config

    base = load_config()
    assert base.packing is False
    assert load_config(packing=True).fingerprint() != base.fingerprint()
    with pytest.raises(ConfigError, match="packing"):
        load_config(packing="yes")


def test_packed_run_lowers_the_loss_with_no_padding(tiny_config, table_data, trained_run, tmp_path):
    from ocr_ft.train.trainer import train

    padded, _ = trained_run
    records = table_data["train"] + [table_data["oversized"]]
    result = train(tiny_config.replace(packing=True, report_to="none"), records, table_data["val"],
                   table_data["data_dir"], tmp_path / "packed")
    s, p = result.summary, padded.summary
    assert s["packing"] is True and p["packing"] is False
    assert s["final_train_loss"] < s["initial_train_loss"] - 0.5
    assert s["final_eval_loss"] < s["initial_eval_loss"]
    assert s["padding_fraction"] == 0.0 and s["token_counts"]["padding_tokens"] == 0
    # the same samples: the same real tokens, but the padded run ran on a larger grid
    assert s["token_counts"]["real_tokens"] == p["token_counts"]["real_tokens"] > 0
    assert p["token_counts"]["grid_tokens"] > p["token_counts"]["real_tokens"]
    assert p["padding_fraction"] == pytest.approx(1 - p["token_counts"]["real_tokens"] / p["token_counts"]["grid_tokens"])


def test_the_registry_says_which_families_pack():
    """A family's supports_packing is exactly whether the packing module knows its model types."""
    from ocr_ft.train.families import FAMILIES
    from ocr_ft.train.packing import PACKING_MODEL_TYPES

    for fam in FAMILIES.values():
        assert fam.supports_packing == bool(set(fam.model_types) & PACKING_MODEL_TYPES), fam.name
    assert FAMILIES["glm_ocr"].supports_packing
