"""The local-model predictor and ``ocr-ft evaluate --model`` on the tiny GLM-OCR model (CPU)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from ocr_ft.cli import main  # noqa: E402
from ocr_ft.evaluate.predictors import LocalModelPredictor  # noqa: E402

MAX_NEW = 6


def test_predictions_in_order_with_bad_image_isolated(tiny_model, tiny_config, test_set, tmp_path):
    paths = [test_set["data_dir"] / r["image_path"] for r in test_set["rows"][:3]]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    predictor = LocalModelPredictor(tiny_model, config=tiny_config, device="cpu", batch_size=2, max_new_tokens=MAX_NEW)
    preds = predictor.predict([paths[0], broken, paths[1], paths[2]])
    assert [p.error is None for p in preds] == [True, False, True, True]
    assert "broken.png" in preds[1].error
    assert all(p.latency_s > 0 and isinstance(p.raw, str) for p in preds if p.error is None)
    # Greedy decoding is deterministic: the same image gives the same output alone or in a batch.
    alone = LocalModelPredictor(tiny_model, config=tiny_config, device="cpu", batch_size=1,
                                max_new_tokens=MAX_NEW).predict([paths[1]])
    assert alone[0].raw == preds[2].raw


def test_untrained_adapter_from_a_run_directory_matches_the_base(tiny_model, tiny_config, test_set, tmp_path):
    from ocr_ft.train import apply_lora, load_model_and_processor

    model, _ = load_model_and_processor(str(tiny_model), tiny_config, device="cpu")
    run = tmp_path / "run"
    apply_lora(model, tiny_config).save_pretrained(run / "adapter")  # LoRA B starts at zero: a no-op adapter
    tiny_config.save(run / "config.yaml")
    paths = [test_set["data_dir"] / r["image_path"] for r in test_set["rows"][:2]]
    with_adapter = LocalModelPredictor(tiny_model, run, device="cpu", max_new_tokens=MAX_NEW)
    base = LocalModelPredictor(tiny_model, config=tiny_config, device="cpu", max_new_tokens=MAX_NEW)
    assert "+" in with_adapter.name
    assert [p.raw for p in with_adapter.predict(paths)] == [p.raw for p in base.predict(paths)]


def test_evaluate_cli_with_local_model(tiny_model, test_set, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["evaluate", "--test-set", str(test_set["path"]), "--model", str(tiny_model), "--data-dir",
            str(test_set["data_dir"]), "--out", str(out), "--limit", "2", "--max-new-tokens", str(MAX_NEW),
            "--device", "cpu", "--workers", "1", "--batch-size", "2"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["run"] == "base" and summary["n"] == 2 and summary["prediction_errors"] == 0
    assert (out / "report.html").is_file()


def test_latency_is_the_generate_call_a_page_waited_for_not_a_share_of_it(test_set, monkeypatch):
    """Three pages generated in one 0.3 s call each waited 0.3 s: that is their latency (not 0.1 s)."""
    import time

    predictor = object.__new__(LocalModelPredictor)  # no model: generation is faked
    predictor.batch_size, predictor.max_new_tokens, predictor.name = 3, MAX_NEW, "fake"
    calls = []

    def generate(images):
        calls.append(len(images))
        time.sleep(0.3)
        return ["<table><tr><td>x</td></tr></table>"] * len(images)

    monkeypatch.setattr(predictor, "_generate", generate)
    paths = [test_set["data_dir"] / r["image_path"] for r in test_set["rows"][:4]]
    preds = predictor.predict(paths)
    assert calls == [3, 1] and all(p.error is None for p in preds)
    assert all(0.3 <= p.latency_s < 3 for p in preds)
    assert preds[0].latency_s == preds[1].latency_s == preds[2].latency_s


def test_local_cut_off_output_is_flagged(tiny_model, tiny_config, test_set):
    from ocr_ft.train.modeling import load_model_and_processor

    paths = [test_set["data_dir"] / r["image_path"] for r in test_set["rows"][:2]]
    preds = LocalModelPredictor(tiny_model, config=tiny_config, device="cpu", batch_size=2,
                                max_new_tokens=3).predict(paths)
    _, bundle = load_model_and_processor(tiny_model, tiny_config, device="cpu")
    for p in preds:
        assert p.error is None
        ids = bundle.tokenizer.encode(p.raw, add_special_tokens=False)
        stopped = any(t in bundle.stop_token_ids for t in ids)
        # cut off exactly when no stop token came within the 3 tokens allowed
        assert p.truncated is (not stopped) and p.finish_reason == ("length" if p.truncated else "stop")
