"""Render k8s/base/prometheusrule.yaml from docker/prometheus/rules/himnet.rules.yml.

The rule file is the one source of the alerts: the compose Prometheus loads it as it is, and the
Prometheus Operator gets the same groups wrapped in a ``PrometheusRule``. Run after editing the
rules; ``--check`` only compares (tests/deploy/test_alerts.py does the same).

    .venv/bin/python scripts/prometheusrule.py [--check]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "docker" / "prometheus" / "rules" / "himnet.rules.yml"
TARGET = REPO / "k8s" / "base" / "prometheusrule.yaml"
HEADER = """\
# GENERATED from docker/prometheus/rules/himnet.rules.yml by scripts/prometheusrule.py - edit the
# rule file, then run `.venv/bin/python scripts/prometheusrule.py`. For the Prometheus Operator
# (CRD monitoring.coreos.com/v1); docs/runbook.md explains each alert.
"""


def render(rules_text: str) -> str:
    """The PrometheusRule manifest (text) holding the rule file's groups unchanged."""
    groups = yaml.safe_load(rules_text)["groups"]
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "himnet-forecast",
                     "labels": {"app.kubernetes.io/name": "himnet-forecast"}},
        "spec": {"groups": groups},
    }
    return HEADER + yaml.safe_dump(doc, sort_keys=False, width=100, allow_unicode=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the committed manifest differs from the rule file")
    args = parser.parse_args(argv)
    wanted = render(RULES.read_text(encoding="utf-8"))
    if args.check:
        current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        if current != wanted:
            print(f"{TARGET.relative_to(REPO)} is out of date: run scripts/prometheusrule.py",
                  file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(wanted, encoding="utf-8")
    print(f"wrote {TARGET.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
