"""The provisioned dashboards, and every query in them, as the tests see them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from shop import REPO

DASHBOARD_DIR = REPO / "grafana" / "dashboards"
# Grafana's own variables (and data-link macros) that no dashboard defines.
BUILTIN_VARIABLES = {
    "__rate_interval",
    "__interval",
    "__range",
    "__url_time_range",
    "__field",
    "__value",
    "__all",
    "__auto",
    "__span",
    "__tags",
    "__data",
    "__series",
}
LANGUAGES = {"prometheus": "promql", "loki": "logql", "tempo": "traceql"}
_PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "inf",
    "nan",
}


def load_dashboards() -> dict[str, dict[str, Any]]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(DASHBOARD_DIR.glob("*.json"))}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, nested panels of collapsed rows too."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


@dataclass(frozen=True)
class Query:
    dashboard: str
    where: str  # panel title, "annotation: …" or "variable: …"
    language: str  # promql, logql, traceql
    text: str
    empty_is_healthy: bool = False  # the panel says what "no data" means (noValue), e.g. "No alerts firing"


def queries(name: str, dashboard: dict[str, Any]) -> Iterator[Query]:
    for panel in panels(dashboard):
        healthy_empty = "noValue" in panel.get("fieldConfig", {}).get("defaults", {})
        for target in panel.get("targets", []):
            language = LANGUAGES[target["datasource"]["type"]]
            if language == "traceql" and target.get("queryType") != "traceql":
                continue  # the service map: a Tempo query type with no query text
            text = target.get("expr") or target.get("query")
            yield Query(name, panel["title"], language, text, healthy_empty)
    for annotation in dashboard["annotations"]["list"]:
        language = LANGUAGES.get(annotation.get("datasource", {}).get("type", ""))
        if language:
            yield Query(name, f"annotation: {annotation['name']}", language, annotation["expr"], True)
    for variable in dashboard["templating"]["list"]:
        match = re.fullmatch(r"label_values\((.+), *\w+\)", variable["definition"])
        assert match, f"{name}: variable {variable['name']} is not a label_values() query"
        yield Query(name, f"variable: {variable['name']}", "promql", match.group(1))


def variables_used(text: str) -> set[str]:
    return set(re.findall(r"\$\{?(\w+)", text)) - BUILTIN_VARIABLES


def metric_names(promql: str) -> set[str]:
    """Metric names a PromQL expression reads (functions, keywords, labels and strings stripped)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', promql)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\boffset\s+\w+", "", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        token = match.group(0)
        if text[match.end() :].lstrip().startswith("(") or token.lower() in _PROMQL_WORDS:
            continue
        if text[match.start() - 1 : match.start()] == "$":
            continue
        names.add(token)
    return names


def substitute(promql: str, values: dict[str, str]) -> str:
    """What Grafana sends: variables replaced, $__rate_interval and $__range concrete windows."""
    text = promql.replace("$__rate_interval", "1m").replace("$__range", "30m")
    for name, value in values.items():
        text = text.replace(f"${name}", value)
    return text


def logql_fields(logql: str) -> set[str]:
    """The labels and structured metadata a LogQL query reads beyond its stream selector: label filters
    (`| name="..."`) and the fields of its line_format template (`{{.name}}`)."""
    outside = re.sub(r'"(?:[^"\\]|\\.)*"', '""', "".join(logql.split("`")[0::2]))
    filters = set(re.findall(r"\|\s*(\w+)\s*[=!]~?", outside))
    actions = re.findall(r"\{\{(.*?)\}\}", " ".join(logql.split("`")[1::2]))
    return filters | {field for action in actions for field in re.findall(r"(?<![\w)])\.(\w+)", action)}


def loki_name(attribute: str) -> str:
    """The name Loki's OTLP ingestion gives an attribute (otlptranslator's label namer): dots and any other
    character not allowed in a label name become underscores."""
    return re.sub(r"[^A-Za-z0-9_]", "_", attribute)


def grid_overlaps(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """Pairs of top-level panels whose grid rectangles intersect."""
    boxes = [(p["title"], p["gridPos"]) for p in dashboard["panels"]]

    def meet(a: dict[str, int], b: dict[str, int], start: str, size: str) -> bool:
        return a[start] < b[start] + b[size] and b[start] < a[start] + a[size]

    return [
        (a, b)
        for i, (a, ga) in enumerate(boxes)
        for b, gb in boxes[i + 1 :]
        if meet(ga, gb, "x", "w") and meet(ga, gb, "y", "h")
    ]
