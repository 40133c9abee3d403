"""Shows and sends the GCP launcher's requests: REST calls with ADC, Vertex AI jobs with its client.

Only the CLI's non-dry-run paths come here; nothing in the tests does.
"""

from __future__ import annotations

import json

from infra import gcp_requests, launcher
from infra.launcher import LauncherError


def show_call(call: gcp_requests.RestCall) -> None:
    """Prints a call: method and URL, its JSON body, and the gcloud command that does the same."""
    launcher.heading(f"{call.method} {call.url}")
    if call.body is not None:
        launcher.show_json(call.body)
    if call.gcloud:
        launcher.heading("gcloud equivalent:")
        launcher.show_command(call.gcloud)


def authorized_session():
    """A requests session with Application Default Credentials (cloud-platform scope)."""
    import google.auth
    from google.auth.transport.requests import AuthorizedSession

    credentials, _ = google.auth.default(scopes=[gcp_requests.CLOUD_PLATFORM_SCOPE])
    return AuthorizedSession(credentials)


def send(session, call: gcp_requests.RestCall, *, allow_conflict: bool = False) -> dict:
    """Sends one call; an HTTP error becomes one line (LauncherError)."""
    response = session.request(call.method, call.url, json=call.body)
    if allow_conflict and response.status_code == 409:
        print(f"exists already: {call.url}")
        return {}
    if response.status_code >= 400:
        try:
            message = response.json().get("error", {}).get("message", "")
        except ValueError:
            message = response.text[:200]
        raise LauncherError(f"{call.method} {call.url}: HTTP {response.status_code}: {message}")
    result = response.json() if response.content else {}
    print(f"{call.method} {call.url}: {result.get('status') or result.get('state') or 'ok'}")
    return result


def show_result(action: str, result: dict) -> None:
    if action == "logs":
        for entry in result.get("entries", []):
            payload = entry.get("textPayload") or entry.get("jsonPayload", {}).get("message", "")
            print(f"{entry.get('timestamp', '')} {payload}")
        if "contents" in result:  # a serial console
            print(result["contents"], end="")
    elif action == "status":
        print(json.dumps(result, indent=2))


def create_custom_job(project: str, region: str, body: dict) -> str:
    """Submits a CustomJob REST body with aiplatform_v1.JobServiceClient; returns its name."""
    from google.cloud import aiplatform_v1
    from google.protobuf import json_format

    client = aiplatform_v1.JobServiceClient(
        client_options={"api_endpoint": f"{region}-aiplatform.googleapis.com"}
    )
    job = aiplatform_v1.CustomJob.pb(aiplatform_v1.CustomJob())
    json_format.ParseDict(body, job)
    created = client.create_custom_job(
        parent=f"projects/{project}/locations/{region}",
        custom_job=aiplatform_v1.CustomJob.wrap(job),
    )
    return f"{created.name} ({created.state.name})"
