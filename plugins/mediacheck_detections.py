"""Airflow plugin: the Detections view (pipeline.web) behind Airflow's own login.

Airflow does not authenticate plugin apps itself, so every route requires a logged-in user
allowed to see the website, and uploads also require permission to trigger ``score_incoming``
(an upload is scored by that DAG). Browsers without a session are sent to Airflow's login.
"""

from __future__ import annotations

from functools import cache

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.resource_details import AccessView, DagAccessEntity
from airflow.api_fastapi.core_api.security import requires_access_dag, requires_access_view
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends
from mediacheck_hooks import result_store

from pipeline import tracking
from pipeline.settings import get_settings
from pipeline.web.app import create_app

SCORE_DAG = "score_incoming"


@cache
def _store():
    return result_store(get_settings())


detections_app = create_app(
    settings=get_settings,
    store=_store,
    read_access=[Depends(requires_access_view(AccessView.WEBSITE))],
    upload_access=[Depends(requires_access_dag("POST", DagAccessEntity.RUN, SCORE_DAG))],
    login_url=lambda next_url: get_auth_manager().get_url_login(next_url=next_url),
    run_url=lambda run_id: tracking.run_url(get_settings(), run_id),
)


class DetectionsPlugin(AirflowPlugin):
    name = "mediacheck_detections"
    fastapi_apps = [{"app": detections_app, "url_prefix": "/detections", "name": "Detections"}]
    external_views = [{"name": "Detections", "href": "detections/", "destination": "nav", "url_route": "detections"}]
