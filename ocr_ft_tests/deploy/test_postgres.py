"""The deployment's database for real: a local PostgreSQL server (Debian's binaries) holds an Optuna study
of 2 tiny-model trials and the storage of a Dagster instance (dagster-postgres, as docker/dagster.yaml
configures it) on which one source partition materializes."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

PG_BINS = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
pytestmark = pytest.mark.skipif(not PG_BINS, reason="Debian's postgresql is not installed (no "
                                "/usr/lib/postgresql/*/bin/initdb): apt-get install postgresql, as .ci/setup does")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_user(cmd: list[str], user: str | None) -> list[str]:
    return ["runuser", "-u", user, "--", *cmd] if user else cmd


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    """A throwaway server on 127.0.0.1:<free port>, trust auth, superuser `ocr_ft`; stopped afterwards."""
    bin_dir = Path(PG_BINS[-1]).parent
    # not under pytest's tmp dir: that is private to root, and the server runs as another user
    root = Path(tempfile.mkdtemp(prefix="ocr_ft_pg_"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    user = None
    if os.geteuid() == 0:  # initdb refuses to run as root
        user = "postgres" if shutil.which("runuser") and _user_exists("postgres") else "nobody"
        shutil.chown(root, user)
        shutil.chown(sock, user)
        os.chmod(root, 0o700)
    _run(_as_user([str(bin_dir / "initdb"), "-D", str(data), "-U", "ocr_ft", "--auth=trust",
                   "--encoding=UTF8", "--no-instructions"], user), root)
    port = _free_port()
    log = root / "server.log"
    _run(_as_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o",
                   f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off", "start"], user), root)
    try:
        yield {"host": "127.0.0.1", "port": port, "user": "ocr_ft", "db": "postgres",
               "url": f"postgresql+psycopg2://ocr_ft@127.0.0.1:{port}/ocr_ft_optuna"}
    finally:
        subprocess.run(_as_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], user),
                       capture_output=True, cwd=root)
        shutil.rmtree(root, ignore_errors=True)


def _run(cmd: list[str], cwd: Path) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr or done.stdout}")


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


@pytest.mark.slow
def test_two_trial_study_on_postgres_resumes_from_the_database(postgres, tmp_path):
    import optuna
    import yaml

    from ocr_ft.train.config import TINY_CONFIG_PATH, load_config
    from ocr_ft.train.search import load_space, run_study
    from ocr_ft.train.tiny import build_tiny_model
    from train.conftest import make_records

    data = tmp_path / "data"
    train, val = make_records(data, 8, seed=1, prefix="train"), make_records(data, 2, seed=2, prefix="val")
    model = build_tiny_model(tmp_path / "tiny", [r["ground_truth_html"] for r in train + val], seed=0)
    cfg = load_config(TINY_CONFIG_PATH, base_model=str(model), max_seq_len=512, max_pixels=28 * 28 * 48,
                      max_eval_samples=2)
    space_file = tmp_path / "pg_space.yaml"
    space_file.write_text(yaml.safe_dump({"sampler": "random", "fixed": {"max_steps": 1, "eval_steps": 1},
                                          "params": {"learning_rate": {"low": 1e-3, "high": 1e-2, "log": True}}}))
    kw = dict(space=load_space(space_file), base_config=cfg, train_records=train, val_records=val, data_dir=data,
              out_dir=tmp_path / "search", storage_url=postgres["url"], study_name="pg-study", n_trials=2)
    res = run_study(**kw)
    assert res.ran_now == 2 and res.counts["complete"] == 2 and res.storage == postgres["url"]
    # the trials are in PostgreSQL, not in a file: another client sees them, and a rerun runs nothing
    study = optuna.load_study(study_name="pg-study", storage=postgres["url"])
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert study.best_value == res.best_value
    assert run_study(**kw).ran_now == 0


@pytest.mark.slow
@pytest.mark.browser
def test_source_partition_materializes_on_a_postgres_instance(postgres, tmp_path):
    import dagster as dg
    import yaml

    from ocr_ft.defs.sources import synthetic, synthetic_validated
    from ocr_ft.resources import OcrFtPaths, RendererResource

    repo = Path(__file__).resolve().parents[2]
    deployed = yaml.safe_load((repo / "docker" / "dagster.yaml").read_text())
    home = tmp_path / "home"
    home.mkdir()
    # the deployment's storage block as it is (scheme included), with the server's address in the variables it
    # names; only the port differs from the deployment's 5432
    env = {"DAGSTER_POSTGRES_HOST": postgres["host"], "DAGSTER_POSTGRES_USER": postgres["user"],
           "DAGSTER_POSTGRES_PASSWORD": "unused-with-trust-auth", "DAGSTER_POSTGRES_DB": postgres["db"]}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    storage_block = deployed["storage"]["postgres"]["postgres_db"]
    storage_block["port"] = postgres["port"]
    (home / "dagster.yaml").write_text(yaml.safe_dump({"storage": deployed["storage"]}))
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            resources = {"paths": OcrFtPaths(data_dir=str(tmp_path / "data")),
                         "renderer": RendererResource(pool_size=1)}
            res = dg.materialize([synthetic, synthetic_validated], partition_key="shard-001", instance=instance,
                                 resources=resources, run_config={"ops": {"synthetic": {"config": {"per_shard": 2}}}})
            assert res.success
            run_id = res.run_id
        # a fresh instance on the same database sees the run and the partition's materialization
        with dg.DagsterInstance.from_config(str(home)) as again:
            assert again.get_run_by_id(run_id).is_success
            event = again.get_latest_materialization_event(dg.AssetKey("synthetic"))
            assert event.asset_materialization.partition == "shard-001"
            assert event.asset_materialization.metadata["pairs"].value == 2
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
