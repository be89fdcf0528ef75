#!/usr/bin/env python3
"""Renders every Kustomize overlay under deploy/overlays and deploy/examples and validates each object, offline.

    check-deploy.py [OVERLAY_DIR ...]

- `kubectl kustomize` renders the overlay (it must succeed);
- Kubernetes' own kinds are validated with kubernetes-validate (its wheel
  carries the JSON schemas; strict: unknown fields fail) for each version in
  K8S_VERSIONS;
- Istio's kinds are validated against the openAPIV3Schema of their CRD in
  ../shared/schemas/istio-crd-all.gen.yaml, or, where that file is absent, the
  vendored copies in envoy/istio/schema/ (WasmPlugin, EnvoyFilter; checked
  against the shared file when it is there; $HUNTGATE_ISTIO_CRDS names another
  CRD file), with
  unknown fields refused where the schema does not preserve them (the API
  server would prune them: for us a typo);
- any other kind fails: nothing unchecked ships;
- a site overlay (deploy/examples/*) must not reference the base's placeholder
  digest any more.

Runs with the Python of the venv that scripts/install-packaging-tools.sh
makes (it has kubernetes-validate, jsonschema and PyYAML). Prints one line per
object; exits 1 if anything failed.
"""

import copy
import glob
import importlib.metadata
import json
import os
import subprocess
import sys

import jsonschema
import kubernetes_validate
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_CRDS = os.environ.get("HUNTGATE_ISTIO_CRDS") or os.path.join(ROOT, "..", "shared", "schemas", "istio-crd-all.gen.yaml")
VENDORED = {
    ("WasmPlugin", "v1alpha1"): os.path.join(ROOT, "envoy", "istio", "schema", "wasmplugin-v1alpha1.json"),
    ("EnvoyFilter", "v1alpha3"): os.path.join(ROOT, "envoy", "istio", "schema", "envoyfilter-v1alpha3.json"),
}
# The base's placeholder image digest (no registry serves it).
ZERO_DIGEST = "sha256:" + "0" * 64
# The oldest Kubernetes that current Istio releases support, and the newest schemas the wheel has.
K8S_VERSIONS = ("1.29.0", "1.37.0")


def vendored():
    schemas = {}
    for key, path in VENDORED.items():
        with open(path) as f:
            schemas[key] = json.load(f)
    return schemas


def istio_schemas():
    """(kind, version) -> openAPIV3Schema, and where they came from."""
    if os.path.exists(SHARED_CRDS):
        schemas = {}
        with open(SHARED_CRDS) as f:
            for crd in yaml.safe_load_all(f):
                if not crd or crd.get("kind") != "CustomResourceDefinition":
                    continue
                kind = crd["spec"]["names"]["kind"]
                for version in crd["spec"]["versions"]:
                    schemas[(kind, version["name"])] = version["schema"]["openAPIV3Schema"]
        # The vendored copies (the fallback) must be these, unchanged.
        for key, schema in vendored().items():
            if schemas.get(key) != schema:
                sys.exit(f"check-deploy: {os.path.relpath(VENDORED[key], ROOT)} differs from {key[0]} "
                         f"{key[1]} in {SHARED_CRDS}: refresh it")
        return schemas, os.path.relpath(SHARED_CRDS, ROOT)
    return vendored(), "vendored " + ", ".join(os.path.relpath(p, ROOT) for p in VENDORED.values())


def strict(schema):
    """The schema with unknown fields refused wherever it lists properties and does not preserve unknown ones."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def istio_errors(obj, schemas):
    """Violations of the object's CRD schema (None: no schema for it)."""
    _, _, version = obj["apiVersion"].rpartition("/")
    schema = schemas.get((obj["kind"], version))
    if schema is None:
        return None
    # The API server handles apiVersion, kind and metadata itself.
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    errors = jsonschema.Draft7Validator(strict(schema)).iter_errors(body)
    return [
        f".{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in sorted(errors, key=lambda e: [str(p) for p in e.absolute_path])
    ]


