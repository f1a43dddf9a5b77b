"""The scraped sources in Dagster: weekly schedules, and a single DART month backfilled from the CLI."""

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from ocr_ft.defs.scraped import dart_weekly_rescrape, fss_period, fss_weekly_rescrape

ROOT = Path(__file__).resolve().parents[2]
KEY = "0123456789abcdef0123456789abcdef01234567"

DOC = """<?xml version="1.0" encoding="utf-8"?>
<DOCUMENT><BODY><SECTION-1><TITLE>II. 재무에 관한 사항</TITLE>
<TABLE><THEAD><TR><TH ROWSPAN="2">과목</TH><TH COLSPAN="2">제12기</TH></TR><TR><TH>1분기</TH><TH>2분기</TH></TR></THEAD>
<TBODY><TR><TE>현금및예치금</TE><TU>1,234</TU><TU>1,300</TU></TR><TR><TE>대출채권</TE><TU>23,456</TU><TU>(12)</TU></TR></TBODY>
</TABLE></SECTION-1></BODY></DOCUMENT>"""


@pytest.mark.parametrize("when, quarter", [(dt.datetime(2024, 3, 4, 3, 0), "2023Q4"),
                                           (dt.datetime(2025, 1, 6, 3, 0), "2024Q4"),
                                           (dt.datetime(2031, 7, 7, 3, 0), "2031Q2")])  # years after this code loads
def test_schedules_request_only_the_newest_dart_and_fss_partitions(when, quarter):
    from ocr_ft.definitions import defs

    with dg.instance_for_test() as instance:
        ctx = dg.build_schedule_context(instance=instance, scheduled_execution_time=when)
        dart_req = dart_weekly_rescrape(ctx)
        fss_req = fss_weekly_rescrape(ctx)
    assert isinstance(dart_req, dg.RunRequest) and dart_req.partition_key == when.strftime("%Y-%m")
    assert dart_req.run_config["ops"]["dart"]["config"]["refresh_listing"] is True
    assert isinstance(fss_req, dg.RunRequest) and fss_period(fss_req.partition_key) == quarter
    # each schedule targets its own source and nothing else
    for schedule, key in ((dart_weekly_rescrape, "dart"), (fss_weekly_rescrape, "fss")):
        job = defs.resolve_job_def(schedule.job_name)
        assert {k.to_user_string() for k in job.asset_layer.selected_asset_keys} == {key}


def test_fss_partitions_are_quarters_keyed_by_their_first_month():
    from ocr_ft.defs.scraped import fss_partitions

    assert [fss_period(k) for k in ("2024-01", "2024-04", "2024-10")] == ["2024Q1", "2024Q2", "2024Q4"]
    with pytest.raises(ValueError, match="does not start a quarter"):
        fss_period("2024-02")
    keys = fss_partitions.get_partition_keys(current_time=dt.datetime(2024, 4, 1, 12, tzinfo=dt.timezone.utc))
    assert keys[0] == "2020-01" and keys[-1] == "2024-01"  # 2024Q1 exists once it has ended


@pytest.mark.browser
def test_backfill_one_dart_month_from_the_cli(tmp_path, monkeypatch, fake_server, reply, make_zip):
    filing = {"corp_name": "가나은행", "corp_code": "00000001", "report_nm": "분기보고서 (2024.03)",
              "rcept_no": "20240515000001", "rcept_dt": "20240515", "corp_cls": "Y", "stock_code": "", "flr_nm": "가나은행",
              "rm": ""}

    def listing(params):
        if params.get("bgn_de") != "20240501" or params.get("pblntf_detail_ty") != "A003":
            return reply(200, {"status": "013", "message": "조회된 데이타가 없습니다."})
        return reply(200, {"status": "000", "message": "정상", "page_no": 1, "total_count": 1, "total_page": 1,
                           "list": [filing]})

    fake_server.route("/api/list.json", listing)
    fake_server.route("/api/document.xml", lambda params: reply(200, make_zip({"20240515000001.xml": DOC})))
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    env = {**os.environ, "DAGSTER_HOME": str(home), "OCR_FT_DATA_DIR": str(tmp_path / "data"), "DART_API_KEY": KEY,
           "OCR_FT_DART_URL": f"{fake_server.url}/api"}
    cmd = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "ocr_ft.definitions",
           "--select", "dart", "--partition", "2024-05"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert KEY not in proc.stdout + proc.stderr

    manifest = tmp_path / "data" / "sources" / "dart" / "2024-05.jsonl"
    rows = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]
    pairs = [r for r in rows if r["kind"] == "pair"]
    assert len(pairs) == 1 and pairs[0]["original_filename"].startswith("dart_20240515000001_")
    assert "rowspan" in pairs[0]["html"] and (tmp_path / "data" / pairs[0]["image_path"]).is_file()
    # only May was asked for
    assert {h.params["bgn_de"] for h in fake_server.hits("/api/list.json")} == {"20240501"}
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # dagster.yaml puts storage under $DAGSTER_HOME
    with dg.DagsterInstance.from_config(str(home)) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("dart"))
        assert event.asset_materialization.partition == "2024-05"
        assert KEY not in json.dumps({k: str(v) for k, v in event.asset_materialization.metadata.items()})


def test_api_keys_never_show_in_resource_reprs():
    from ocr_ft.resources import DartResource, FssResource

    for cls in (DartResource, FssResource):
        res = cls(api_key=KEY)
        assert KEY not in repr(res) and KEY not in str(res)


def test_wiki_asset_refuses_to_start_without_contact_in_the_user_agent(tmp_path, fake_server):
    from ocr_ft.defs.scraped import wiki
    from ocr_ft.resources import OcrFtPaths, RendererResource, WikiResource

    resources = {"paths": OcrFtPaths(data_dir=str(tmp_path / "data")), "renderer": RendererResource(),
                 "wiki": WikiResource(api_url=f"{fake_server.url}/w/api.php", user_agent="ocr-ft/0.1")}
    with dg.instance_for_test() as instance:
        res = dg.materialize([wiki], partition_key="batch-000", resources=resources, instance=instance,
                             raise_on_error=False)
        assert not res.success
        failures = [e for e in res.all_events if e.event_type_value == "STEP_FAILURE"]
        text = str(failures[0].event_specific_data.error)
    assert "OCR_FT_WIKI_USER_AGENT" in text and "contact" in text
    assert fake_server.hits() == []  # not one request was sent
