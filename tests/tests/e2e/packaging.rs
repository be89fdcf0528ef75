//! The Kustomize packages (`deploy/`): every overlay renders with
//! `kubectl kustomize`, ships the WasmPlugin together with the governor it
//! fetches from, validates against Istio's WasmPlugin schema, and its
//! `pluginConfig` runs in a real Envoy with the mode the overlay promises.
//! (Kubernetes' own kinds are validated by scripts/check-deploy.py, `make
//! packaging`.)

use std::fs;
use std::process::Command;

use huntgate_e2e::locate::{envoy_template, workspace_root};
use huntgate_e2e::openapi::{crd_schema, violations};
use huntgate_e2e::{Envoy, Upstream};
use serde_json::{json, Value};

use crate::{assert_admitted, assert_hunt_full, assert_passed, join};

/// Istio's CRDs beside the checkout, when present; else the vendored schema.
const SHARED_CRDS: &str = "../shared/schemas/istio-crd-all.gen.yaml";
const VENDORED_SCHEMA: &str = "istio/schema/wasmplugin-v1alpha1.json";
const PLUGIN: &str = "huntgate";
const GOVERNOR: &str = "huntgate-governor";
const CANARY_LABEL: &str = "huntgate.veltrix.io/canary";

/// What an overlay promises.
struct Expect {
    overlay: &'static str,
    mode: &'static str,
    selector: Value,
    /// `spec.match` of the WasmPlugin (absent: every traffic direction of a gateway).
    traffic: Option<Value>,
}

/// Every object `kubectl kustomize deploy/overlays/<overlay>` renders.
fn render(overlay: &str) -> Vec<Value> {
    let dir = workspace_root().join("deploy/overlays").join(overlay);
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(&dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "run kubectl kustomize {}: {e} (kubectl must be on PATH)",
                dir.display()
            )
        });
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("kustomize output is UTF-8");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| <Value as serde::Deserialize>::deserialize(doc).expect("rendered YAML"))
        .filter(|doc| !doc.is_null())
        .collect()
}

fn one<'a>(docs: &'a [Value], kind: &str, name: &str, overlay: &str) -> &'a Value {
    let found: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "overlay {overlay}: expected one {kind}/{name}, found {}",
        found.len()
    );
    found[0]
}

fn wasm_plugin_schema() -> Value {
    let shared = workspace_root().join(SHARED_CRDS);
    if let Ok(crds) = fs::read_to_string(&shared) {
        return crd_schema(&crds, "WasmPlugin", "v1alpha1")
            .unwrap_or_else(|| panic!("no WasmPlugin v1alpha1 in {}", shared.display()));
    }
    let vendored = envoy_template(VENDORED_SCHEMA);
    serde_json::from_str(&fs::read_to_string(&vendored).expect("read vendored schema"))
        .expect("vendored schema is JSON")
}

/// The structure every overlay shares: the plugin and its governor together,
/// the plugin pointing at the governor's Service, the governor deployed to
/// survive one replica's loss.
fn check_package(docs: &[Value], expect: &Expect) -> Value {
    let overlay = expect.overlay;
    let plugin = one(docs, "WasmPlugin", PLUGIN, overlay);
    let deployment = one(docs, "Deployment", GOVERNOR, overlay);
    let service = one(docs, "Service", GOVERNOR, overlay);
    let budget = one(docs, "PodDisruptionBudget", GOVERNOR, overlay);
    one(docs, "ConfigMap", "huntgate-policies", overlay);
    assert_eq!(
        docs.iter().filter(|d| d["kind"] == "WasmPlugin").count(),
        1,
        "overlay {overlay}: one huntgate WasmPlugin, never two on a proxy"
    );

    // Istio's schema (what the API server would refuse or prune).
    let mut spec_only = plugin.clone();
    if let Some(fields) = spec_only.as_object_mut() {
        for meta in ["apiVersion", "kind", "metadata"] {
            fields.remove(meta);
        }
    }
    let found = violations(&spec_only, &wasm_plugin_schema());
    assert!(
        found.is_empty(),
        "overlay {overlay}: WasmPlugin violates Istio's schema:\n{}",
        found.join("\n")
    );

    // What the overlay promises.
    let spec = &plugin["spec"];
    assert_eq!(
        spec["pluginConfig"]["mode"], expect.mode,
        "overlay {overlay}: mode"
    );
    assert_eq!(
        spec["selector"], expect.selector,
        "overlay {overlay}: selector"
    );
    assert_eq!(
        spec.get("match"),
        expect.traffic.as_ref(),
        "overlay {overlay}: match"
    );
    assert!(
        spec["failStrategy"].is_string(),
        "overlay {overlay}: failStrategy is explicit"
    );
    assert!(
        spec["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("oci://") && u.contains("@sha256:")),
        "overlay {overlay}: the module is referenced by digest: {}",
        spec["url"]
    );

    // The plugin fetches from this Service (Istio's outbound cluster name).
    let fqdn = format!(
        "{}.{}.svc.cluster.local",
        service["metadata"]["name"].as_str().expect("service name"),
        service["metadata"]["namespace"]
            .as_str()
            .expect("service namespace")
    );
    let port = service["spec"]["ports"][0]["port"]
        .as_u64()
        .expect("service port");
    let governor = &spec["pluginConfig"]["governor"];
    assert_eq!(
        governor["cluster"],
        format!("outbound|{port}||{fqdn}"),
        "overlay {overlay}"
    );
    assert_eq!(governor["authority"], fqdn, "overlay {overlay}");

    // The Service and the budget select the Deployment's pods.
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for selector in [
        &service["spec"]["selector"],
        &budget["spec"]["selector"]["matchLabels"],
    ] {
        for (key, value) in selector.as_object().expect("selector labels") {
            assert_eq!(
                &pod_labels[key], value,
                "overlay {overlay}: selector {key} matches the pods"
            );
        }
    }
    let replicas = deployment["spec"]["replicas"].as_u64().expect("replicas");
    assert!(
        replicas >= 2,
        "overlay {overlay}: governor replicas {replicas} < 2"
    );
    assert_eq!(budget["spec"]["minAvailable"], 1, "overlay {overlay}");

    // Probes, resources, non-root and read-only.
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert!(
        container["resources"]["requests"].is_object()
            && container["resources"]["limits"].is_object()
    );
    assert_eq!(
        pod["securityContext"]["runAsNonRoot"], true,
        "overlay {overlay}"
    );
    assert_eq!(
        container["securityContext"]["readOnlyRootFilesystem"], true,
        "overlay {overlay}"
    );
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"], false,
        "overlay {overlay}"
    );
    assert!(
        container["image"]
            .as_str()
            .is_some_and(|i| i.contains("@sha256:")),
        "overlay {overlay}: the governor image is referenced by digest"
    );

    spec["pluginConfig"].clone()
}

