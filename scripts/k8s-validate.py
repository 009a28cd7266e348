#!/usr/bin/env python3
"""Validate Kubernetes manifests offline against the Kubernetes JSON schemas.

    .tools/venv/bin/python scripts/k8s-validate.py [--versions 1.29.0,1.37.0] FILE...

Every object of every (multi-document) YAML file is checked in strict mode (unknown fields are
errors) against the schemas of each version, with the schemas shipped by the pinned PyPI package
kubernetes-validate (scripts/requirements-k8s-validate.txt; scripts/deps.sh installs it into
.tools/venv). Kinds the Kubernetes schemas do not have are errors, except the Prometheus
Operator's ServiceMonitor, which is checked against the subset of its CRD schema below (the
fields the chart may render, nothing else allowed).

Prints one line per failure and a summary 'validated N objects (K kinds) against Kubernetes
V1, V2: ...'; exits 1 when anything failed, 2 on bad usage.
"""

import argparse
import collections
import sys

try:
    import jsonschema
    import kubernetes_validate
    import yaml
except ImportError as e:  # pragma: no cover - a broken environment
    sys.exit(
        f"k8s-validate: {e}: run `make deps` (scripts/deps.sh creates .tools/venv with "
        "kubernetes-validate) and run this script with .tools/venv/bin/python"
    )

DEFAULT_VERSIONS = "1.29.0,1.37.0"

_STR = {"type": "string"}
_LABELS = {"type": "object", "additionalProperties": _STR}
SERVICE_MONITOR_V1 = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"},
                "namespace": _STR,
                "labels": _LABELS,
                "annotations": _LABELS,
            },
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchLabels": _LABELS},
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["port"],
                        "properties": {
                            "port": _STR,
                            "path": _STR,
                            "scheme": {"enum": ["http", "https"]},
                            "interval": {"type": "string", "pattern": "^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                            "scrapeTimeout": {"type": "string", "pattern": "^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                            "tlsConfig": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {"insecureSkipVerify": {"type": "boolean"}},
                            },
                        },
                    },
                },
            },
        },
    },
}
EXTRA_SCHEMAS = {("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR_V1}


def objects(path):
    with open(path, encoding="utf-8") as f:
        for doc in yaml.safe_load_all(f):
            if doc is None:
                continue
            if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
                raise ValueError(f"{path}: a document is not a Kubernetes object: {str(doc)[:80]}")
            if doc["kind"].endswith("List"):
                yield from doc.get("items") or []
            else:
                yield doc


def name_of(obj):
    return f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name', '?')}"


def check(obj, version):
    """None when valid, else the reason."""
    extra = EXTRA_SCHEMAS.get((obj["apiVersion"], obj["kind"]))
    if extra is not None:
        errors = sorted(
            jsonschema.Draft202012Validator(extra).iter_errors(obj), key=lambda e: list(e.path)
        )
        if errors:
            e = errors[0]
            return f"{'.'.join(str(p) for p in e.path)}: {e.message}"
        return None
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        return f"{'.'.join(str(p) for p in e.path)}: {e.message}"
    except kubernetes_validate.SchemaNotFoundError as e:
        return e.message
    return None


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--versions", default=DEFAULT_VERSIONS, help="comma-separated Kubernetes versions")
    p.add_argument("files", nargs="+")
    args = p.parse_args()
    versions = [v.strip() for v in args.versions.split(",") if v.strip()]
    failures = 0
    count = 0
    kinds = collections.Counter()
    for path in args.files:
        try:
            objs = list(objects(path))
        except (OSError, ValueError, yaml.YAMLError) as e:
            print(f"ERROR {e}")
            failures += 1
            continue
        if not objs:
            print(f"ERROR {path}: no Kubernetes object in it")
            failures += 1
        for obj in objs:
            count += 1
            kinds[obj["kind"]] += 1
            for version in versions:
                reason = check(obj, version)
                if reason is not None:
                    failures += 1
                    print(f"ERROR {path}: {name_of(obj)} against Kubernetes {version}: {reason}")
    summary = ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
    print(
        f"validated {count} objects ({len(kinds)} kinds) against Kubernetes "
        f"{', '.join(versions)}: {failures} failures; {summary}"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
