"""TrainConfig: seed defaults, YAML overlays, overrides, and errors that name the bad key."""

from __future__ import annotations

import pytest

from ocr_ft.train.config import (
    DEFAULT_CONFIG_PATH,
    TINY_CONFIG_PATH,
    ConfigError,
    TrainConfig,
    load_config,
    parse_set_overrides,
)


def test_defaults_are_the_seed_recipe():
    c = load_config()
    assert c.base_model == "zai-org/GLM-OCR"
    assert c.prompt == "Table Recognition:"
    assert (c.lora_rank, c.lora_alpha, c.lora_dropout, c.vision_lora) == (8, 16, 0.05, False)
    assert (c.learning_rate, c.lr_scheduler, c.warmup_ratio, c.num_epochs) == (1e-4, "cosine", 0.03, 3)
    assert (c.per_device_batch_size, c.gradient_accumulation_steps, c.effective_batch_size) == (2, 8, 16)
    assert (c.precision, c.gradient_checkpointing, c.max_seq_len) == ("auto", True, 4096)
    assert c.max_image_tokens == 2048 and c.max_image_tokens < c.max_seq_len
    # the YAML and the dataclass defaults agree
    assert c == TrainConfig()


def test_yaml_overlay_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("learning_rate: 2e-4\nnum_epochs: 1\n", encoding="utf-8")  # 2e-4 is a YAML string
    c = load_config(path, num_epochs=5)
    assert c.learning_rate == pytest.approx(2e-4) and c.num_epochs == 5 and c.lora_rank == 8


def test_tiny_overlay_loads():
    c = load_config(TINY_CONFIG_PATH, base_model="/models/tiny")
    assert c.precision == "fp32" and c.max_pixels < load_config().max_pixels and c.base_model == "/models/tiny"


def test_unknown_key_is_named_with_a_suggestion(tmp_path):
    with pytest.raises(ConfigError, match=r"'lora_rnk'.*did you mean 'lora_rank'"):
        load_config(lora_rnk=4)
    path = tmp_path / "bad.yaml"
    path.write_text("learnig_rate: 1.0e-3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*'learnig_rate'"):
        load_config(path)


@pytest.mark.parametrize("key,value,match", [
    ("lora_dropout", 1.5, "lora_dropout must be in"),
    ("precision", "fp16", "precision must be one of"),
    ("per_device_batch_size", 0, "per_device_batch_size must be >= 1"),
    ("learning_rate", "fast", "learning_rate must be a number"),
    ("vision_lora", "yes", "vision_lora must be true or false"),
    ("max_pixels", 28 * 28 * 5000, "leaves no room in max_seq_len"),
    ("min_pixels", 10, "min_pixels must be >= 784"),
])
def test_bad_values_are_named(key, value, match):
    with pytest.raises(ConfigError, match=match):
        load_config(**{key: value})


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(bad)


def test_set_overrides_parse_types():
    got = parse_set_overrides(["vision_lora=true", "lora_rank=16", "learning_rate=1e-3", "prompt=Table Recognition:"])
    assert got == {"vision_lora": True, "lora_rank": 16, "learning_rate": "1e-3", "prompt": "Table Recognition:"}
    c = load_config(**got)
    assert c.vision_lora and c.lora_rank == 16 and c.learning_rate == 1e-3
    with pytest.raises(ConfigError, match="key=value"):
        parse_set_overrides(["lora_rank"])


def test_fingerprint_ignores_operational_keys_only(tmp_path):
    c = load_config()
    assert c.replace(logging_steps=1, save_steps=5, dataloader_workers=0).fingerprint() == c.fingerprint()
    assert c.replace(learning_rate=2e-4).fingerprint() != c.fingerprint()
    c.save(tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == c
    assert DEFAULT_CONFIG_PATH.is_file()
