//! The Istio manifests we ship (`envoy/istio/`): the WasmPlugin is valid for
//! Istio's CRD and its `pluginConfig` runs in real Envoy; the governor's
//! Deployment mounts policies that the governor accepts and its Service is
//! the cluster the plugin fetches from.

use std::fs;
use std::path::Path;
use std::process::Command;

use huntgate_e2e::locate::{envoy_template, governor_binary, workspace_root};
use huntgate_e2e::openapi::{crd_schema, violations};
use huntgate_e2e::{plugin, Envoy, Upstream};
use serde_json::Value;

use crate::{assert_hunt_full, join};

/// The WasmPlugin schema as shipped with the repository (see envoy/istio/README.md).
const VENDORED_SCHEMA: &str = "istio/schema/wasmplugin-v1alpha1.json";
/// Istio's CRDs beside the checkout, when present (the schema's source).
const SHARED_CRDS: &str = "../shared/schemas/istio-crd-all.gen.yaml";

/// Every YAML document of `envoy/<relative>`, as JSON values.
fn documents(relative: &str) -> Vec<Value> {
    let path = envoy_template(relative);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| {
            <Value as serde::Deserialize>::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .collect()
}

fn wasm_plugin() -> Value {
    let mut docs = documents("istio/wasmplugin.yaml");
    assert_eq!(docs.len(), 1, "wasmplugin.yaml holds one resource");
    docs.remove(0)
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in governor.yaml"))
}

#[test]
fn wasm_plugin_is_valid_for_istios_crd() {
    let schema: Value = serde_json::from_str(
        &fs::read_to_string(envoy_template(VENDORED_SCHEMA)).expect("read vendored schema"),
    )
    .expect("vendored schema is JSON");
    let shared = workspace_root().join(SHARED_CRDS);
    if let Ok(crds) = fs::read_to_string(&shared) {
        assert_eq!(
            crd_schema(&crds, "WasmPlugin", "v1alpha1").as_ref(),
            Some(&schema),
            "{VENDORED_SCHEMA} differs from {}: refresh it",
            shared.display()
        );
    }
    let mut plugin = wasm_plugin();
    assert_eq!(plugin["apiVersion"], "extensions.istio.io/v1alpha1");
    assert_eq!(plugin["kind"], "WasmPlugin");
    // The API server handles apiVersion, kind and metadata itself.
    if let Some(fields) = plugin.as_object_mut() {
        for meta in ["apiVersion", "kind", "metadata"] {
            fields.remove(meta);
        }
    }
    let found = violations(&plugin, &schema);
    assert!(
        found.is_empty(),
        "WasmPlugin violates Istio's schema:\n{}",
        found.join("\n")
    );
}

#[test]
fn wasm_plugin_config_runs_in_envoy() {
    let config = wasm_plugin()["spec"]["pluginConfig"].clone();
    assert!(config.is_object(), "pluginConfig is an object");
    // The secret comes from the gateway's environment; here an inline test secret stands in.
    let config = plugin::with_env_secrets_inlined(&config);
    let upstream = Upstream::start();
    // The manifest's governor cluster is Istio's; here nothing answers it, so
    // no lease arrives and the safe share (0) applies: no new hunter without
    // the governor.
    assert_eq!(config["governor"]["leases"], true);
    let envoy = Envoy::start(&config, &upstream);
    assert_hunt_full(
        &join(&envoy.client(), "hunt-001", "alice"),
        "hunt-001",
        0,
        0,
    );
    assert_eq!(plugin::HUNTER_HEADER, config["hunter"]["header"]);
}

#[test]
fn governor_deployment_mounts_valid_policies_behind_the_plugins_cluster() {
    let docs = documents("istio/governor.yaml");
    let config_map = find(&docs, "ConfigMap");
    let deployment = find(&docs, "Deployment");
    let service = find(&docs, "Service");

    // Lay the ConfigMap out as the kubelet mounts it, then ask the governor.
    let spec = &deployment["spec"]["template"]["spec"];
    let volume = &spec["volumes"][0];
    assert_eq!(volume["configMap"]["name"], config_map["metadata"]["name"]);
    let dir = tempfile::tempdir().expect("temporary directory");
    let items = volume["configMap"]["items"]
        .as_array()
        .expect("volume items");
    assert_eq!(
        items.len(),
        config_map["data"].as_object().map_or(0, |d| d.len()),
        "every ConfigMap key is mounted"
    );
    for item in items {
        let key = item["key"].as_str().expect("item key");
        let content = config_map["data"][key]
            .as_str()
            .unwrap_or_else(|| panic!("no key {key}"));
        let target = dir.path().join(item["path"].as_str().expect("item path"));
        fs::create_dir_all(target.parent().unwrap_or(Path::new("."))).expect("create dir");
        fs::write(&target, content).expect("write policy file");
    }
    let mount = spec["containers"][0]["volumeMounts"][0]["mountPath"]
        .as_str()
        .expect("mountPath");
    let args: Vec<&str> = spec["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(args, ["serve", "--policies", mount]);
    let check = Command::new(governor_binary())
        .arg("check")
        .arg("--policies")
        .arg(dir.path())
        .output()
        .expect("run huntgate-governor check");
    assert!(
        check.status.success(),
        "huntgate-governor check refused the manifest's policies:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    // The plugin's cluster is Istio's outbound cluster of this Service.
    let port = service["spec"]["ports"][0]["port"]
        .as_u64()
        .expect("service port");
    let fqdn = format!(
        "{}.{}.svc.cluster.local",
        service["metadata"]["name"].as_str().expect("service name"),
        service["metadata"]["namespace"]
            .as_str()
            .expect("service namespace")
    );
    let governor = &wasm_plugin()["spec"]["pluginConfig"]["governor"];
    assert_eq!(governor["cluster"], format!("outbound|{port}||{fqdn}"));
    assert_eq!(governor["authority"], fqdn);
}
