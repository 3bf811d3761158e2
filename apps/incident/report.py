"""A diagnosis as a person reads it at 3 a.m.: verdict and culprit first, then the evidence per signal."""

from __future__ import annotations

import time

from .diagnosis import Diagnosis

SIGNAL_TITLES = {"metrics": "Metrics (Prometheus)", "traces": "Traces (Tempo)", "logs": "Logs (Loki)"}


def _clock(moment: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(moment))


def render(diagnosis: Diagnosis) -> str:
    lines = []
    window = (
        f"{_clock(diagnosis.start)}-{_clock(diagnosis.end)} against the {int(diagnosis.end - diagnosis.start)} s before"
    )
    partial = (
        " (PARTIAL: " + "; ".join(f"{k}: {v}" for k, v in diagnosis.unavailable.items()) + ")"
        if diagnosis.partial
        else ""
    )
    culprit = diagnosis.culprit
    if culprit is None and diagnosis.status == "unknown":
        lines.append(f"UNKNOWN  no backend could be read{partial}")
    elif culprit is None:
        lines.append(f"HEALTHY  nothing stands out in {window}{partial}")
    else:
        where = f" {culprit.operation}" if culprit.operation else ""
        lines.append(f"INCIDENT  {culprit.symptom} in {culprit.service}{where}{partial}")
        lines.append(
            f"  culprit     {culprit.service}  operation: {culprit.operation or '-'}  symptom: {culprit.symptom}"
        )
        lines.append(f"  confidence  {diagnosis.confidence:.0%}    window {window}")
        ranked = "  ".join(
            f"{c.service}{' ' + c.operation if c.operation else ''} {c.score:.2f}" for c in diagnosis.candidates
        )
        lines.append(f"  candidates  {ranked}")
    operation = culprit.operation if culprit else None
    for signal, title in SIGNAL_TITLES.items():
        # What names the culprit's operation first; the rest (victims, side effects) after it.
        shown = sorted(
            (e for e in diagnosis.evidence if e.signal == signal),
            key=lambda e: not (operation and operation in e.summary),
        )
        if not shown:
            continue
        lines.append("")
        lines.append(f"{title}    open in Grafana: {shown[0].link}")
        for evidence in shown[:4]:
            lines.append(f"  - {evidence.summary}")
            lines.append(f"      {evidence.query}")
            if evidence.trace_ids:
                lines.append(f"      traces: {', '.join(evidence.trace_ids)}")
            for line in evidence.lines:
                lines.append(f"      log: {line}")
    lines.append("")
    lines.append(f"diagnosed in {diagnosis.seconds_taken:.1f} s")
    return "\n".join(lines)