def self_test(schemas):
    """The validators refuse what they must: a typo and a bad value of each kind of check."""
    failed = 0
    bad_deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
        "spec": {"replica": 2, "selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c"}]}}},
    }
    try:
        kubernetes_validate.validate(bad_deployment, K8S_VERSIONS[-1], strict=True)
        print("FAILED   self-test: kubernetes-validate accepted a Deployment with `spec.replica`")
        failed += 1
    except kubernetes_validate.ValidationError:
        print("ok       self-test: kubernetes-validate refuses an unknown field (spec.replica)")
    bad_plugin = {
        "apiVersion": "extensions.istio.io/v1alpha1", "kind": "WasmPlugin", "metadata": {"name": "x"},
        "spec": {"url": "oci://r/x:1", "phase": "LATE", "failStrategyy": "FAIL_OPEN"},
    }
    errors = istio_errors(bad_plugin, schemas) or []
    if any(e.startswith(".spec.phase:") for e in errors) and any("failStrategyy" in e for e in errors):
        print("ok       self-test: the Istio schema check refuses a bad enum (phase) and an unknown field")
    else:
        print(f"FAILED   self-test: the Istio schema check missed a bad WasmPlugin: {errors}")
        failed += 1
    return failed


def render(overlay):
    out = subprocess.run(["kubectl", "kustomize", overlay], capture_output=True, text=True)
    if out.returncode != 0:
        return None, out.stderr.strip()
    return [d for d in yaml.safe_load_all(out.stdout) if d], None


def name(obj):
    meta = obj.get("metadata", {})
    ns = meta.get("namespace")
    return f"{obj.get('kind')}/{(ns + '/') if ns else ''}{meta.get('name')}"


def main():
    overlays = sys.argv[1:] or sorted(
        glob.glob(os.path.join(ROOT, "deploy", "overlays", "*"))
        + glob.glob(os.path.join(ROOT, "deploy", "examples", "*"))
    )
    schemas, source = istio_schemas()
    print(f"Istio CRD schemas: {source}; Kubernetes schemas: kubernetes-validate "
          f"{importlib.metadata.version('kubernetes-validate')} for {', '.join(K8S_VERSIONS)}")
    failed = self_test(schemas)
    for overlay in overlays:
        label = os.path.relpath(overlay, ROOT)
        objects, error = render(overlay)
        if objects is None:
            print(f"FAILED   {label}: kubectl kustomize: {error}")
            failed += 1
            continue
        print(f"ok       {label}: rendered {len(objects)} objects")
        # A site overlay (deploy/examples) must have replaced the base's placeholder digests.
        if os.path.relpath(overlay, ROOT).startswith("deploy/examples") and ZERO_DIGEST in json.dumps(objects):
            print(f"FAILED   {label}: still references the placeholder {ZERO_DIGEST[:16]}…")
            failed += 1
        for obj in objects:
            group, _, _ = obj.get("apiVersion", "").rpartition("/")
            what = f"{label}: {name(obj)}"
            if group.endswith("istio.io"):
                errors = istio_errors(obj, schemas)
                if errors is None:
                    print(f"FAILED   {what}: no CRD schema for {obj['apiVersion']} {obj['kind']} in {source}")
                    failed += 1
                elif errors:
                    for e in errors:
                        print(f"FAILED   {what}: {e}")
                    failed += 1
                else:
                    print(f"ok       {what} (Istio CRD schema)")
                continue
            try:
                for k8s in K8S_VERSIONS:
                    kubernetes_validate.validate(obj, k8s, strict=True)
                print(f"ok       {what} (Kubernetes {', '.join(K8S_VERSIONS)}, strict)")
            except kubernetes_validate.ValidationError as e:
                path = "." + ".".join(str(p) for p in e.path)
                print(f"FAILED   {what}: Kubernetes {e.version}: {path}: {e.message}")
                failed += 1
            except kubernetes_validate.SchemaNotFoundError as e:
                print(f"FAILED   {what}: no Kubernetes schema: {e}")
                failed += 1
    if failed:
        print(f"check-deploy: {failed} failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
