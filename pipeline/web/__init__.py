"""The Detections view: verdicts from MongoDB as HTML pages and a JSON API (a FastAPI app).

Pure application code: Airflow's plugin (``plugins/mediacheck_detections.py``) supplies the
store, and the login and permission checks, when it mounts the app.
"""
