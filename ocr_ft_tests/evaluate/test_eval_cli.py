"""``ocr-ft evaluate`` (resumable, against the fake endpoint) and ``ocr-ft teds``."""

from __future__ import annotations

import json

import pytest

from ocr_ft.cli import main
from ocr_ft.evaluate.predictors import Prediction
from ocr_ft.evaluate.runner import PREDICTIONS_FILE, RUN_FILE, load_test_set, predict_resumable


def _evaluate(test_set, out, url, *extra) -> int:
    return main(["evaluate", "--test-set", str(test_set["path"]), "--endpoint", url, "--served-model", "m",
                 "--data-dir", str(test_set["data_dir"]), "--out", str(out), "--workers", "1", *extra])


def test_evaluate_writes_predictions_run_and_report(fake_server, test_set, answer, tmp_path, capsys):
    answer(fake_server, test_set)
    out = tmp_path / "out"
    assert _evaluate(test_set, out, fake_server.url, "--save-every", "2") == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["n"] == 6 and summary["teds"] == 1.0 and summary["cer"] == 0.0
    for name in (PREDICTIONS_FILE, RUN_FILE, "report.json", "report.md", "report.html"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    by_cat = report["runs"]["base"]["summary"]["by_category"]
    assert set(by_cat) == {"plain", "merged", "nested_2level", "nested_3level"}
    assert set(report["runs"]["base"]["summary"]["by_source"]) == {"dart", "wiki", "synthetic_shilu"}


def test_rerun_skips_done_samples_and_retries_failed_ones(fake_server, test_set, answer, tmp_path,
                                                          read_predictions):
    answer(fake_server, test_set)
    failing = [test_set["images"][r["image_path"]] for r in test_set["rows"][4:]]
    fake_server.fail_images.update(failing)
    out = tmp_path / "out"
    assert _evaluate(test_set, out, fake_server.url, "--retries", "0") == 1  # two samples failed
    rows = read_predictions(out / PREDICTIONS_FILE)
    assert sorted(k for k, r in rows.items() if r["error"]) == ["h4", "h5"]
    first = len(fake_server.chat_requests())
    assert first == 6

    fake_server.fail_images.clear()
    assert _evaluate(test_set, out, fake_server.url) == 0
    assert len(fake_server.chat_requests()) == first + 2  # only the two failed ones again
    assert not any(r["error"] for r in read_predictions(out / PREDICTIONS_FILE).values())

    assert _evaluate(test_set, out, fake_server.url) == 0
    assert len(fake_server.chat_requests()) == first + 2  # nothing left to predict


class _Crashing:
    """Yields ``ok`` predictions, then dies like a killed process would."""

    name = "fake"

    def __init__(self, ok: int):
        self.ok, self.seen = ok, []

    def predict_iter(self, images):
        for i, path in enumerate(images):
            if i == self.ok:
                raise KeyboardInterrupt
            self.seen.append(path.name)
            yield i, Prediction("<table><tr><td>x</td></tr></table>", 0.01)


def test_interrupted_run_keeps_saved_predictions_and_resumes(test_set, tmp_path, read_predictions):
    samples = load_test_set(test_set["path"])
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        predict_resumable(samples, _Crashing(ok=3), test_set["data_dir"], out, save_every=2)
    assert sorted(read_predictions(out / PREDICTIONS_FILE)) == ["h0", "h1", "h2"]
    resumed = _Crashing(ok=99)
    rows = predict_resumable(samples, resumed, test_set["data_dir"], out, save_every=2)
    assert resumed.seen == ["s3.png", "s4.png", "s5.png"] and len(rows) == 6


def test_predictions_of_another_predictor_are_refused(test_set, tmp_path, fake_server, answer, capsys):
    answer(fake_server, test_set)
    out = tmp_path / "out"
    predict_resumable(load_test_set(test_set["path"])[:1], _Crashing(ok=99), test_set["data_dir"], out)
    assert _evaluate(test_set, out, fake_server.url) == 2
    assert "use another --out" in capsys.readouterr().err


def test_compare_with_base_flags_regression(fake_server, test_set, answer, tmp_path):
    answer(fake_server, test_set)
    good, worse = tmp_path / "good", tmp_path / "worse"
    assert _evaluate(test_set, good, fake_server.url, "--name", "base") == 0
    fake_server.answers.clear()  # every page now answered with a one-cell table
    assert _evaluate(test_set, worse, fake_server.url, "--name", "finetuned", "--compare-with", str(good)) == 0
    report = json.loads((worse / "report.json").read_text())
    assert list(report["runs"]) == ["base", "finetuned"]
    assert report["comparison"]["regression"] is True
    assert any(r.startswith("overall: TEDS") for r in report["comparison"]["regressions"])


def test_evaluate_limit(fake_server, test_set, answer, tmp_path):
    answer(fake_server, test_set)
    assert _evaluate(test_set, tmp_path / "o", fake_server.url, "--limit", "2") == 0
    assert len(fake_server.chat_requests()) == 2


def test_missing_image_is_named(fake_server, test_set, tmp_path, capsys):
    (test_set["data_dir"] / test_set["rows"][2]["image_path"]).unlink()
    assert _evaluate(test_set, tmp_path / "o", fake_server.url) == 2
    err = capsys.readouterr().err
    assert "line 3" in err and "s2.png" in err
    assert not fake_server.chat_requests()


def test_bad_test_set_line_is_named(fake_server, test_set, tmp_path, capsys):
    with open(test_set["path"], "a", encoding="utf-8") as fh:
        fh.write('{"image_path": "images/s0.png"}\n')
    assert _evaluate(test_set, tmp_path / "o", fake_server.url) == 2
    assert f"{test_set['path']}:7: missing or empty 'ground_truth_html'" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- teds
def _write(path, data):
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return str(path)


def test_teds_command_prints_one_json_object(tmp_path, capsys):
    cell = "<html><body><table><tr><th>{}</th><td>1</td></tr></table></body></html>"
    gt = _write(tmp_path / "gt.json", {"a.png": {"html": cell.format("가")}, "b.png": {"html": cell.format("나")}})
    pred = _write(tmp_path / "pred.json", {"a.png": cell.format("가"), "c.png": cell.format("x")})
    assert main(["teds", "--pred", pred, "--gt", gt, "--mode", "pubtabnet", "--workers", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0]) == {"a.png": {"teds": 1.0, "teds_s": 1.0}, "b.png": {"teds": 0.0, "teds_s": 0.0}}


def test_teds_command_names_bad_files(tmp_path, capsys):
    gt = _write(tmp_path / "gt.json", {"a.png": {"html": "<table></table>"}})
    assert main(["teds", "--pred", str(tmp_path / "missing.json"), "--gt", gt]) == 2
    assert "missing.json" in capsys.readouterr().err
    bad = _write(tmp_path / "bad.json", {"a.png": {"text": "no html"}})
    assert main(["teds", "--pred", bad, "--gt", gt]) == 2
    err = capsys.readouterr().err
    assert "bad.json" in err and "'a.png'" in err


@pytest.mark.parametrize("mode", ["pubtabnet", "nested"])
def test_teds_command_scores_empty_tables(tmp_path, capsys, mode):
    gt = _write(tmp_path / "gt.json", {"same": {"html": "<table></table>"},
                                       "empty_pred": {"html": "<table><tr><td>a</td></tr></table>"}})
    pred = _write(tmp_path / "pred.json", {"same": {"html": "<table></table>"}, "empty_pred": "<table></table>"})
    assert main(["teds", "--pred", pred, "--gt", gt, "--mode", mode, "--workers", "1"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"same": {"teds": 1.0, "teds_s": 1.0},
                                        "empty_pred": {"teds": 0.0, "teds_s": 0.0}}
    assert captured.err == ""


def test_teds_command_reports_unscored_pairs_on_stderr_and_exit_code(tmp_path, capsys, monkeypatch):
    import ocr_ft.evaluate.teds_metric as tm

    real = tm._teds_nested

    def failing(pred, gt, flags):
        if "boom" in gt:
            raise RuntimeError("metric exploded")
        return real(pred, gt, flags)

    monkeypatch.setattr(tm, "_teds_nested", failing)
    cell = "<table><tr><td>{}</td></tr></table>"
    gt = _write(tmp_path / "gt.json", {"ok": {"html": cell.format("a")}, "bad": {"html": cell.format("boom")}})
    pred = _write(tmp_path / "pred.json", {"ok": cell.format("a"), "bad": cell.format("boom")})
    assert main(["teds", "--pred", pred, "--gt", gt, "--workers", "1"]) == 1
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0]) == {"ok": {"teds": 1.0, "teds_s": 1.0}, "bad": {"teds": None, "teds_s": None}}
    assert "bad: not scored: RuntimeError: metric exploded" in captured.err
    assert "1 of 2 pair(s) not scored" in captured.err and "ok:" not in captured.err