/// The rendered pluginConfig in a real Envoy: accepted. Its governor cluster
/// is Istio's and nothing answers it here, so no lease ever arrives and the
/// package's `safe_share` (0) holds: no new hunter gets in without the
/// governor (enforce: 429 hunt_full at limit 0; shadow: passed as
/// `would-reject`). A live update to `safe_share: 1` admits one join, and the
/// next one shows the overlay's mode again.
fn check_in_envoy(config: &Value, expect: &Expect) {
    // The secret comes from the gateway's environment; here an inline test secret stands in.
    let config = &huntgate_e2e::plugin::with_env_secrets_inlined(config);
    assert_eq!(
        config["governor"]["safe_share"], 0,
        "overlay {}: the package admits nobody new without its governor",
        expect.overlay
    );
    let upstream = Upstream::start();
    let mut envoy = Envoy::start_dynamic(config, &upstream);
    let ttl = config["session_ttl_s"].as_u64().expect("session_ttl_s");
    check_mode(&join(&envoy.client(), "hunt-001", "alice"), expect, 0);

    let mut one_seat = config.clone();
    one_seat["governor"]["safe_share"] = json!(1);
    envoy.reconfigure(&one_seat);
    assert_admitted(&join(&envoy.client(), "hunt-001", "bob"), "hunt-001", ttl);
    check_mode(&join(&envoy.client(), "hunt-001", "carol"), expect, 1);
}

/// A join into a hunt at `limit` with `limit` sessions, as the overlay's mode
/// answers it.
fn check_mode(response: &huntgate_e2e::Response, expect: &Expect, limit: u64) {
    match expect.mode {
        "enforce" => assert_hunt_full(response, "hunt-001", limit, limit),
        "shadow" => assert_passed(response, "would-reject"),
        other => panic!("overlay {}: unexpected mode {other}", expect.overlay),
    }
}

fn check_overlay(expect: Expect) {
    let docs = render(expect.overlay);
    let config = check_package(&docs, &expect);
    check_in_envoy(&config, &expect);
}

fn gateways() -> Value {
    json!({"matchLabels": {"istio": "ingressgateway"}})
}

fn canary() -> Value {
    json!({"matchLabels": {"istio": "ingressgateway", CANARY_LABEL: "true"}})
}

#[test]
fn gateway_overlay_enforces_on_every_ingress_gateway() {
    check_overlay(Expect {
        overlay: "gateway",
        mode: "enforce",
        selector: gateways(),
        traffic: None,
    });
}

#[test]
fn shadow_overlay_passes_everything_on_every_ingress_gateway() {
    check_overlay(Expect {
        overlay: "shadow",
        mode: "shadow",
        selector: gateways(),
        traffic: None,
    });
}

#[test]
fn canary_overlay_enforces_on_the_labelled_gateway_only() {
    check_overlay(Expect {
        overlay: "canary",
        mode: "enforce",
        selector: canary(),
        traffic: None,
    });
}

#[test]
fn canary_shadow_overlay_shadows_the_labelled_gateway_only() {
    check_overlay(Expect {
        overlay: "canary-shadow",
        mode: "shadow",
        selector: canary(),
        traffic: None,
    });
}

#[test]
fn sidecar_overlay_enforces_inbound_on_hunt_pods() {
    check_overlay(Expect {
        overlay: "sidecar",
        mode: "enforce",
        selector: json!({"matchLabels": {"app": "hunt-service"}}),
        traffic: Some(json!([{"mode": "SERVER"}])),
    });
}

/// The files under envoy/istio are the base's, so the plain manifests and the
/// packages can never drift apart.
#[test]
fn envoy_istio_manifests_are_the_base_package() {
    for file in ["governor.yaml", "wasmplugin.yaml"] {
        let plain = fs::read_to_string(envoy_template(&format!("istio/{file}")))
            .expect("read envoy/istio file");
        let base = fs::read_to_string(workspace_root().join("deploy/base").join(file))
            .expect("read deploy/base file");
        assert_eq!(
            plain, base,
            "envoy/istio/{file} differs from deploy/base/{file}"
        );
    }
}
