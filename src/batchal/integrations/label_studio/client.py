"""The two calls the backend makes to Label Studio's REST API."""

from __future__ import annotations

import json
import urllib.request


class LabelStudioClient:
    """The two calls the backend makes to Label Studio's REST API (a legacy token, or a personal
    access token exchanged at ``/api/token/refresh`` for each use)."""

    def __init__(self, url: str, api_key: str, timeout: float = 120):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"--label-studio-url must start with http:// or https://; got {url!r}")
        self.url, self.api_key, self.timeout = url.rstrip("/"), api_key, timeout

    def _call(self, method: str, path: str, body=None, auth: bool = True):
        headers = {"Content-Type": "application/json"}
        if auth:
            if self.api_key.count(".") == 2:  # a JWT personal access token
                access = self._call("POST", "/api/token/refresh", {"refresh": self.api_key}, auth=False)["access"]
                headers["Authorization"] = f"Bearer {access}"
            else:
                headers["Authorization"] = f"Token {self.api_key}"
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode() if body is not None else None,
                                         method=method, headers=headers)
        with urllib.request.urlopen(request, timeout=self.timeout) as answer:
            text = answer.read()
        return json.loads(text) if text else None

    def refresh_ranking(self, project_id: int, version: str) -> dict:
        """Ask for every task's prediction (Label Studio fetches those of ``version``), then make
        ``version`` the project's model version (it must exist as predictions first)."""
        done = self._call("POST", f"/api/dm/actions?id=retrieve_tasks_predictions&project={project_id}",
                          {"selectedItems": {"all": True, "excluded": []}})
        self._call("PATCH", f"/api/projects/{project_id}", {"model_version": version})
        return done

    def secure_webhooks(self, project_id: int, headers: dict[str, str]) -> int:
        """Give the project's ML-backend webhooks (``.../webhook``, which Label Studio creates for a
        connected model and sends without the connection's basic auth) ``headers``; returns how many
        were changed."""
        changed = 0
        for hook in self._call("GET", f"/api/webhooks/?project={project_id}") or []:
            url = str(hook.get("url", "")).rstrip("/")
            if hook.get("project") == project_id and url.endswith("/webhook") and hook.get("headers") != headers:
                self._call("PATCH", f"/api/webhooks/{hook['id']}/", {"headers": headers})
                changed += 1
        return changed
