//! The 16 tools of the real Amazon EKS MCP server, over the simulated world. Refusals and
//! validation errors use the real server's texts (tests/fixtures/reference/
//! eks-mcp-server-0.2.1.calls-readonly.json); answers carry a summary line and a JSON body.

use serde_json::{Value, json};

use super::{ClusterFx, Flags, ToolOutput, World};

const K8S_OPERATIONS: [&str; 5] = ["create", "replace", "patch", "delete", "read"];
const STACK_OPERATIONS: [&str; 4] = ["generate", "deploy", "describe", "delete"];

pub(crate) fn str_arg<'a>(args: &'a Value, name: &str) -> Option<&'a str> {
    args.get(name).and_then(Value::as_str)
}

/// An integer argument as pydantic's lax mode reads it (a number or a numeric string).
pub(crate) fn int_arg(args: &Value, name: &str, default: i64) -> i64 {
    match args.get(name) {
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .unwrap_or(default),
        Some(Value::String(s)) => s.trim().parse().unwrap_or(default),
        _ => default,
    }
}

fn bool_arg(args: &Value, name: &str, default: bool) -> bool {
    match args.get(name) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => {
            matches!(s.to_ascii_lowercase().as_str(), "true" | "1" | "yes" | "on")
        }
        Some(Value::Number(n)) => n.as_i64() == Some(1),
        _ => default,
    }
}

/// The key order of each tool's answer: the fields of the real server's data models in
/// declaration order, nested models' fields placed so that every model keeps its own order.
pub(crate) fn key_order(tool: &str) -> &'static [&'static str] {
    match tool {
        "list_k8s_resources" => &[
            "kind",
            "api_version",
            "name",
            "namespace",
            "count",
            "items",
            "creation_timestamp",
            "labels",
            "annotations",
        ],
        "get_pod_logs" => &["pod_name", "namespace", "container_name", "log_lines"],
        "get_k8s_events" => &[
            "involved_object_kind",
            "involved_object_name",
            "involved_object_namespace",
            "first_timestamp",
            "last_timestamp",
            "count",
            "events",
            "message",
            "reason",
            "reporting_component",
            "type",
        ],
        "list_api_versions" => &["cluster_name", "api_versions", "count"],
        "manage_k8s_resource" => &[
            "apiVersion",
            "kind",
            "name",
            "namespace",
            "api_version",
            "operation",
            "resource",
            "metadata",
            "spec",
            "status",
        ],
        "apply_yaml" => &["force_applied", "resources_created", "resources_updated"],
        "generate_app_manifest" => &["output_file_path"],
        "search_eks_troubleshoot_guide" => &["query", "results", "title", "advice"],
        "get_cloudwatch_logs" => &[
            "resource_type",
            "resource_name",
            "cluster_name",
            "log_type",
            "log_group",
            "start_time",
            "end_time",
            "log_entries",
            "timestamp",
            "message",
        ],
        "get_cloudwatch_metrics" => &[
            "cluster_name",
            "metric_name",
            "namespace",
            "start_time",
            "end_time",
            "data_points",
            "timestamp",
            "value",
        ],
        "manage_eks_stacks" => &[
            "operation",
            "template_path",
            "stack_arn",
            "creation_time",
            "stack_status",
            "outputs",
            "stack_name",
            "stack_id",
            "cluster_name",
        ],
        "add_inline_policy" => &[
            "policy_name",
            "role_name",
            "permissions_added",
            "Sid",
            "Effect",
            "Principal",
            "Action",
            "Resource",
            "Condition",
        ],
        "get_policies_for_role" => &[
            "role_arn",
            "assume_role_policy_document",
            "policy_type",
            "description",
            "policy_document",
            "managed_policies",
            "inline_policies",
            "Version",
            "Statement",
            "Sid",
            "Effect",
            "Principal",
            "Action",
            "Resource",
            "Condition",
        ],
        "get_eks_metrics_guidance" => &["resource_type", "metrics"],
        "get_eks_vpc_config" => &[
            "vpc_id",
            "subnet_id",
            "cidr_block",
            "additional_cidr_blocks",
            "routes",
            "destination_cidr_block",
            "target_type",
            "target_id",
            "state",
            "remote_node_cidr_blocks",
            "remote_pod_cidr_blocks",
            "subnets",
            "az_name",
            "available_ips",
            "is_public",
            "assign_public_ip",
            "disallowed_az",
            "cluster_name",
        ],
        "get_eks_insights" => &[
            "cluster_name",
            "insights",
            "id",
            "name",
            "category",
            "kubernetes_version",
            "last_refresh_time",
            "last_transition_time",
            "description",
            "insight_status",
            "status",
            "reason",
            "recommendation",
            "additional_info",
            "resources",
            "category_specific_summary",
            "next_token",
            "detail_mode",
        ],
        _ => &[],
    }
}

pub(crate) fn call(world: &mut World, tool: &str, args: &Value, flags: &Flags) -> ToolOutput {
    match tool {
        "list_k8s_resources" => list_k8s_resources(world, args),
        "get_pod_logs" => get_pod_logs(world, args, flags),
        "get_k8s_events" => get_k8s_events(world, args, flags),
        "list_api_versions" => list_api_versions(world, args),
        "manage_k8s_resource" => manage_k8s_resource(world, args, flags),
        "apply_yaml" => apply_yaml(world, args, flags),
        "generate_app_manifest" => generate_app_manifest(world, args, flags),
        "search_eks_troubleshoot_guide" => search_guide(args),
        "get_cloudwatch_logs" => get_cloudwatch_logs(world, args, flags),
        "get_cloudwatch_metrics" => get_cloudwatch_metrics(world, args),
        "manage_eks_stacks" => manage_eks_stacks(world, args, flags),
        "add_inline_policy" => add_inline_policy(world, args, flags),
        "get_policies_for_role" => get_policies_for_role(world, args),
        "get_eks_metrics_guidance" => get_eks_metrics_guidance(args),
        "get_eks_vpc_config" => get_eks_vpc_config(world, args),
        "get_eks_insights" => get_eks_insights(world, args),
        other => ToolOutput::error(format!("Unknown tool: {other}")),
    }
}

fn cluster<'a>(world: &'a World, name: &str) -> Option<&'a ClusterFx> {
    world.state.clusters.iter().find(|c| c.name == name)
}

fn cluster_mut<'a>(world: &'a mut World, name: &str) -> Option<&'a mut ClusterFx> {
    world.state.clusters.iter_mut().find(|c| c.name == name)
}

