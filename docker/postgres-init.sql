-- A second database beside Airflow's for the MLflow tracking server.
CREATE DATABASE mlflow OWNER airflow;
