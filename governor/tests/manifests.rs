//! The install guard (`huntgate-governor check-manifests`) over the packages
//! in deploy/, rendered with `kubectl kustomize`, and over each mistake it
//! must refuse.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::process::Command;

use huntgate_governor::manifests::{check, parse, Finding, Options};
use serde_json::{json, Value};

const OVERLAYS: [&str; 5] = ["gateway", "shadow", "canary", "canary-shadow", "sidecar"];

fn render(overlay: &str) -> Vec<Value> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/overlays")
        .join(overlay);
    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg(&dir)
        .output()
        .expect("run kubectl kustomize (kubectl is on every machine)");
    assert!(
        output.status.success(),
        "kustomize {overlay}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    parse(&String::from_utf8(output.stdout).unwrap()).unwrap()
}

fn fatal(findings: &[Finding]) -> Vec<String> {
    findings
        .iter()
        .filter(|f| f.fatal)
        .map(ToString::to_string)
        .collect()
}

fn find_mut<'a>(objects: &'a mut [Value], kind: &str) -> &'a mut Value {
    objects
        .iter_mut()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

fn gateway_with(edit: impl FnOnce(&mut Vec<Value>)) -> Vec<String> {
    let mut objects = render("gateway");
    edit(&mut objects);
    fatal(&check(&objects, Options::default()))
}

fn assert_one(errors: &[String], object: &str, words: &str) {
    assert!(
        errors
            .iter()
            .any(|e| e.contains(object) && e.contains(words)),
        "expected an error on {object} about `{words}`, got {errors:#?}"
    );
}

#[test]
fn every_shipped_overlay_passes() {
    for overlay in OVERLAYS {
        let findings = check(&render(overlay), Options::default());
        assert!(findings.is_empty(), "{overlay}: {findings:#?}");
    }
}

#[test]
fn a_filter_without_its_governor_is_refused() {
    let errors = gateway_with(|objects| objects.retain(|o| o["kind"] != "Service"));
    assert_one(
        &errors,
        "WasmPlugin istio-system/huntgate",
        "do not contain",
    );
    let errors = gateway_with(|objects| objects.retain(|o| o["kind"] != "Deployment"));
    assert_one(
        &errors,
        "Service huntgate-system/huntgate-governor",
        "selects no governor",
    );
}

#[test]
fn a_governor_without_a_filter_is_refused() {
    let errors = gateway_with(|objects| objects.retain(|o| o["kind"] != "WasmPlugin"));
    assert_one(
        &errors,
        "Deployment huntgate-system/huntgate-governor",
        "no huntgate WasmPlugin",
    );
}

#[test]
fn a_governor_cluster_that_is_not_istios_outbound_name_is_refused() {
    let errors = gateway_with(|objects| {
        find_mut(objects, "WasmPlugin")["spec"]["pluginConfig"]["governor"]["cluster"] =
            json!("huntgate-governor");
    });
    assert_one(&errors, "WasmPlugin", "not Istio's outbound cluster");
    let errors = gateway_with(|objects| {
        find_mut(objects, "WasmPlugin")["spec"]["pluginConfig"]["governor"]["cluster"] =
            json!("outbound|9912||huntgate-governor.huntgate-system.svc.cluster.local");
    });
    assert_one(&errors, "WasmPlugin", "port 9912");
}

#[test]
fn a_plugin_config_the_filter_refuses_is_refused_naming_the_field() {
    let errors = gateway_with(|objects| {
        find_mut(objects, "WasmPlugin")["spec"]["pluginConfig"]["session_ttl_s"] = json!(0);
    });
    assert_one(&errors, "WasmPlugin", "session_ttl_s");
    let errors = gateway_with(|objects| {
        find_mut(objects, "WasmPlugin")["spec"]["vmConfig"] = json!({});
    });
    assert_one(&errors, "WasmPlugin", "ticket_secrets[0].env");
}

#[test]
fn an_inline_secret_is_refused_unless_allowed() {
    let mut objects = render("gateway");
    find_mut(&mut objects, "WasmPlugin")["spec"]["pluginConfig"]["ticket_secrets"] =
        json!(["an-inline-secret-of-enough-bytes"]);
    let errors = fatal(&check(&objects, Options::default()));
    assert_one(&errors, "WasmPlugin", "inline");
    let allowed = check(
        &objects,
        Options {
            allow_inline_secrets: true,
        },
    );
    assert!(fatal(&allowed).is_empty(), "{allowed:#?}");
    assert!(allowed
        .iter()
        .any(|f| !f.fatal && f.problem.contains("inline")));
}

#[test]
fn a_missing_fail_strategy_is_refused() {
    let errors = gateway_with(|objects| {
        let spec = find_mut(objects, "WasmPlugin")["spec"]
            .as_object_mut()
            .unwrap();
        spec.remove("failStrategy");
    });
    assert_one(&errors, "WasmPlugin", "failStrategy");
}

#[test]
fn leases_need_two_governors_and_a_coordination_redis() {
    let with_leases = |objects: &mut Vec<Value>| {
        find_mut(objects, "WasmPlugin")["spec"]["pluginConfig"]["governor"]["leases"] = json!(true);
    };
    let errors = gateway_with(|objects| {
        with_leases(objects);
        find_mut(objects, "Deployment")["spec"]["replicas"] = json!(1);
    });
    assert_one(
        &errors,
        "Deployment huntgate-system/huntgate-governor",
        "1 replica",
    );
    let errors = gateway_with(|objects| {
        with_leases(objects);
        let container =
            &mut find_mut(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0];
        container["env"]
            .as_array_mut()
            .unwrap()
            .retain(|e| e["name"] != "HUNTGATE_COORDINATION");
    });
    assert_one(&errors, "Deployment", "no coordination Redis");
}