# ------------------------------------------------------------------------------------------ throughput
def test_prediction_sessions_add_up_to_the_run_throughput(test_set, tmp_path):
    from ocr_ft.evaluate.runner import SESSIONS_FILE, load_sessions, prediction_throughput_meta

    samples = load_test_set(test_set["path"])
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        predict_resumable(samples, _Crashing(ok=3), test_set["data_dir"], out, save_every=2)
    first = load_sessions(out)
    assert [s["pages"] for s in first] == [3] and first[0]["wall_s"] > 0 and first[0]["predictor"] == "fake"
    predict_resumable(samples, _Crashing(ok=99), test_set["data_dir"], out)
    sessions = load_sessions(out)
    assert [s["pages"] for s in sessions] == [3, 3]
    meta = prediction_throughput_meta(out)
    assert meta["prediction_pages"] == 6 and meta["prediction_sessions"] == 2
    assert meta["prediction_wall_s"] == pytest.approx(sum(s["wall_s"] for s in sessions))
    # A sessions file without its predictions is stale and ignored.
    (out / PREDICTIONS_FILE).unlink()
    assert (out / SESSIONS_FILE).is_file() and load_sessions(out) == []


def test_evaluate_reports_throughput(fake_server, test_set, answer, tmp_path, capsys):
    answer(fake_server, test_set)
    out = tmp_path / "out"
    assert _evaluate(test_set, out, fake_server.url, "--concurrency", "2") == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["pages_per_s"] > 0 and line["teds_unscored"] == 0
    report = json.loads((out / "report.json").read_text())
    meta = report["runs"]["base"]["meta"]
    assert meta["prediction_pages"] == 6 and meta["concurrency"] == 2 and meta["batch_size"] is None
    throughput = report["runs"]["base"]["summary"]["throughput"]
    assert throughput["pages_per_s"] == pytest.approx(6 / meta["prediction_wall_s"])
    assert "throughput, base:" in (out / "report.md").read_text(encoding="utf-8")


