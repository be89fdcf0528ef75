//! `huntgate-governor check-manifests`: the install guard. Reads rendered
//! Kubernetes manifests (what `kubectl kustomize` prints) and refuses the
//! mistakes that would make huntgate only *look* installed: a filter without
//! the governor it points at, a governor no filter uses, a `governor.cluster`
//! that is not Istio's outbound cluster of the governor's Service, a plugin
//! configuration the filter would refuse, ticket secrets written inline, leases
//! without a governor that can coordinate, and no `failStrategy`.
//!
//! The checks are a pure function over the parsed objects; reading files is
//! separate.

use std::fs;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

/// Placeholder value for a secret variable the WasmPlugin declares: the
/// filter's own validation runs on it (its length is all that is checked).
const DECLARED_SECRET: &str = "declared-in-vmconfig-env-0123456789";

/// One problem found, naming the object it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// `Kind namespace/name` of the object at fault.
    pub object: String,
    /// What is wrong and what to do.
    pub problem: String,
    /// Whether the check fails (`false`: a warning).
    pub fatal: bool,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let level = if self.fatal { "error" } else { "warning" };
        write!(f, "{level}: {}: {}", self.object, self.problem)
    }
}

/// What the check tolerates.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Report inline ticket secrets as warnings instead of errors.
    pub allow_inline_secrets: bool,
}

/// Reads every `*.yaml` / `*.yml` file under `path` (or the file `path`
/// itself), each holding one or more YAML documents; empty documents are skipped.
pub fn load(path: &Path) -> Result<Vec<Value>, String> {
    let mut files = Vec::new();
    if path.is_dir() {
        collect_files(path, &mut files)?;
        files.sort();
    } else {
        files.push(path.to_path_buf());
    }
    let mut objects = Vec::new();
    for file in files {
        let text = fs::read_to_string(&file)
            .map_err(|e| format!("{}: cannot read: {e}", file.display()))?;
        objects.extend(parse(&text).map_err(|e| format!("{}: {e}", file.display()))?);
    }
    Ok(objects)
}

fn collect_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> Result<(), String> {
    let entries = fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
        if path.is_dir() {
            collect_files(&path, out)?;
        } else if path
            .extension()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("yaml") || ext.eq_ignore_ascii_case("yml"))
        {
            out.push(path);
        }
    }
    Ok(())
}

/// Parses a multi-document YAML stream into JSON values (null documents dropped).
pub fn parse(text: &str) -> Result<Vec<Value>, String> {
    let mut objects = Vec::new();
    for (i, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(document).map_err(|e| format!("document {}: {e}", i + 1))?;
        if !value.is_null() {
            objects.push(value);
        }
    }
    Ok(objects)
}

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn kind(object: &Value) -> &str {
    text(object, "/kind")
}

fn name(object: &Value) -> String {
    let namespace = match text(object, "/metadata/namespace") {
        "" => "default",
        ns => ns,
    };
    format!(
        "{} {namespace}/{}",
        kind(object),
        text(object, "/metadata/name")
    )
}

fn namespace(object: &Value) -> &str {
    match text(object, "/metadata/namespace") {
        "" => "default",
        ns => ns,
    }
}

/// A WasmPlugin running huntgate: its configuration has `ticket_secrets`.
fn is_huntgate_plugin(object: &Value) -> bool {
    kind(object) == "WasmPlugin"
        && object
            .pointer("/spec/pluginConfig/ticket_secrets")
            .is_some()
}

/// A Deployment running the governor: a container whose image or name says so.
fn is_governor_deployment(object: &Value) -> bool {
    kind(object) == "Deployment"
        && containers(object).iter().any(|c| {
            text(c, "/image").contains("huntgate-governor")
                || text(c, "/name").contains("huntgate-governor")
        })
}

fn containers(object: &Value) -> Vec<&Value> {
    object
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .map(|list| list.iter().collect())
        .unwrap_or_default()
}

/// Whether a Service's selector picks the Deployment's pods.
fn selects(service: &Value, deployment: &Value) -> bool {
    let Some(selector) = service.pointer("/spec/selector").and_then(Value::as_object) else {
        return false;
    };
    let labels = deployment.pointer("/spec/template/metadata/labels");
    !selector.is_empty()
        && namespace(service) == namespace(deployment)
        && selector
            .iter()
            .all(|(key, want)| labels.and_then(|l| l.get(key)) == Some(want))
}

fn service_ports(service: &Value) -> Vec<u64> {
    service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|ports| {
            ports
                .iter()
                .filter_map(|p| p.get("port").and_then(Value::as_u64))
                .collect()
        })
        .unwrap_or_default()
}

/// `outbound|PORT||SERVICE.NAMESPACE.svc.cluster.local` → (port, service, namespace).
fn parse_outbound_cluster(cluster: &str) -> Option<(u64, &str, &str)> {
    let rest = cluster.strip_prefix("outbound|")?;
    let (port, rest) = rest.split_once("||")?;
    let host = rest.strip_suffix(".svc.cluster.local")?;
    let (service, ns) = host.split_once('.')?;
    (!service.is_empty() && !ns.is_empty() && !ns.contains('.'))
        .then(|| port.parse().ok().map(|port| (port, service, ns)))
        .flatten()
}

