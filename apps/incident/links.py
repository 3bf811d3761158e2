"""Grafana Explore links that open a query over the diagnosed window (datasource uids as provisioned)."""

from __future__ import annotations

import json
from urllib.parse import quote

DEFAULT_GRAFANA_URL = "http://localhost:3000"
DATASOURCE_UIDS = {"metrics": "prometheus", "traces": "tempo", "logs": "loki"}


def explore_link(signal: str, query: str, start: float, end: float, grafana_url: str = DEFAULT_GRAFANA_URL) -> str:
    uid = DATASOURCE_UIDS[signal]
    target: dict[str, object] = {"refId": "A", "datasource": {"uid": uid}}
    if signal == "traces":
        target.update(queryType="traceql", query=query)
    else:
        target["expr"] = query
    pane = {
        "datasource": uid,
        "queries": [target],
        # A little before and after the window, so the change itself is in view.
        "range": {"from": str(int((start - (end - start)) * 1000)), "to": str(int(end * 1000))},
    }
    panes = quote(json.dumps({"a": pane}, separators=(",", ":")), safe="")
    return f"{grafana_url.rstrip('/')}/explore?schemaVersion=1&orgId=1&panes={panes}"