def test_data_dir_defaults_to_the_project_data_directory(monkeypatch, tmp_path):
    """`--data-dir` may be left out, as in `ocr-ft evaluate --test-set T --model M --out O`."""
    from ocr_ft.evaluate.cli import _evaluate_parser

    monkeypatch.setenv("OCR_FT_DATA_DIR", str(tmp_path))
    args = _evaluate_parser().parse_args(["--test-set", "t.jsonl", "--endpoint", "http://x", "--out", "o"])
    assert args.data_dir == str(tmp_path)


def test_endpoint_generation_budget_covers_the_longest_label(fake_server, test_set, answer, tmp_path):
    from ocr_ft.evaluate.predictors import EndpointPredictor
    from ocr_ft.evaluate.runner import evaluate

    answer(fake_server, test_set)
    longest = max(len(r["ground_truth_html"]) for r in test_set["rows"])
    predictor = EndpointPredictor(fake_server.url, model="m", max_tokens=16, backoff_s=0.01)
    run = evaluate(test_set["path"], predictor, test_set["data_dir"], tmp_path / "out", "ep", workers=1,
                   count_tokens=len)  # a character "tokenizer": the budget follows whatever counts tokens
    sent = {r["json"]["max_tokens"] for r in fake_server.chat_requests()}
    assert sent == {run.meta["max_new_tokens"]} and run.meta["longest_label_tokens"] == longest
    assert run.meta["max_new_tokens"] > longest
