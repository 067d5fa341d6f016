"""The scale-out stack's wiring, checked without a Docker engine."""

import re
import shutil
import subprocess

import pytest
import yaml

from pipeline.settings import PROJECT_ROOT

COMPOSE = yaml.safe_load((PROJECT_ROOT / "docker-compose.yaml").read_text())
SERVICES = COMPOSE["services"]
ENV_EXAMPLE = {
    line.split("=", 1)[0]
    for line in (PROJECT_ROOT / ".env.example").read_text().splitlines()
    if line and not line.startswith("#")
}
AIRFLOW_ROLES = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
)


def test_every_dependency_and_volume_exists():
    for name, service in SERVICES.items():
        assert set(service.get("depends_on", {})) <= set(SERVICES), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (PROJECT_ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in COMPOSE["volumes"], f"{name} uses undeclared volume {source}"


def test_every_interpolated_variable_is_in_the_env_example():
    text = (PROJECT_ROOT / "docker-compose.yaml").read_text()
    used = set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)", text))
    assert used and used <= ENV_EXAMPLE, used - ENV_EXAMPLE


def test_the_distributed_engine_is_complete_with_health_checks():
    for role in (*AIRFLOW_ROLES, "postgres", "redis", "mongo", "minio", "mlflow"):
        assert "healthcheck" in SERVICES[role], role
    assert SERVICES["airflow-worker"]["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert SERVICES["mongo"]["image"].startswith("mongo:8")
    for role in AIRFLOW_ROLES:
        assert SERVICES[role]["build"]["dockerfile"] == "Dockerfile"
        assert (PROJECT_ROOT / SERVICES[role]["build"]["dockerfile"]).is_file()
        assert SERVICES[role]["environment"]["MEDIACHECK_STORAGE__INCOMING_URI"].startswith("s3://")


def test_ports_are_the_documented_ones():
    published = {
        port.rsplit(":", 2)[-2] if port.count(":") > 1 else port.split(":")[0]
        for service in SERVICES.values()
        for port in service.get("ports", [])
    }
    assert published == {"8080", "5000", "9000", "9001", "27017"}
    guide = (PROJECT_ROOT / "docs" / "deployment.md").read_text()  # linked from the README
    for url in ("http://localhost:8080", "http://localhost:5000", "http://localhost:9001"):
        assert url in guide


def test_gpu_profile_reserves_nvidia_devices_and_listens_on_the_gpu_queue():
    gpu = SERVICES["airflow-worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    assert "gpu" in gpu["command"] and gpu["build"]["args"]["LOCK"] == "requirements-gpu.txt"
    assert "ARG LOCK=requirements.txt" in (PROJECT_ROOT / "Dockerfile").read_text()  # the CPU image's default


def test_images_leave_out_the_embedded_mongodb_server():
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    assert "grep -viE '^secantusdb=='" in dockerfile
    assert "secantusdb==" in (PROJECT_ROOT / "requirements.txt").read_text().lower()  # so the filter matters


def _compose_client() -> list[str] | None:
    """``docker compose`` (v2) if present, else Debian's ``docker-compose`` (v1.29), else None."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_docker_compose_config_validates_where_the_client_exists(tmp_path):
    client = _compose_client()
    if client is None:
        pytest.skip("no docker compose client on this machine (apt-get install docker-compose)")
    for name in ("docker-compose.yaml", "Dockerfile"):
        shutil.copy(PROJECT_ROOT / name, tmp_path / name)
    shutil.copytree(PROJECT_ROOT / "docker", tmp_path / "docker")
    shutil.copy(PROJECT_ROOT / ".env.example", tmp_path / ".env")  # the one secrets file, as the README says
    for profile in ([], ["--profile", "gpu"]):
        result = subprocess.run(
            [*client, *profile, "config", "--services"], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        services = set(result.stdout.split())
        assert {"airflow-apiserver", "airflow-worker", "mongo", "mlflow", "minio"} <= services
        assert "airflow-worker-gpu" in services or not profile
