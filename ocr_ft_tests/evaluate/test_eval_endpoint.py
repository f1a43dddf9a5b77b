"""The OpenAI-compatible endpoint predictor against a local fake server."""

from __future__ import annotations

import base64

import pytest

from ocr_ft.evaluate.predictors import API_KEY_ENV, EndpointPredictor, chat_completions_url
from ocr_ft_tests.factories import make_png

SECRET = "sk-test-secret-123"


@pytest.fixture
def images(tmp_path):
    paths = []
    for i in range(6):
        p = tmp_path / f"page{i}.png"
        p.write_bytes(make_png(i))
        paths.append(p)
    return paths


def test_request_shape_auth_and_table_extraction(fake_server, images, monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, SECRET)
    fake_server.answers[images[0].read_bytes()] = "```html\n<table><tr><td>자산</td></tr></table>\n```"
    pred = EndpointPredictor(fake_server.url, backoff_s=0.01).predict_one(images[0])
    assert pred.error is None
    html, latency = pred
    assert html == "<table><tr><td>자산</td></tr></table>" and latency > 0
    assert pred.raw.startswith("```html")
    models, chat = fake_server.requests
    assert models["path"] == "/v1/models"
    assert chat["path"] == "/v1/chat/completions"
    assert chat["headers"]["Authorization"] == f"Bearer {SECRET}"
    body = chat["json"]
    assert body["model"] == "glm-ocr-test" and body["temperature"] == 0
    image_part, text_part = body["messages"][0]["content"]
    assert text_part == {"type": "text", "text": "Table Recognition:"}
    url = image_part["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == images[0].read_bytes()


def test_retries_a_500_then_succeeds(fake_server, images):
    fake_server.fail_next = 1
    pred = EndpointPredictor(fake_server.url, model="m", retries=2, backoff_s=0.3).predict_one(images[0])
    assert pred.error is None and pred.html.startswith("<table>")
    assert len(fake_server.chat_requests()) == 2
    assert pred.latency_s < 0.3  # the successful attempt only, not the failed one and the wait


def test_gives_up_after_bounded_retries_without_leaking_the_key(fake_server, images, monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, SECRET)
    fake_server.fail_next = 10
    fake_server.fail_status = 503
    pred = EndpointPredictor(fake_server.url, model="m", retries=2, backoff_s=0.01).predict_one(images[0])
    assert pred.html == "" and pred.latency_s is None
    assert "HTTP 503" in pred.error and "3 attempt" in pred.error and str(images[0]) in pred.error
    assert SECRET not in pred.error
    assert len(fake_server.chat_requests()) == 3


def test_client_errors_are_not_retried(fake_server, images):
    fake_server.fail_images.add(images[0].read_bytes())
    pred = EndpointPredictor(fake_server.url, model="m", retries=3, backoff_s=0.01).predict_one(images[0])
    assert "HTTP 400" in pred.error
    assert len(fake_server.chat_requests()) == 1


def test_timeouts_are_retried_then_reported(fake_server, images):
    fake_server.delay_s = 0.5
    pred = EndpointPredictor(fake_server.url, model="m", timeout_s=0.1, retries=1, backoff_s=0.01).predict_one(images[0])
    assert pred.error and "Timeout" in pred.error
    assert len(fake_server.chat_requests()) == 2


def test_concurrent_predictions_come_back_in_input_order(fake_server, images):
    for i, p in enumerate(images):
        fake_server.answers[p.read_bytes()] = f"<table><tr><td>{i}</td></tr></table>"
    fake_server.delay_s = 0.05
    preds = EndpointPredictor(fake_server.url, model="m", concurrency=4).predict(images)
    assert [p.html for p in preds] == [f"<table><tr><td>{i}</td></tr></table>" for i in range(len(images))]
    assert all(p.latency_s >= 0.05 for p in preds)


def test_missing_image_is_an_error_for_that_image_only(fake_server, images, tmp_path):
    preds = EndpointPredictor(fake_server.url, model="m").predict([images[0], tmp_path / "nope.png"])
    assert preds[0].error is None
    assert "nope.png" in preds[1].error


@pytest.mark.parametrize("given, expected", [
    ("http://h:8000", "http://h:8000/v1/chat/completions"),
    ("http://h:8000/v1/", "http://h:8000/v1/chat/completions"),
    ("http://h:8000/v1/chat/completions", "http://h:8000/v1/chat/completions"),
])
def test_url_forms(given, expected):
    assert chat_completions_url(given)[0] == expected


def test_stopping_early_cancels_the_requests_not_yet_sent(fake_server, images):
    fake_server.delay_s = 0.2
    results = EndpointPredictor(fake_server.url, model="m", concurrency=1).predict_iter(images)
    next(results)
    results.close()  # what an interrupted evaluation loop does
    assert len(fake_server.chat_requests()) <= 2


@pytest.mark.parametrize("reason, truncated", [("length", True), ("stop", False), (None, False)])
def test_cut_off_output_is_flagged_from_finish_reason(images, monkeypatch, reason, truncated):
    class Resp:
        def json(self):
            choice = {"index": 0, "message": {"role": "assistant", "content": "<table><tr><td>1"}}
            if reason is not None:
                choice["finish_reason"] = reason
            return {"choices": [choice]}

    predictor = EndpointPredictor("http://127.0.0.1:9", model="m", max_new_tokens=123)
    sent = []
    monkeypatch.setattr(predictor, "_request", lambda method, url, **kw: (sent.append(kw["json"]) or (Resp(), 0.01)))
    pred = predictor.predict_one(images[0])
    assert pred.error is None and pred.truncated is truncated and pred.finish_reason == reason
    assert sent[0]["max_tokens"] == 123 and "chat_template_kwargs" not in sent[0]


def test_a_served_paddleocr_vl_gets_its_prompt_and_its_otsl_answer_as_html(fake_server, images):
    """A PaddleOCR-VL server answers in OTSL: with family= the predictor sends that family's table prompt and
    turns the OTSL (merged cell included) into the HTML table the metrics read."""
    from ocr_ft.tables import parse_tables
    from ocr_ft.train.families import get_family

    fake_server.answers[images[0].read_bytes()] = "<fcel>구분<lcel><nl><fcel>당기<fcel>전기<nl>"
    fake_server.answers[images[1].read_bytes()] = "no table here"
    pred_family = EndpointPredictor(fake_server.url, model="m", backoff_s=0.01, family="paddleocr_vl")
    pred = pred_family.predict_one(images[0])
    assert pred.error is None and pred.raw.startswith("<fcel>")
    (table,) = parse_tables(pred.html)
    first = next(table.cells())
    assert (first.text, first.colspan) == ("구분", 2)
    assert [c.text for c in table.cells()] == ["구분", "당기", "전기"]
    text_part = fake_server.chat_requests()[-1]["json"]["messages"][0]["content"][1]
    assert text_part["text"] == get_family("paddleocr_vl").table_prompt
    assert pred_family.predict_one(images[1]).html == ""
    # the same answer read as HTML (no family) has no table at all
    assert EndpointPredictor(fake_server.url, model="m", backoff_s=0.01).predict_one(images[0]).html == ""


def test_an_unknown_family_is_named_with_the_known_ones(fake_server):
    with pytest.raises(ValueError, match=r"'nope'.*glm_ocr"):
        EndpointPredictor(fake_server.url, model="m", family="nope")