/// The error the real server gives when it cannot reach a cluster: its prefix, then what EKS
/// answers for a cluster that does not exist.
fn no_cluster(what: &str, name: &str) -> ToolOutput {
    ToolOutput::error(format!(
        "{what}: Failed to get cluster credentials: An error occurred (ResourceNotFoundException) when calling the DescribeCluster operation: No cluster found for name: {name}."
    ))
}

fn meta<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
}

fn matches_object(
    obj: &Value,
    kind: &str,
    api_version: Option<&str>,
    name: Option<&str>,
    namespace: Option<&str>,
) -> bool {
    obj.get("kind").and_then(Value::as_str) == Some(kind)
        && api_version.is_none_or(|v| obj.get("apiVersion").and_then(Value::as_str) == Some(v))
        && name.is_none_or(|n| meta(obj, "name") == Some(n))
        && namespace.is_none_or(|ns| {
            meta(obj, "namespace").unwrap_or("default") == ns || kind == "Namespace"
        })
}

/// `a=b,c=d` equality selectors over labels (or over `metadata.name` / `metadata.namespace` /
/// `status.phase` for field selectors).
fn selector_matches(obj: &Value, selector: Option<&str>, fields: bool) -> bool {
    let Some(selector) = selector.filter(|s| !s.trim().is_empty()) else {
        return true;
    };
    selector.split(',').all(|term| {
        let (key, want, negate) = match term.split_once("!=") {
            Some((k, v)) => (k.trim(), v.trim(), true),
            None => match term.split_once('=') {
                Some((k, v)) => (k.trim(), v.trim_start_matches('=').trim(), false),
                None => return false,
            },
        };
        let have = if fields {
            let mut node = obj;
            for part in key.split('.') {
                node = node.get(part).unwrap_or(&Value::Null);
            }
            node.as_str()
        } else {
            obj.get("metadata")
                .and_then(|m| m.get("labels"))
                .and_then(|l| l.get(key))
                .and_then(Value::as_str)
        };
        (have == Some(want)) != negate
    })
}

/// The real server's `ResourceSummary` of one object.
fn summary(obj: &Value) -> Value {
    let field = |k: &str| {
        obj.get("metadata")
            .and_then(|m| m.get(k))
            .cloned()
            .unwrap_or(Value::Null)
    };
    json!({
        "name": meta(obj, "name").unwrap_or_default(),
        "namespace": meta(obj, "namespace"),
        "creation_timestamp": meta(obj, "creationTimestamp"),
        "labels": field("labels"),
        "annotations": field("annotations"),
    })
}

/// `namespace/name`, or `name` when no namespace was given, as the real server labels objects.
fn qualified(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_owned(),
    }
}

fn list_k8s_resources(world: &World, args: &Value) -> ToolOutput {
    let cluster_name = str_arg(args, "cluster_name").unwrap_or_default();
    let kind = str_arg(args, "kind").unwrap_or_default();
    let api_version = str_arg(args, "api_version");
    let namespace = str_arg(args, "namespace");
    let Some(c) = cluster(world, cluster_name) else {
        return no_cluster(&format!("Failed to list {kind} resources"), cluster_name);
    };
    let items: Vec<Value> = c
        .resources
        .iter()
        .filter(|o| matches_object(o, kind, api_version, None, namespace))
        .filter(|o| selector_matches(o, str_arg(args, "label_selector"), false))
        .filter(|o| selector_matches(o, str_arg(args, "field_selector"), true))
        .map(summary)
        .collect();
    let n = items.len();
    ToolOutput::data(
        // The real server's wording, `in shop/all namespaces` included.
        format!(
            "Successfully listed {n} {kind} resources in {}all namespaces",
            namespace.map_or(String::new(), |ns| format!("{ns}/"))
        ),
        json!({"kind": kind, "api_version": api_version, "namespace": namespace, "count": n, "items": items}),
    )
}