fn has_coordination(deployment: &Value) -> bool {
    containers(deployment).iter().any(|c| {
        let in_args = c.get("args").and_then(Value::as_array).is_some_and(|args| {
            args.iter()
                .any(|a| a.as_str().is_some_and(|a| a.starts_with("--coordination")))
        });
        let in_env = c.get("env").and_then(Value::as_array).is_some_and(|env| {
            env.iter().any(|e| {
                text(e, "/name") == "HUNTGATE_COORDINATION"
                    && (!text(e, "/value").is_empty() || e.get("valueFrom").is_some())
            })
        });
        in_args || in_env
    })
}

/// Checks rendered manifests; returns every finding (fatal and warnings).
pub fn check(objects: &[Value], options: Options) -> Vec<Finding> {
    let mut findings = Vec::new();
    let plugins: Vec<&Value> = objects.iter().filter(|o| is_huntgate_plugin(o)).collect();
    let governors: Vec<&Value> = objects
        .iter()
        .filter(|o| is_governor_deployment(o))
        .collect();
    let services: Vec<&Value> = objects.iter().filter(|o| kind(o) == "Service").collect();
    let mut used_governors: Vec<String> = Vec::new();
    for plugin in &plugins {
        let mut fail = |problem: String| {
            findings.push(Finding {
                object: name(plugin),
                problem,
                fatal: true,
            })
        };
        if plugin.pointer("/spec/failStrategy").is_none() {
            fail(
                "spec.failStrategy is missing: say what a failed VM or image pull does \
                 (FAIL_RELOAD, see docs/rollout.md)"
                    .to_string(),
            );
        }
        let config = plugin
            .pointer("/spec/pluginConfig")
            .cloned()
            .unwrap_or(Value::Null);
        let declared: Vec<String> = plugin
            .pointer("/spec/vmConfig/env")
            .and_then(Value::as_array)
            .map(|env| env.iter().map(|e| text(e, "/name").to_string()).collect())
            .unwrap_or_default();
        let env = |var: &str| {
            declared
                .iter()
                .any(|d| d == var)
                .then(|| DECLARED_SECRET.to_string())
        };
        if let Err(e) =
            huntgate_core::config::Config::from_json_with_env(config.to_string().as_bytes(), &env)
        {
            fail(format!(
                "spec.pluginConfig is refused by the filter: {e}{}",
                if e.field.ends_with(".env") {
                    " (declare the variable in spec.vmConfig.env)"
                } else {
                    ""
                }
            ));
        }
        let inline = config
            .get("ticket_secrets")
            .and_then(Value::as_array)
            .is_some_and(|secrets| secrets.iter().any(Value::is_string));
        if inline {
            findings.push(Finding {
                object: name(plugin),
                problem: "a ticket secret is written inline in spec.pluginConfig: anyone who can \
                          read the WasmPlugin can mint tickets; use {\"env\": NAME} with \
                          spec.vmConfig.env (valueFrom: HOST) fed from a Secret"
                    .to_string(),
                fatal: !options.allow_inline_secrets,
            });
        }
        let Some(governor) = config.get("governor") else {
            continue;
        };
        let cluster = governor
            .get("cluster")
            .and_then(Value::as_str)
            .unwrap_or("");
        let Some((port, service_name, ns)) = parse_outbound_cluster(cluster) else {
            findings.push(Finding {
                object: name(plugin),
                problem: format!(
                    "governor.cluster `{cluster}` is not Istio's outbound cluster of a Service \
                     (outbound|PORT||SERVICE.NAMESPACE.svc.cluster.local): every fetch would fail"
                ),
                fatal: true,
            });
            continue;
        };
        let service = services.iter().find(|s| {
            text(s, "/metadata/name") == service_name
                && namespace(s) == ns
                && service_ports(s).contains(&port)
        });
        let Some(service) = service else {
            findings.push(Finding {
                object: name(plugin),
                problem: format!(
                    "governor.cluster points at Service {ns}/{service_name} port {port}, which \
                     these manifests do not contain: apply the governor with the filter"
                ),
                fatal: true,
            });
            continue;
        };
        let Some(governor_deployment) = governors.iter().find(|d| selects(service, d)) else {
            findings.push(Finding {
                object: name(service),
                problem: "selects no governor Deployment in these manifests".to_string(),
                fatal: true,
            });
            continue;
        };
        used_governors.push(name(governor_deployment));
        if governor.get("leases").and_then(Value::as_bool) == Some(true) {
            let replicas = governor_deployment
                .pointer("/spec/replicas")
                .and_then(Value::as_u64)
                .unwrap_or(1);
            if replicas < 2 || !has_coordination(governor_deployment) {
                findings.push(Finding {
                    object: name(governor_deployment),
                    problem: format!(
                        "the filter uses leases (governor.leases: true) but the governor has \
                         {replicas} replica(s){}: run 2 or more with a coordination Redis",
                        if has_coordination(governor_deployment) {
                            ""
                        } else {
                            " and no coordination Redis (--coordination / HUNTGATE_COORDINATION)"
                        }
                    ),
                    fatal: true,
                });
            }
        }
    }
    for deployment in governors {
        if !used_governors.contains(&name(deployment)) {
            findings.push(Finding {
                object: name(deployment),
                problem: "no huntgate WasmPlugin in these manifests uses this governor: the \
                          governor without the filter admits nothing and limits nothing"
                    .to_string(),
                fatal: true,
            });
        }
    }
    findings
}
