# One image for every Airflow role, the MLflow server and the CLI, built from the pinned lock.
# GPU workers: docker compose --profile gpu (build arg LOCK=requirements-gpu.txt: CUDA TensorFlow).
FROM python:3.11-slim-bookworm

ARG LOCK=requirements.txt
ENV PYTHONUNBUFFERED=1 \
    AIRFLOW_HOME=/opt/airflow \
    MEDIACHECK_STORAGE__ROOT=/opt/mediacheck/data

RUN useradd --create-home --uid 50000 --gid 0 airflow
WORKDIR /opt/mediacheck

COPY requirements.txt requirements-gpu.txt ./
# The embedded MongoDB-wire server is for local runs and tests only: production uses MongoDB.
RUN pip install --no-cache-dir uv==0.13.9 \
 && grep -viE '^secantusdb==' "$LOCK" > /tmp/requirements.txt \
 && uv pip install --system --no-cache -r /tmp/requirements.txt

COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY configs ./configs
COPY dags /opt/airflow/dags
COPY plugins /opt/airflow/plugins
RUN uv pip install --system --no-deps -e . \
 && mkdir -p /opt/mediacheck/data && chown -R airflow:0 /opt/mediacheck /opt/airflow

USER airflow
