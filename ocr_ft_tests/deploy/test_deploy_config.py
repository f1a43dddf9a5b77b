"""Deployment files validated with Dagster's own config schemas (no Docker engine or cluster runs here)."""

from pathlib import Path

import pytest
import yaml
from dagster._config import process_config, validate_config
from dagster._core.instance.config import dagster_instance_config_schema
from dagster._core.workspace.config_schema import process_workspace_config

ROOT = Path(__file__).resolve().parents[2]
ENV = {"DAGSTER_POSTGRES_HOST": "postgres", "DAGSTER_POSTGRES_USER": "dagster", "DAGSTER_POSTGRES_PASSWORD": "x",
       "DAGSTER_POSTGRES_DB": "dagster", "OCR_FT_USER_CODE_IMAGE": "ocr-ft-user-code:latest"}


def load(rel: str) -> dict:
    return yaml.safe_load((ROOT / rel).read_text(encoding="utf-8"))


@pytest.fixture(autouse=True)
def deployment_env(monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)


@pytest.mark.parametrize("rel", ["dagster.yaml", "docker/dagster.yaml", "docker/k8s/dagster.yaml"])
def test_instance_configs_validate(rel):
    result = validate_config(dagster_instance_config_schema(), load(rel))
    assert result.success, result.errors


def test_local_instance_has_gpu_and_api_pools_of_one():
    cfg = load("dagster.yaml")
    assert cfg["concurrency"]["pools"]["default_limit"] == 1
    assert {"key": "ocr_ft/gpu", "limit": 1} in cfg["concurrency"]["runs"]["tag_concurrency_limits"]
    assert cfg["telemetry"]["enabled"] is False


def test_docker_storage_and_launcher_validate_against_their_classes():
    from dagster_docker import DockerRunLauncher
    from dagster_postgres import DagsterPostgresStorage

    cfg = load("docker/dagster.yaml")
    for cls, section in [(DockerRunLauncher, cfg["run_launcher"]["config"]), (DagsterPostgresStorage, cfg["storage"]["postgres"])]:
        res = process_config(cls.config_type(), section)
        assert res.success, (cls.__name__, res.errors)


def test_k8s_launcher_and_training_pod_validate():
    from dagster_k8s import K8sRunLauncher
    from dagster_k8s.job import UserDefinedDagsterK8sConfig

    res = process_config(K8sRunLauncher.config_type(), load("docker/k8s/dagster.yaml")["run_launcher"]["config"])
    assert res.success, res.errors
    pod = UserDefinedDagsterK8sConfig.from_dict(load("docker/k8s/training_pod.yaml"))
    assert pod.container_config["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_compose_wires_workspace_to_the_code_server():
    compose = load("docker/compose.yaml")
    services = compose["services"]
    assert {"postgres", "ocr_ft_user_code", "webserver", "daemon"} <= set(services)
    workspace = load("workspace.yaml")
    assert process_workspace_config(workspace).success
    grpc = workspace["load_from"][0]["grpc_server"]
    assert grpc["host"] == "ocr_ft_user_code" and grpc["location_name"] == "ocr_ft"
    dockerfile = (ROOT / services["ocr_ft_user_code"]["build"]["dockerfile"]).read_text()
    assert f'"-p", "{grpc["port"]}"' in dockerfile and "ocr_ft.definitions" in dockerfile
    assert "chromium" in dockerfile and "fonts-noto-cjk" in dockerfile
    # a pip-installed package has no docker/ or data/ folder: the image carries them and says where
    assert "COPY docker/k8s/training_pod.yaml ./k8s/training_pod.yaml" in dockerfile
    assert "OCR_FT_K8S_TRAINING_POD=/opt/ocr_ft/k8s/training_pod.yaml" in dockerfile
    assert "COPY data/samples ./samples" in dockerfile and "OCR_FT_EXISTING_DIR=/opt/ocr_ft/samples/existing" in dockerfile
    for name in ("webserver", "daemon"):
        assert "workspace.yaml" in services[name]["entrypoint"]
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    env = services["webserver"]["environment"]
    assert env["DAGSTER_POSTGRES_HOST"] == "postgres"
    # the launcher's network is the compose network, so run containers reach postgres
    assert load("docker/dagster.yaml")["run_launcher"]["config"]["network"] in compose["networks"]


def test_training_pod_builds_with_the_kubernetes_pipes_client(tmp_path, monkeypatch):
    import shutil

    from dagster_k8s.pipes import build_pod_body

    from ocr_ft.defs.training import TrainingLauncher

    # as in the image: the spec is wherever OCR_FT_K8S_TRAINING_POD says
    copy = tmp_path / "training_pod.yaml"
    shutil.copy(ROOT / "docker" / "k8s" / "training_pod.yaml", copy)
    monkeypatch.setenv("OCR_FT_K8S_TRAINING_POD", str(copy))
    launcher = TrainingLauncher(kind="k8s", image="ocr-ft-user-code:gpu")
    pod = build_pod_body("ocr-ft-train", launcher.image, launcher.command, {"DAGSTER_PIPES_CONTEXT": "x"}, None,
                         launcher.k8s_pod_spec())
    container = pod.spec.containers[0]
    assert container.image == "ocr-ft-user-code:gpu" and container.command == launcher.command
    assert container.resources.limits["nvidia.com/gpu"] == "1"
    assert {v.name for v in pod.spec.volumes} == {"ocr-ft-data", "dshm"}
    assert pod.spec.node_selector == {"nvidia.com/gpu.present": "true"}


def test_missing_training_pod_spec_is_a_clear_failure(monkeypatch, tmp_path):
    import dagster as dg

    from ocr_ft.defs.training import TrainingLauncher

    with pytest.raises(dg.Failure, match="OCR_FT_K8S_TRAINING_POD"):
        TrainingLauncher(kind="k8s", pod_spec_file=str(tmp_path / "nope.yaml")).k8s_pod_spec()


def test_evaluation_step_asks_kubernetes_for_a_gpu():
    from dagster_k8s.job import get_user_defined_k8s_config

    from ocr_ft.definitions import defs

    node = defs.resolve_assets_def("evaluation_report").node_def
    cfg = get_user_defined_k8s_config(node.tags)
    assert cfg.container_config["resources"]["limits"]["nvidia.com/gpu"] == "1"