fn get_pod_logs(world: &World, args: &Value, flags: &Flags) -> ToolOutput {
    if !flags.allow_sensitive_data_access {
        return ToolOutput::error("Access to pod logs requires --allow-sensitive-data-access flag");
    }
    let cluster_name = str_arg(args, "cluster_name").unwrap_or_default();
    let ns = str_arg(args, "namespace").unwrap_or_default();
    let pod = str_arg(args, "pod_name").unwrap_or_default();
    let container = str_arg(args, "container_name");
    let container_info = container.map_or(String::new(), |c| format!(" (container: {c})"));
    let Some(c) = cluster(world, cluster_name) else {
        return no_cluster(
            &format!("Failed to get logs from pod {ns}/{pod}{container_info}"),
            cluster_name,
        );
    };
    let Some(lines) = c.pod_logs.get(&format!("{ns}/{pod}")) else {
        return ToolOutput::error(format!(
            "Failed to get logs from pod {ns}/{pod}{container_info}: (404)\nReason: Not Found: pods \"{pod}\" not found"
        ));
    };
    let tail = usize::try_from(int_arg(args, "tail_lines", 100).max(0)).unwrap_or(0);
    let limit = usize::try_from(int_arg(args, "limit_bytes", 10_240).max(0)).unwrap_or(0);
    let mut selected: Vec<&str> = lines.iter().rev().take(tail).map(String::as_str).collect();
    selected.reverse();
    let mut text = selected.join("\n");
    if text.len() > limit {
        let mut cut = limit;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    ToolOutput::data(
        format!(
            "Successfully retrieved {} log lines from pod {ns}/{pod}{container_info}",
            text.lines().count()
        ),
        json!({"pod_name": pod, "namespace": ns, "container_name": container, "log_lines": text.lines().collect::<Vec<_>>()}),
    )
}

fn get_k8s_events(world: &World, args: &Value, flags: &Flags) -> ToolOutput {
    if !flags.allow_sensitive_data_access {
        return ToolOutput::error(
            "Access to Kubernetes events requires --allow-sensitive-data-access flag",
        );
    }
    let cluster_name = str_arg(args, "cluster_name").unwrap_or_default();
    let kind = str_arg(args, "kind").unwrap_or_default();
    let name = str_arg(args, "name").unwrap_or_default();
    let ns = str_arg(args, "namespace");
    let label = qualified(ns, name);
    let Some(c) = cluster(world, cluster_name) else {
        return no_cluster(
            &format!("Failed to get events for {kind} {label}"),
            cluster_name,
        );
    };
    let base = &world.state.base_time;
    let events: Vec<Value> = c
        .events
        .iter()
        .filter(|e| e.kind == kind && e.name == name && ns.is_none_or(|n| e.namespace == n))
        .map(|e| {
            json!({
                "first_timestamp": e.first_timestamp.as_deref().unwrap_or(base),
                "last_timestamp": e.last_timestamp.as_deref().unwrap_or(base),
                "count": e.count,
                "message": e.message,
                "reason": e.reason,
                "reporting_component": e.reporting_component,
                "type": e.event_type,
            })
        })
        .collect();
    ToolOutput::data(
        format!(
            "Successfully retrieved {} events for {kind} {label}",
            events.len()
        ),
        json!({
            "involved_object_kind": kind,
            "involved_object_name": name,
            "involved_object_namespace": ns,
            "count": events.len(),
            "events": events,
        }),
    )
}

fn list_api_versions(world: &World, args: &Value) -> ToolOutput {
    let cluster_name = str_arg(args, "cluster_name").unwrap_or_default();
    if cluster(world, cluster_name).is_none() {
        return no_cluster(
            &format!("Failed to get API versions from cluster {cluster_name}"),
            cluster_name,
        );
    }
    let versions = [
        "v1",
        "apps/v1",
        "batch/v1",
        "autoscaling/v2",
        "networking.k8s.io/v1",
        "policy/v1",
        "rbac.authorization.k8s.io/v1",
        "storage.k8s.io/v1",
        "apiextensions.k8s.io/v1",
    ];
    ToolOutput::data(
        format!(
            "Successfully retrieved {} API versions from cluster {cluster_name}",
            versions.len()
        ),
        json!({"cluster_name": cluster_name, "api_versions": versions, "count": versions.len()}),
    )
}

/// The Kubernetes API's plural resource name for a kind, lower case (`Deployment` →
/// `deployments`, `Ingress` → `ingresses`, `NetworkPolicy` → `networkpolicies`).
fn plural(kind: &str) -> String {
    let lower = kind.to_lowercase();
    if let Some(stem) = lower.strip_suffix('y') {
        format!("{stem}ies")
    } else if lower.ends_with('s') {
        format!("{lower}es")
    } else {
        format!("{lower}s")
    }
}

/// How the Kubernetes Python client's `ApiException` reads for a missing object.
fn k8s_not_found(kind: &str, name: &str) -> String {
    format!(
        "(404)\nReason: Not Found: {} \"{name}\" not found",
        plural(kind)
    )
}

fn manage_k8s_resource(world: &mut World, args: &Value, flags: &Flags) -> ToolOutput {
    let op = str_arg(args, "operation").unwrap_or_default();
    if !K8S_OPERATIONS.contains(&op) {
        return ToolOutput::error(format!(
            "Invalid operation: {op}. Valid operations are: {}",
            K8S_OPERATIONS.join(", ")
        ));
    }
    if op != "read" && !flags.allow_write {
        return ToolOutput::error(format!(
            "Operation {op} is not allowed without write access"
        ));
    }
    let kind = str_arg(args, "kind").unwrap_or_default().to_owned();
    // The real server guards reading Secrets only; writing one needs `--allow-write` alone.
    if op == "read" && kind.to_lowercase() == "secret" && !flags.allow_sensitive_data_access {
        return ToolOutput::error(
            "Access to Kubernetes Secrets requires --allow-sensitive-data-access flag",
        );
    }
    let cluster_name = str_arg(args, "cluster_name").unwrap_or_default().to_owned();
    let api_version = str_arg(args, "api_version").unwrap_or_default().to_owned();
    let body = args.get("body").filter(|b| b.is_object()).cloned();
    let ns_param = str_arg(args, "namespace").map(str::to_owned);
    let name = str_arg(args, "name").map(str::to_owned).or_else(|| {
        body.as_ref()
            .and_then(|b| meta(b, "name").map(str::to_owned))
    });
    // Where the object lives: the namespace given, else the body's, else `default`.
    let namespace = ns_param
        .clone()
        .or_else(|| {
            body.as_ref()
                .and_then(|b| meta(b, "namespace").map(str::to_owned))
        })
        .unwrap_or_else(|| "default".to_owned());
    let label = format!(
        "{kind} {}",
        qualified(ns_param.as_deref(), name.as_deref().unwrap_or_default())
    );
    let response = |resource: Option<Value>| {
        json!({
            "kind": kind,
            "name": name.clone().unwrap_or_default(),
            "namespace": ns_param,
            "api_version": api_version,
            "operation": op,
            "resource": resource,
        })
    };
    let now = world.now();
    let Some(c) = cluster_mut(world, &cluster_name) else {
        return no_cluster(&format!("Failed to {op} {label}"), &cluster_name);
    };
    let Some(name) = name.clone() else {
        return ToolOutput::error(format!(
            "Failed to {op} {label}: a resource name is required (give `name` or `body.metadata.name`)"
        ));
    };
    let position = c
        .resources
        .iter()
        .position(|o| matches_object(o, &kind, Some(&api_version), Some(&name), Some(&namespace)));
    match (op, position) {
        ("read", Some(i)) => {
            let obj = c.resources[i].clone();
            ToolOutput::data(
                format!("Successfully retrieved {label}"),
                response(Some(obj)),
            )
        }
        ("delete", Some(i)) => {
            c.resources.remove(i);
            ToolOutput::data(format!("Successfully deleted {label}"), response(None))
        }
        ("read" | "delete" | "patch" | "replace", None) => ToolOutput::error(format!(
            "Failed to {op} {label}: {}",
            k8s_not_found(&kind, &name)
        )),
        ("create", Some(_)) => ToolOutput::error(format!(
            "Failed to create {label}: (409)\nReason: Conflict: {} \"{name}\" already exists",
            plural(&kind)
        )),
        ("create" | "replace", found) => {
            let Some(mut obj) = body else {
                return ToolOutput::error(format!(
                    "Failed to {op} {label}: body is required for {op} operation"
                ));
            };
            obj["apiVersion"] = json!(api_version);
            obj["kind"] = json!(kind);
            obj["metadata"]["name"] = json!(name);
            obj["metadata"]["namespace"] = json!(namespace);
            obj["metadata"]["creationTimestamp"] = json!(now);
            match found {
                Some(i) => c.resources[i] = obj,
                None => c.resources.push(obj),
            }
            let verb = if op == "create" {
                "created"
            } else {
                "replaced"
            };
            ToolOutput::data(format!("Successfully {verb} {label}"), response(None))
        }
        ("patch", Some(i)) => {
            let Some(patch) = body else {
                return ToolOutput::error(format!(
                    "Failed to patch {label}: body is required for patch operation"
                ));
            };
            merge_patch(&mut c.resources[i], &patch);
            ToolOutput::data(format!("Successfully patched {label}"), response(None))
        }
        _ => ToolOutput::error(format!("Failed to {op} {label}")),
    }
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn apply_yaml(world: &mut World, args: &Value, flags: &Flags) -> ToolOutput {
    if !flags.allow_write {
        return ToolOutput::error("Operation apply_yaml is not allowed without write access");
    }
    let path = str_arg(args, "yaml_path").unwrap_or_default().to_owned();
    let cluster_name = str_arg(args, "cluster_name").unwrap_or_default().to_owned();
    let namespace = str_arg(args, "namespace").unwrap_or("default").to_owned();
    let force = bool_arg(args, "force", true);
    // The real server's order: the path must be absolute, the cluster reachable, then the
    // file is read (from the fixture's `files`: the mock touches no disk) and parsed.
    if !path.starts_with('/') {
        return ToolOutput::error(format!("Path must be absolute: {path}"));
    }
    if cluster(world, &cluster_name).is_none() {
        return no_cluster("Error applying YAML from file", &cluster_name);
    }
    let Some(text) = world.state.files.get(&path).cloned() else {
        return ToolOutput::error(format!("YAML file not found: {path}"));
    };
    let mut docs = Vec::new();
    for doc in serde_norway::Deserializer::from_str(&text) {
        match <Value as serde::Deserialize>::deserialize(doc) {
            Ok(Value::Null) => {}
            Ok(v) if v.get("kind").is_some() && meta(&v, "name").is_some() => docs.push(v),
            Ok(_) => {
                return ToolOutput::error(format!(
                    "Failed to apply YAML from file {path}: every document needs `kind` and `metadata.name`"
                ));
            }
            Err(e) => {
                return ToolOutput::error(format!("Error applying YAML from file: {e}"));
            }
        }
    }
    let now = world.now();
    let Some(c) = cluster_mut(world, &cluster_name) else {
        return no_cluster(
            &format!("Failed to apply YAML from file {path}"),
            &cluster_name,
        );
    };
    let (mut created, mut updated) = (0u32, 0u32);
    for mut obj in docs {
        if meta(&obj, "namespace").is_none() {
            obj["metadata"]["namespace"] = json!(namespace);
        }
        obj["metadata"]["creationTimestamp"] = json!(now);
        let kind = obj
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let name = meta(&obj, "name").unwrap_or_default().to_owned();
        let ns = meta(&obj, "namespace").unwrap_or_default().to_owned();
        let api = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .map(str::to_owned);
        match c
            .resources
            .iter()
            .position(|o| matches_object(o, &kind, api.as_deref(), Some(&name), Some(&ns)))
        {
            Some(_) if !force => {
                return ToolOutput::error(format!(
                    "Failed to apply YAML from file {path}: (409)\nReason: Conflict: {} \"{name}\" already exists",
                    plural(&kind)
                ));
            }
            Some(i) => {
                c.resources[i] = obj;
                updated += 1;
            }
            None => {
                c.resources.push(obj);
                created += 1;
            }
        }
    }
    ToolOutput::data(
        format!(
            "Successfully applied all resources from YAML file {path} ({created} created, {updated} updated)"
        ),
        json!({"force_applied": force, "resources_created": created, "resources_updated": updated}),
    )
}

fn generate_app_manifest(world: &mut World, args: &Value, flags: &Flags) -> ToolOutput {
    if !flags.allow_write {
        return ToolOutput::error(
            "Operation generate_app_manifest is not allowed without write access",
        );
    }
    let app = str_arg(args, "app_name").unwrap_or_default();
    let image = str_arg(args, "image_uri").unwrap_or_default();
    let dir = str_arg(args, "output_dir").unwrap_or_default();
    if !dir.starts_with('/') {
        return ToolOutput::error(format!("Output directory path must be absolute: {dir}"));
    }
    let dir = dir.trim_end_matches('/');
    let ns = str_arg(args, "namespace").unwrap_or("default");
    let port = int_arg(args, "port", 80);
    let replicas = int_arg(args, "replicas", 2);
    let cpu = str_arg(args, "cpu").unwrap_or("100m");
    let memory = str_arg(args, "memory").unwrap_or("128Mi");
    let scheme = str_arg(args, "load_balancer_scheme").unwrap_or("internal");
    let manifest = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {app}\n  namespace: {ns}\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels:\n      app: {app}\n  template:\n    metadata:\n      labels:\n        app: {app}\n    spec:\n      containers:\n        - name: {app}\n          image: {image}\n          ports:\n            - containerPort: {port}\n          resources:\n            requests:\n              cpu: {cpu}\n              memory: {memory}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {app}\n  namespace: {ns}\n  annotations:\n    service.beta.kubernetes.io/aws-load-balancer-scheme: {scheme}\nspec:\n  type: LoadBalancer\n  selector:\n    app: {app}\n  ports:\n    - port: {port}\n"
    );
    let path = format!("{dir}/{app}-manifest.yaml");
    // Written to the world's files, where `apply_yaml` finds it.
    world.state.files.insert(path.clone(), manifest);
    ToolOutput::data(
        format!(
            "Successfully generated YAML for {app} application with image {image} and saved to {path}"
        ),
        json!({"output_file_path": path}),
    )
}

fn search_guide(args: &Value) -> ToolOutput {
    let original = str_arg(args, "query").unwrap_or_default();
    let query = original.to_lowercase();
    // A small built-in guide (our own text), matched by keywords.
    let guide = [
        (
            "crashloopbackoff",
            "Pods in CrashLoopBackOff",
            "Read the container's previous logs, check liveness probes, and check that the container's dependencies (databases, secrets) are reachable.",
        ),
        (
            "imagepullbackoff",
            "Image pull failures",
            "Check the image URI and tag, the node role's ECR permissions, and the VPC endpoints for ECR if nodes have no internet access.",
        ),
        (
            "node notready",
            "Nodes not joining or NotReady",
            "Check the node role in the aws-auth config map or access entries, the node's security group, and kubelet logs.",
        ),
        (
            "pending",
            "Pods stuck in Pending",
            "Check the scheduler events: insufficient CPU or memory, taints without tolerations, or no node matching the pod's selectors.",
        ),
        (
            "dns",
            "DNS resolution failures",
            "Check that CoreDNS pods are running, the kube-dns service, and security groups for UDP and TCP 53.",
        ),
    ];
    let hits: Vec<Value> = guide
        .iter()
        .filter(|(key, title, _)| {
            key.split(' ').all(|k| query.contains(k)) || query.contains(&title.to_lowercase())
        })
        .map(|(_, title, advice)| json!({"title": title, "advice": advice}))
        .collect();
    ToolOutput::data(
        format!(
            "Found {} troubleshooting entries for query: {original}",
            hits.len()
        ),
        json!({"query": original, "results": hits}),
    )
}

/// A Python-style rendering of an optional string argument in a sentence (`None` when absent).
fn or_none(v: Option<&str>) -> &str {
    v.unwrap_or("None")
}

/// The query window: `minutes` before the world's current time, to now.
fn window(world: &World, minutes: i64) -> (String, String) {
    let now = i64::try_from(world.tick).unwrap_or(i64::MAX / 2);
    let start = super::timestamp_offset(&world.state.base_time, now - minutes.clamp(0, 1440) * 60);
    (start, world.now())
}

fn get_cloudwatch_logs(world: &World, args: &Value, flags: &Flags) -> ToolOutput {
    if !flags.allow_sensitive_data_access {
        return ToolOutput::error(
            "Access to CloudWatch logs requires --allow-sensitive-data-access flag",
        );
    }
    let resource_type = str_arg(args, "resource_type").unwrap_or_default();
    let cluster_name = str_arg(args, "cluster_name").unwrap_or_default();
    let log_type = str_arg(args, "log_type").unwrap_or_default();
    let resource = str_arg(args, "resource_name");
    let filter = str_arg(args, "filter_pattern");
    let limit = usize::try_from(int_arg(args, "limit", 50).max(0)).unwrap_or(0);
    // The real server's log group for each log type; anything else is a full group name.
    let log_group = match log_type {
        "application" | "host" | "performance" | "dataplane" => {
            format!("/aws/containerinsights/{cluster_name}/{log_type}")
        }
        "control-plane" => format!("/aws/eks/{cluster_name}/cluster"),
        other => other.to_owned(),
    };
    let failed = format!(
        "Failed to get logs for {resource_type} {}",
        or_none(resource)
    );
    let lines = cluster(world, cluster_name).and_then(|c| c.log_groups.get(log_type));
    let Some(lines) = lines else {
        return ToolOutput::error(format!(
            "{failed}: An error occurred (ResourceNotFoundException) when calling the StartQuery operation: Log group '{log_group}' does not exist for account ID '{}'",
            world.state.account
        ));
    };
    let (start, end) = window(world, int_arg(args, "minutes", 15));
    let entries: Vec<Value> = lines
        .iter()
        .filter(|l| resource.is_none_or(|r| l.contains(r)) && filter.is_none_or(|f| l.contains(f)))
        .take(limit)
        .map(|l| json!({"timestamp": end, "message": l}))
        .collect();
    ToolOutput::data(
        format!(
            "Successfully retrieved {} log entries for {resource_type} {} in cluster {cluster_name}",
            entries.len(),
            or_none(resource)
        ),
        json!({
            "resource_type": resource_type,
            "resource_name": resource,
            "cluster_name": cluster_name,
            "log_type": log_type,
            "log_group": log_group,
            "start_time": start,
            "end_time": end,
            "log_entries": entries,
        }),
    )
}

fn get_cloudwatch_metrics(world: &World, args: &Value) -> ToolOutput {
    let cluster_name = str_arg(args, "cluster_name").unwrap_or_default();
    let metric = str_arg(args, "metric_name").unwrap_or_default();
    let minutes = int_arg(args, "minutes", 15).clamp(1, 1440);
    let period = int_arg(args, "period", 60).max(1);
    let limit = int_arg(args, "limit", 50).max(0);
    if cluster(world, cluster_name).is_none() {
        // CloudWatch answers an empty series for a cluster that publishes nothing.
        let (start, end) = window(world, minutes);
        return ToolOutput::data(
            format!(
                "Successfully retrieved 0 metric data points for {metric} in cluster {cluster_name}"
            ),
            json!({"metric_name": metric, "namespace": str_arg(args, "namespace"), "cluster_name": cluster_name,
                "start_time": start, "end_time": end, "data_points": []}),
        );
    }
    // Deterministic values: a sawtooth seeded by the metric's name, newest first as
    // CloudWatch returns them.
    let seed: i64 = metric.bytes().map(i64::from).sum::<i64>() % 50;
    let points = ((minutes * 60) / period).min(limit);
    let (start, end) = window(world, minutes);
    let newest = i64::try_from(world.tick).unwrap_or(i64::MAX / 2);
    let values: Vec<Value> = (0..points)
        .map(|i| {
            let at = super::timestamp_offset(&world.state.base_time, newest - i * period);
            // Python sends floats: `12.0`, not `12`.
            let value = f64::from(u32::try_from(seed + (i % 10) * 3).unwrap_or(0));
            json!({"timestamp": at, "value": value})
        })
        .collect();
    ToolOutput::data(
        format!(
            "Successfully retrieved {} metric data points for {metric} in cluster {cluster_name}",
            values.len()
        ),
        json!({"metric_name": metric, "namespace": str_arg(args, "namespace"), "cluster_name": cluster_name,
            "start_time": start, "end_time": end, "data_points": values}),
    )
}

/// The tag the real server puts on the stacks it creates, and checks before changing one.
const STACK_TAG: (&str, &str) = ("CreatedBy", "EksMcpServer");

fn stack_id(world: &World, name: &str) -> String {
    format!(
        "arn:aws:cloudformation:{}:{}:stack/{name}/mock",
        world.state.region, world.state.account
    )
}

/// The real server's `ManageEksStacksData`: every field, empty unless `fields` sets it.
fn stack_data(op: &str, fields: Value) -> Value {
    let mut data = json!({
        "operation": op,
        "template_path": "",
        "stack_arn": "",
        "creation_time": "",
        "stack_status": "",
        "outputs": {},
        "stack_name": "",
        "stack_id": "",
        "cluster_name": "",
    });
    merge_patch(&mut data, &fields);
    data
}

/// The real server's refusal to touch a stack it did not create.
fn not_owned(stack_name: &str, operation: &str) -> String {
    format!(
        "Stack {stack_name} exists but was not created by {}. For safety reasons, this tool will only {operation} stacks that were created by itself. To manage this stack, please use the AWS Console, CLI, or the tool that created it.",
        STACK_TAG.1
    )
}

fn manage_eks_stacks(world: &mut World, args: &Value, flags: &Flags) -> ToolOutput {
    let op = str_arg(args, "operation").unwrap_or_default();
    // The real server checks write access before it looks at the operation's name.
    if op != "describe" && !flags.allow_write {
        return ToolOutput::error(format!(
            "Operation {op} is not allowed without write access"
        ));
    }
    if !STACK_OPERATIONS.contains(&op) {
        return ToolOutput::error(format!(
            "Invalid operation: {op}. Must be one of: {}",
            STACK_OPERATIONS.join(", ")
        ));
    }
    let template = str_arg(args, "template_file").map(str::to_owned);
    // Missing arguments are a `ValueError` the SDK reports as a tool error.
    let required = |what: &str| {
        ToolOutput::error(format!(
            "Error executing tool manage_eks_stacks: {what} is required for {op} operation"
        ))
    };
    if matches!(op, "generate" | "deploy") && template.is_none() {
        return required("template_file");
    }
    let Some(cluster_name) = str_arg(args, "cluster_name").map(str::to_owned) else {
        return required("cluster_name");
    };
    let stack_name = format!("eks-{cluster_name}-stack");
    let position = world.state.stacks.iter().position(|s| s.name == stack_name);
    let owned =
        |s: &super::StackFx| s.tags.get(STACK_TAG.0).map(String::as_str) == Some(STACK_TAG.1);
    let missing = || {
        format!(
            "Stack {stack_name} not found or cannot be accessed: An error occurred (ValidationError) when calling the DescribeStacks operation: Stack with id {stack_name} does not exist"
        )
    };
    let now = world.now();
    match op {
        "generate" => {
            let path = template.unwrap_or_default();
            let text = format!(
                "AWSTemplateFormatVersion: '2010-09-09'\nDescription: EKS cluster with a dedicated VPC (generated by the mock)\nParameters:\n  ClusterName:\n    Default: {cluster_name}\n    Type: String\nResources:\n  EksCluster:\n    Type: AWS::EKS::Cluster\n    Properties:\n      Name: !Ref ClusterName\n"
            );
            world.state.files.insert(path.clone(), text);
            ToolOutput::data(
                format!(
                    "CloudFormation template generated at {path} with cluster name {cluster_name}"
                ),
                stack_data(op, json!({"template_path": path})),
            )
        }
        "deploy" => {
            let path = template.unwrap_or_default();
            if !world.state.files.contains_key(&path) {
                return ToolOutput::error(format!(
                    "Failed to deploy stack: [Errno 2] No such file or directory: '{path}'"
                ));
            }
            let id = stack_id(world, &stack_name);
            let operation = match position {
                Some(i) if !owned(&world.state.stacks[i]) => {
                    return ToolOutput::error(not_owned(&stack_name, "update"));
                }
                Some(i) => {
                    world.state.stacks[i].status = "UPDATE_IN_PROGRESS".into();
                    "update"
                }
                None => {
                    let mut stack = super::StackFx::new(
                        stack_name.clone(),
                        cluster_name.clone(),
                        "CREATE_IN_PROGRESS",
                        now,
                    );
                    stack.tags.insert(STACK_TAG.0.into(), STACK_TAG.1.into());
                    world.state.stacks.push(stack);
                    // The stack's cluster appears at once, still being created.
                    if cluster(world, &cluster_name).is_none() {
                        world.state.clusters.push(ClusterFx {
                            name: cluster_name.clone(),
                            version: "1.32".into(),
                            status: "CREATING".into(),
                            vpc_id: format!("vpc-mock-{}", world.tick),
                            subnets: Vec::new(),
                            security_groups: Vec::new(),
                            nodegroups: Vec::new(),
                            resources: Vec::new(),
                            pod_logs: Default::default(),
                            events: Vec::new(),
                            insights: Vec::new(),
                            log_groups: Default::default(),
                        });
                    }
                    "creation"
                }
            };
            ToolOutput::data(
                format!(
                    "CloudFormation stack {operation} initiated. Stack {operation} is in progress and typically takes 15-20 minutes to complete."
                ),
                stack_data(
                    op,
                    json!({"stack_name": stack_name, "stack_arn": id, "cluster_name": cluster_name}),
                ),
            )
        }
        "describe" => {
            let Some(i) = position else {
                return ToolOutput::error(missing());
            };
            let s = &world.state.stacks[i];
            if !owned(s) {
                return ToolOutput::error(not_owned(&stack_name, "describe"));
            }
            let body = stack_data(
                op,
                json!({
                    "stack_name": stack_name,
                    "stack_id": stack_id(world, &stack_name),
                    "cluster_name": cluster_name,
                    "creation_time": s.creation_time.clone().unwrap_or_else(|| world.state.base_time.clone()),
                    "stack_status": s.status,
                    "outputs": s.outputs,
                }),
            );
            ToolOutput::data(
                format!(
                    "Successfully described CloudFormation stack {stack_name} for EKS cluster {cluster_name}"
                ),
                body,
            )
        }
        _ => {
            let Some(i) = position else {
                return ToolOutput::error(missing());
            };
            if !owned(&world.state.stacks[i]) {
                return ToolOutput::error(not_owned(&stack_name, "delete"));
            }
            world.state.stacks.remove(i);
            // Deleting the stack deletes the cluster it made.
            world.state.clusters.retain(|c| c.name != cluster_name);
            ToolOutput::data(
                format!(
                    "Initiated deletion of CloudFormation stack {stack_name} for EKS cluster {cluster_name}. Deletion is in progress."
                ),
                stack_data(
                    op,
                    json!({"stack_name": stack_name, "stack_id": stack_id(world, &stack_name), "cluster_name": cluster_name}),
                ),
            )
        }
    }
}

/// IAM's answer for a role that does not exist, as boto reports it.
fn no_role(operation: &str, role: &str) -> String {
    format!(
        "An error occurred (NoSuchEntity) when calling the {operation} operation: The role with name {role} cannot be found."
    )
}

fn add_inline_policy(world: &mut World, args: &Value, flags: &Flags) -> ToolOutput {
    if !flags.allow_write {
        return ToolOutput::error("Adding inline policies requires --allow-write flag");
    }
    let role = str_arg(args, "role_name").unwrap_or_default();
    let policy = str_arg(args, "policy_name").unwrap_or_default();
    let permissions = args.get("permissions").cloned().unwrap_or(Value::Null);
    let Some(r) = world.state.roles.iter_mut().find(|r| r.name == role) else {
        return ToolOutput::error(format!(
            "Failed to create inline policy: {}",
            no_role("GetRolePolicy", role)
        ));
    };
    if r.inline_policies.contains_key(policy) {
        return ToolOutput::error(format!(
            "Policy {policy} already exists in role {role}. Cannot modify existing policies."
        ));
    }
    let statements = match &permissions {
        Value::Array(_) => permissions.clone(),
        other => json!([other]),
    };
    let document = json!({"Version": "2012-10-17", "Statement": statements});
    r.inline_policies.insert(policy.to_owned(), document);
    ToolOutput::data(
        format!("Successfully created new inline policy {policy} in role {role}"),
        json!({"policy_name": policy, "role_name": role, "permissions_added": permissions}),
    )
}

fn get_policies_for_role(world: &World, args: &Value) -> ToolOutput {
    let role = str_arg(args, "role_name").unwrap_or_default();
    let Some(r) = world.state.roles.iter().find(|r| r.name == role) else {
        return ToolOutput::error(format!(
            "Failed to describe IAM role: {}",
            no_role("GetRole", role)
        ));
    };
    let trust = r.assume_role_policy.clone().unwrap_or_else(|| {
        json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
    });
    let managed: Vec<Value> = r
        .managed_policies
        .iter()
        .map(|arn| {
            json!({
                "policy_type": "Managed",
                "description": format!("AWS managed policy {}", arn.rsplit('/').next().unwrap_or(arn)),
                "policy_document": null,
            })
        })
        .collect();
    let inline: Vec<Value> = r
        .inline_policies
        .values()
        .map(|d| json!({"policy_type": "Inline", "description": null, "policy_document": d}))
        .collect();
    ToolOutput::data(
        format!("Successfully retrieved details for IAM role: {role}"),
        json!({
            "role_arn": format!("arn:aws:iam::{}:role/{role}", world.state.account),
            "assume_role_policy_document": trust,
            "description": r.description,
            "managed_policies": managed,
            "inline_policies": inline,
        }),
    )
}

/// Dimension sets, as CloudWatch Container Insights publishes them.
const POD_ALL: &[&str] = &[
    "PodName,Namespace,ClusterName",
    "Namespace,ClusterName",
    "Service,Namespace,ClusterName",
    "ClusterName",
];
const POD_ONE: &[&str] = &["PodName,Namespace,ClusterName", "ClusterName"];
const POD_ONLY: &[&str] = &["PodName,Namespace,ClusterName"];
const POD_GPU: &[&str] = &[
    "ClusterName",
    "ClusterName,Namespace,PodName",
    "ClusterName,FullPodName,Namespace,PodName",
];
const NODE_ALL: &[&str] = &["NodeName,InstanceId,ClusterName", "ClusterName"];
const CLUSTER: &[&str] = &["ClusterName"];
const NAMESPACE: &[&str] = &["Namespace,ClusterName"];
const SERVICE: &[&str] = &["Service,Namespace,ClusterName"];

/// The Container Insights metrics for each resource type (our own short descriptions).
fn metrics_for(
    resource: &str,
) -> Option<&'static [(&'static str, &'static str, &'static [&'static str])]> {
    Some(match resource {
        "cluster" => &[
            (
                "cluster_failed_node_count",
                "Nodes in the cluster failing a health check.",
                CLUSTER,
            ),
            ("cluster_node_count", "Nodes in the cluster.", CLUSTER),
            (
                "cluster_number_of_running_pods",
                "Pods running in the cluster.",
                CLUSTER,
            ),
        ],
        "node" => &[
            (
                "node_cpu_limit",
                "CPU units the node can give to pods.",
                CLUSTER,
            ),
            (
                "node_cpu_reserved_capacity",
                "Share of the node's CPU requested by pods, percent.",
                NODE_ALL,
            ),
            (
                "node_cpu_usage_total",
                "CPU units in use on the node.",
                CLUSTER,
            ),
            (
                "node_cpu_utilization",
                "CPU in use on the node, percent.",
                NODE_ALL,
            ),
            (
                "node_filesystem_utilization",
                "Node file system in use, percent.",
                NODE_ALL,
            ),
            (
                "node_memory_limit",
                "Memory the node can give to pods, bytes.",
                CLUSTER,
            ),
            (
                "node_memory_reserved_capacity",
                "Share of the node's memory requested by pods, percent.",
                NODE_ALL,
            ),
            (
                "node_memory_utilization",
                "Memory in use on the node, percent.",
                NODE_ALL,
            ),
            (
                "node_memory_working_set",
                "Memory in the node's working set, bytes.",
                CLUSTER,
            ),
            (
                "node_network_total_bytes",
                "Bytes sent and received by the node per second.",
                NODE_ALL,
            ),
            (
                "node_number_of_running_containers",
                "Containers running on the node.",
                NODE_ALL,
            ),
            (
                "node_number_of_running_pods",
                "Pods running on the node.",
                NODE_ALL,
            ),
        ],
        // The names, order and dimension sets the real server's guidance lists for pods.
        "pod" => &[
            (
                "pod_cpu_reserved_capacity",
                "Share of the cluster's CPU requested by the pod, percent.",
                POD_ONE,
            ),
            (
                "pod_cpu_utilization",
                "CPU in use by the pod, percent of the node.",
                POD_ALL,
            ),
            (
                "pod_cpu_utilization_over_pod_limit",
                "CPU in use by the pod, percent of its limit.",
                POD_ALL,
            ),
            ("pod_gpu_request", "GPUs requested by the pod.", POD_GPU),
            ("pod_gpu_limit", "GPU limit of the pod.", POD_GPU),
            ("pod_gpu_usage_total", "GPUs in use by the pod.", POD_GPU),
            (
                "pod_gpu_reserved_capacity",
                "Share of the cluster's GPUs requested by the pod, percent.",
                POD_GPU,
            ),
            (
                "pod_memory_reserved_capacity",
                "Share of the cluster's memory requested by the pod, percent.",
                POD_ONE,
            ),
            (
                "pod_memory_utilization",
                "Memory in use by the pod, percent of the node.",
                POD_ALL,
            ),
            (
                "pod_memory_utilization_over_pod_limit",
                "Memory in use by the pod, percent of its limit.",
                POD_ALL,
            ),
            (
                "pod_network_rx_bytes",
                "Bytes received by the pod per second.",
                POD_ALL,
            ),
            (
                "pod_network_tx_bytes",
                "Bytes sent by the pod per second.",
                POD_ALL,
            ),
            (
                "pod_number_of_container_restarts",
                "Container restarts in the pod.",
                POD_ONLY,
            ),
        ],
        "namespace" => &[(
            "namespace_number_of_running_pods",
            "Pods running in the namespace.",
            NAMESPACE,
        )],
        "service" => &[(
            "service_number_of_running_pods",
            "Pods running behind the service.",
            SERVICE,
        )],
        _ => return None,
    })
}

fn get_eks_metrics_guidance(args: &Value) -> ToolOutput {
    let resource = str_arg(args, "resource_type").unwrap_or_default();
    let Some(metrics) = metrics_for(resource) else {
        return ToolOutput::error(format!(
            "Invalid resource type: {resource}. Valid resource types are: cluster, node, pod, namespace, service"
        ));
    };
    let list: Vec<Value> = metrics
        .iter()
        .map(|(n, d, dims)| json!({"description": d, "dimensions": dims, "name": n}))
        .collect();
    ToolOutput::data(
        format!(
            "Successfully retrieved {} metrics for resource type {resource}",
            list.len()
        ),
        json!({"resource_type": resource, "metrics": list}),
    )
}

fn get_eks_vpc_config(world: &World, args: &Value) -> ToolOutput {
    let cluster_name = str_arg(args, "cluster_name").unwrap_or_default();
    let Some(c) = cluster(world, cluster_name) else {
        return ToolOutput::error(format!(
            "Error retrieving VPC configuration: An error occurred (ResourceNotFoundException) when calling the DescribeCluster operation: No cluster found for name: {cluster_name}."
        ));
    };
    if let Some(vpc) = str_arg(args, "vpc_id")
        && vpc != c.vpc_id
    {
        return ToolOutput::error(format!(
            "Error retrieving VPC configuration: An error occurred (InvalidVpcID.NotFound) when calling the DescribeVpcs operation: The vpc ID '{vpc}' does not exist"
        ));
    }
    // A /16 per cluster, a /20 per subnet: derived from the positions, so stable.
    let index = world
        .state
        .clusters
        .iter()
        .position(|x| x.name == c.name)
        .unwrap_or(0);
    let cidr = format!("10.{}.0.0/16", index % 256);
    let subnets: Vec<Value> = c
        .subnets
        .iter()
        .enumerate()
        .map(|(n, id)| {
            json!({
                "subnet_id": id,
                "cidr_block": format!("10.{}.{}.0/20", index % 256, (n * 16) % 256),
                "az_name": format!("{}{}", world.state.region, ["a", "b", "c", "d"][n % 4]),
                "available_ips": 4091,
                "is_public": false,
                "assign_public_ip": false,
                "disallowed_az": false,
            })
        })
        .collect();
    ToolOutput::data(
        format!(
            "Retrieved VPC configuration for {} (cluster {cluster_name})",
            c.vpc_id
        ),
        json!({
            "vpc_id": c.vpc_id,
            "cidr_block": cidr,
            "additional_cidr_blocks": [],
            "routes": [{"destination_cidr_block": cidr, "target_type": "local", "target_id": "local", "state": "active"}],
            "remote_node_cidr_blocks": [],
            "remote_pod_cidr_blocks": [],
            "subnets": subnets,
            "cluster_name": cluster_name,
        }),
    )
}

/// One insight as the real server reports it (`EksInsightItem`), from the fixture's fields
/// (`id`, `name`, `category`, `status`, and optionally `description`, `reason`,
/// `recommendation`, `kubernetes_version`).
fn insight_item(world: &World, i: &Value, detail: bool) -> Value {
    let field = |k: &str| i.get(k).and_then(Value::as_str);
    let epoch = epoch_seconds(&world.state.base_time);
    let mut item = json!({
        "id": field("id").unwrap_or_default(),
        "name": field("name").unwrap_or_default(),
        "category": field("category").unwrap_or_default(),
        "kubernetes_version": field("kubernetes_version"),
        "last_refresh_time": epoch,
        "last_transition_time": epoch,
        "description": field("description").unwrap_or_else(|| field("name").unwrap_or_default()),
        "insight_status": {
            "status": field("status").unwrap_or("UNKNOWN"),
            "reason": field("reason").unwrap_or_default(),
        },
        "recommendation": Value::Null,
        "additional_info": Value::Null,
        "resources": Value::Null,
        "category_specific_summary": Value::Null,
    });
    if detail {
        item["recommendation"] = json!(field("recommendation"));
        item["additional_info"] = json!({});
        item["resources"] = json!([]);
        item["category_specific_summary"] = json!({});
    }
    item
}

/// Seconds since 1970 of an RFC 3339 UTC stamp, as a float like boto's timestamps give.
fn epoch_seconds(stamp: &str) -> f64 {
    // Stamps are years 0-9999, far inside the range an f64 holds exactly.
    super::epoch_of(stamp).map_or(0.0, |s| s as f64)
}

fn get_eks_insights(world: &World, args: &Value) -> ToolOutput {
    let cluster_name = str_arg(args, "cluster_name").unwrap_or_default();
    let Some(c) = cluster(world, cluster_name) else {
        return ToolOutput::error(format!(
            "Error listing insights: An error occurred (ResourceNotFoundException) when calling the ListInsights operation: No cluster found for name: {cluster_name}."
        ));
    };
    let id = str_arg(args, "insight_id");
    let category = str_arg(args, "category");
    let insights: Vec<Value> = c
        .insights
        .iter()
        .filter(|i| id.is_none_or(|x| i.get("id").and_then(Value::as_str) == Some(x)))
        .filter(|i| category.is_none_or(|x| i.get("category").and_then(Value::as_str) == Some(x)))
        .map(|i| insight_item(world, i, id.is_some()))
        .collect();
    if let Some(id) = id
        && insights.is_empty()
    {
        return ToolOutput::error(format!(
            "Error getting insight details: An error occurred (ResourceNotFoundException) when calling the DescribeInsight operation: No insight found for id: {id}."
        ));
    }
    ToolOutput::data(
        format!(
            "Successfully retrieved {} insights for cluster {cluster_name}",
            insights.len()
        ),
        json!({"cluster_name": cluster_name, "insights": insights, "next_token": null, "detail_mode": id.is_some()}),
    )
}
