"""The Dagster UI end to end in a real browser: ``dagster dev`` + headless Chromium (Playwright).

Starts ``dagster dev -m ocr_ft.definitions`` on a throw-away DAGSTER_HOME and a free loopback port, then, by
clicking through the UI only: Lineage -> filter the graph to the ``sources`` group -> the ``synthetic`` node ->
"View in Asset Catalog" -> "Materialize…" -> partition selection (one shard) -> "Launch 1 run" -> the run page,
until it reads "Success". The materialization is then checked in the instance itself.

Screenshots go to ``test-artifacts/`` (ui_asset_graph.png, ui_launch_dialog.png, ui_run_success.png,
ui_materialized.png; ui_failure.png on failure, with the server's log tail in the failure message).

To develop the click-path against another code location, set ``OCR_FT_UI_TEST_DEFS_FILE=/path/defs.py``
(loaded with ``-f`` instead of ``-m ocr_ft.definitions``; it needs a partitioned ``synthetic`` asset in group
``sources``).
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the helper beside this file, whatever pytest's import mode
from dagster_dev_server import REPO, DagsterDev, dagster_dev  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
ARTIFACTS = REPO / "test-artifacts"
ASSET = "synthetic"
GROUP = "sources"
TABLES_PER_SHARD = "3"  # OCR_FT_SYNTHETIC_PER_SHARD for the run: a shard of 100 also works, just slower
UI_TIMEOUT_MS = 120_000  # first paint of the graph waits for the code location to load (2 busy cores)
RUN_TIMEOUT_S = 300


def _target() -> tuple[list[str], str]:
    """The ``dagster dev`` target and the partition to materialize (the first key of ``synthetic``)."""
    override = os.environ.get("OCR_FT_UI_TEST_DEFS_FILE")
    if override:
        return ["-f", override], "shard-000"
    import dagster as dg

    from ocr_ft.definitions import defs

    key = dg.AssetKey(ASSET)
    if key not in defs.resolve_all_asset_keys():
        pytest.skip(f"no `{ASSET}` asset in ocr_ft.definitions yet: nothing to materialize from the UI")
    partitions = defs.resolve_assets_def(key).partitions_def
    assert partitions is not None, f"`{ASSET}` is expected to be partitioned (shard-000, shard-001, …)"
    return ["-m", "ocr_ft.definitions"], partitions.get_partition_keys()[0]


def _run_summary(home: Path, run_id: str | None) -> str:
    """The run's status and its last events from the instance, for a failure message."""
    if not run_id:
        return "<no run launched>"
    try:
        from dagster import DagsterInstance

        with DagsterInstance.from_config(str(home)) as instance:
            run = instance.get_run_by_id(run_id)
            lines = [f"run {run_id}: {run.status.value if run else 'not found'}"]
            for entry in instance.all_logs(run_id)[-15:]:
                kind = entry.dagster_event_type.value if entry.dagster_event_type else entry.level
                lines.append(f"  {kind}: {entry.message[:400]}")
            return "\n".join(lines)
    except Exception as exc:  # the summary is best effort: never hide the original failure
        return f"<run summary unavailable: {exc!r}>"


def _settle(spinners, timeout_s: float = 20.0) -> None:
    """Best effort: let the nodes' live data load before a screenshot (never fails the test)."""
    deadline = time.monotonic() + timeout_s
    while spinners.count() and time.monotonic() < deadline:
        time.sleep(0.5)


