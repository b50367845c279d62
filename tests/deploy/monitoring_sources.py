"""What the monitoring reads: the alert rules' and the dashboard's PromQL, the series selectors in
them, and whether a scrape holds a series each selector matches. Shared by the rule, dashboard,
first-scrape and end-to-end tests."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import yaml

from tests.deploy.conftest import DOCKER

RULES_FILE = DOCKER / "prometheus" / "rules" / "himnet.rules.yml"
RULE_TESTS_DIR = DOCKER / "prometheus" / "tests"
DASHBOARD_FILE = DOCKER / "grafana" / "dashboards" / "himnet.json"
# labels Prometheus attaches at scrape time (not in the service's own /metrics text)
TARGET_LABELS = {"job", "instance"}
# series Prometheus makes itself for each target
SCRAPE_SERIES = {"up"}

_SELECTOR = re.compile(r"\b(himnet_[a-zA-Z0-9_]+|up\b)(?:\{([^}]*)\})?")
_MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


def rule_groups() -> list[dict[str, Any]]:
    return yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))["groups"]


def alerts() -> list[dict[str, Any]]:
    return [r for g in rule_groups() for r in g["rules"] if "alert" in r]


def rule_queries() -> list[str]:
    return [str(r["expr"]) for g in rule_groups() for r in g["rules"]]


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard's panels (Grafana's label_values() excluded)."""
    dashboard = json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))
    exprs: list[str] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            exprs.extend(t["expr"] for t in panel.get("targets", []) if t.get("expr"))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    return exprs


@dataclass(frozen=True)
class Selector:
    """One series selector: a metric name and its label matchers ``(label, op, value)``."""

    metric: str
    matchers: tuple[tuple[str, str, str], ...]

    def matches(self, name: str, labels: dict[str, str]) -> bool:
        if name != self.metric:
            return False
        for label, op, value in self.matchers:
            have = labels.get(label, "")
            if op == "=" and have != value or op == "!=" and have == value:
                return False
            if op == "=~" and not re.fullmatch(value, have):
                return False
            if op == "!~" and re.fullmatch(value, have):
                return False
        return True

    def __str__(self) -> str:
        inner = ", ".join(f'{k}{op}"{v}"' for k, op, v in self.matchers)
        return f"{self.metric}{{{inner}}}"


def selectors(expr: str, *, drop: set[str] = frozenset()) -> list[Selector]:
    """The series selectors of a PromQL expression; matchers on labels in ``drop`` (and on
    Grafana variables) are left out."""
    found = []
    for metric, body in _SELECTOR.findall(expr):
        matchers = tuple((k, op, v) for k, op, v in _MATCHER.findall(body or "")
                         if k not in drop and "$" not in v)
        found.append(Selector(metric, matchers))
    return found


def unmatched(exprs: list[str], samples: list[tuple[str, dict[str, str]]],
              drop: set[str] = TARGET_LABELS) -> list[str]:
    """Selectors of ``exprs`` that no sample ``(name, labels)`` matches."""
    missing = set()
    for expr in exprs:
        for sel in selectors(expr, drop=drop):
            if sel.metric in SCRAPE_SERIES:
                continue
            if not any(sel.matches(name, labels) for name, labels in samples):
                missing.add(str(sel))
    return sorted(missing)
