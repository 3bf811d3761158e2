"""Check a values file against its chart's own values.yaml: every key it sets must be one the chart has.

    helm show values grafana-community/loki --version 18.11.0 > /tmp/loki-defaults.yaml
    python deploy/kubernetes/helm/check_values.py loki /tmp/loki-defaults.yaml

(`loki` is a release in charts.yaml, which names its values file.) No Helm renders here (no helm binary on the
lab's machines, no cluster), so this is how the values were checked (../README.md, "Helm values"): a key the chart
does not read is the mistake that passes silently. Below a key whose default is empty ({} or null), a scalar or a
list, anything goes: free-form configuration the chart hands to the component, which checks it when it starts;
likewise below the `passthrough` keys charts.yaml lists. Exits 1 and names every unknown key.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).parent


def unknown_keys(values: Any, defaults: Any, passthrough: set[str], path: str = "") -> list[str]:
    if path in passthrough or not isinstance(values, dict) or not isinstance(defaults, dict) or not defaults:
        return []
    problems = []
    for key, value in values.items():
        where = f"{path}.{key}" if path else str(key)
        if where in passthrough:
            continue
        if key not in defaults:
            problems.append(where)
        else:
            problems.extend(unknown_keys(value, defaults[key], passthrough, where))
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    charts = {chart["release"]: chart for chart in yaml.safe_load((HERE / "charts.yaml").read_text())["charts"]}
    chart = charts[argv[1]]
    values_path = HERE / chart["values"]
    values = yaml.safe_load(values_path.read_text())
    defaults = yaml.safe_load(Path(argv[2]).read_text())
    problems = unknown_keys(values, defaults, set(chart.get("passthrough", [])))
    for problem in problems:
        print(f"{values_path}: {problem} is not a key of {chart['chart']} {chart['version']}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