def _materialize_one_partition(page, server: DagsterDev, partition: str) -> str:
    """Click through the UI to materialize ``partition`` of ``synthetic``; return the run id once it succeeded."""
    from playwright.sync_api import expect

    page.set_default_timeout(60_000)
    page.goto(server.url + "/")

    # 1. the asset graph: Lineage, filtered to the `sources` group; the `synthetic` node is in it
    page.get_by_role("link", name=re.compile(r"(^|\s)Lineage$")).first.click()
    graph = page.locator("svg foreignObject")  # the graph's nodes are HTML inside the SVG canvas
    expect(graph.first).to_be_visible(timeout=UI_TIMEOUT_MS)
    query = page.get_by_role("textbox", name="Search and filter assets")
    query.focus()
    page.keyboard.type(f'group:"{GROUP}"')
    page.keyboard.press("Enter")
    node = graph.get_by_text(ASSET, exact=True)
    try:
        expect(node).to_be_visible(timeout=20_000)
    except AssertionError:
        # the graph only renders nodes inside its viewport: selecting the asset in the side tree centres it
        page.get_by_title(ASSET, exact=True).click()
        expect(node).to_be_visible()
    _settle(graph.get_by_text("Loading…").or_(graph.get_by_text("Loading...")))
    page.screenshot(path=str(ARTIFACTS / "ui_asset_graph.png"))

    # 2. the asset page: select the node, then "View in Asset Catalog"
    node.click()
    page.get_by_role("link", name="View in Asset Catalog").click()
    expect(page).to_have_url(re.compile(rf"/assets/{ASSET}(\?|$)"))

    # 3. Materialize… -> partition selection: filter, tick the one key, close the pop-over
    page.get_by_role("button", name=re.compile(r"\bMaterialize\b")).first.click()
    dialog = page.get_by_role("dialog").filter(has_text="Partition selection")
    expect(dialog).to_be_visible()
    dialog.get_by_text("Select a partition or create one").click()
    page.get_by_placeholder("Filter partitions").fill(partition)
    page.get_by_role("menuitem").filter(has=page.get_by_text(partition, exact=True)).first.click()
    dialog.get_by_text("Launch runs to materialize").first.click()  # outside the pop-over: closes it
    expect(page.get_by_placeholder("Filter partitions")).to_be_hidden(timeout=10_000)
    expect(dialog.get_by_text("1 partition", exact=True)).to_be_visible()
    launch = dialog.get_by_role("button", name=re.compile(r"^Launch (1 )?run$"))
    expect(launch).to_be_enabled()
    page.screenshot(path=str(ARTIFACTS / "ui_launch_dialog.png"))
    launch.click()

    # 4. the run: the toast's "View" link, else the newest run of the Runs page
    try:
        page.get_by_role("link", name="View", exact=True).click(timeout=20_000)
    except Exception:
        page.get_by_role("link", name=re.compile(r"(^|\s)Runs$")).first.click()
        page.get_by_role("link", name=re.compile(r"(^|\s)[0-9a-f]{8}$")).first.click()  # newest first
    expect(page).to_have_url(re.compile(r"/runs/[0-9a-f-]{36}"))
    run_id = re.search(r"/runs/([0-9a-f-]{36})", page.url).group(1)
    server.run_id = run_id

    # 5. wait for the run's status in the UI (the run page updates live)
    success = page.get_by_text("Success", exact=True)
    failed = page.get_by_text(re.compile(r"^(Failure|Failed|Canceled|Canceling)$"))
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        if success.first.is_visible():
            break
        if failed.first.is_visible():
            raise AssertionError(f"run {run_id} did not succeed: {failed.first.inner_text()!r}")
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} did not finish in {RUN_TIMEOUT_S}s")
        page.wait_for_timeout(1000)
    expect(page.get_by_text(f"partition: {partition}", exact=False).first).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "ui_run_success.png"))

    # 6. back on the asset page, the latest materialization is there
    page.go_back()  # the run page was opened from the asset page
    if not re.search(rf"/assets/{ASSET}(\?|$)", page.url):
        page.goto(f"{server.url}/assets/{ASSET}")
    expect(page.get_by_text("Latest materialization").first).to_be_visible()
    expect(page.get_by_text("Never materialized")).to_have_count(0, timeout=30_000)
    expect(page.get_by_text(partition, exact=True).first).to_be_visible()  # the latest one's partition tag
    page.screenshot(path=str(ARTIFACTS / "ui_materialized.png"))
    return run_id


@pytest.mark.timeout(480)
def test_materialize_one_partition_from_the_ui(tmp_path, monkeypatch):
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found (apt-get install chromium)")
    target, partition = _target()
    ARTIFACTS.mkdir(exist_ok=True)
    for stale in ARTIFACTS.glob("ui_*.png"):
        stale.unlink()

    started = time.monotonic()
    env = {"OCR_FT_DATA_DIR": str(tmp_path / "data"), "OCR_FT_SYNTHETIC_PER_SHARD": TABLES_PER_SHARD}
    with dagster_dev(tmp_path, target, env=env) as server:
        monkeypatch.setenv("DAGSTER_HOME", str(server.home))  # dagster.yaml reads it: DagsterInstance.from_config
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1600, "height": 1100})
            try:
                run_id = _materialize_one_partition(page, server, partition)
            except Exception as exc:
                shot = ARTIFACTS / "ui_failure.png"
                try:
                    page.screenshot(path=str(shot))
                except Exception as shot_exc:
                    shot = f"<no screenshot: {shot_exc!r}>"
                pytest.fail(f"UI flow failed at {page.url}: {exc}\nscreenshot: {shot}\n"
                            f"--- {_run_summary(server.home, server.run_id)}\n"
                            f"--- dagster dev log tail ({server.log_path}):\n{server.log_tail()}", pytrace=True)
            finally:
                browser.close()

        # the materialization, as the instance records it
        from dagster import AssetKey, DagsterInstance, DagsterRunStatus

        with DagsterInstance.from_config(str(server.home)) as instance:
            run = instance.get_run_by_id(run_id)
            assert run is not None and run.status == DagsterRunStatus.SUCCESS, _run_summary(server.home, run_id)
            assert run.tags.get("dagster/partition") == partition
            event = instance.get_latest_materialization_event(AssetKey(ASSET))
            assert event is not None, f"no materialization of {ASSET} in {server.home}\n{server.log_tail()}"
            assert event.run_id == run_id
            assert event.dagster_event.partition == partition
            manifest = event.asset_materialization.metadata.get("manifest")
            if manifest is not None:  # what the run wrote went to OCR_FT_DATA_DIR, not the repo's data/
                assert Path(manifest.value).is_file() and Path(manifest.value).is_relative_to(tmp_path / "data")
    print(f"UI end-to-end: {time.monotonic() - started:.0f}s with dagster dev up (run {run_id}, {partition})")
