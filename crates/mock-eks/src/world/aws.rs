//! The extended catalogue's AWS-operation tools. Where the world models the resource the call
//! reads or changes it (HealthOmics run batches, EKS clusters and nodegroups, IAM roles and
//! their inline policies, CloudFormation stacks); errors read like boto's
//! (`An error occurred (Code) when calling the Op operation: message`). Every other operation
//! gets a deterministic answer: a request id from the world's logical clock and the
//! identifiers it was given.

use std::sync::LazyLock;

use serde_json::{Map, Value, json};
use tollgate_catalog::{CatalogTool, ToolSource};

use super::compact::{Compact, Tail};
use super::real::str_arg;
use super::{
    BatchFx, BatchStatus, NodegroupFx, RoleFx, RunFx, RunStatus, StackFx, ToolOutput, World,
};

fn aws_error(code: &str, operation: &str, message: &str) -> ToolOutput {
    ToolOutput::error(format!(
        "An error occurred ({code}) when calling the {operation} operation: {message}"
    ))
}

fn ok(world: &World, operation: &str, mut body: Value) -> ToolOutput {
    body["ResponseMetadata"] = json!({"RequestId": world.request_id(), "HTTPStatusCode": 200});
    ToolOutput::data(succeeded(operation), body)
}

/// A body written with no tree, opened with its `ResponseMetadata` (which sorts before every
/// lower-case key): the caller writes the other keys in order and closes it for [`ok_body`].
fn body_start(world: &World) -> Compact {
    // What comes before the request id is written once per process.
    static HEAD: LazyLock<Tail> = LazyLock::new(|| {
        let mut w = Compact::new();
        let start = w.mark();
        w.open().key("ResponseMetadata").open();
        w.key("HTTPStatusCode").u64(200).key("RequestId");
        w.tail_since(start)
    });
    let mut w = Compact::new();
    w.append(&HEAD);
    w.plain_str(|out| world.push_request_id(out)).close();
    w
}

/// [`ok`] of a body from [`body_start`].
fn ok_body(operation: &str, body: Compact) -> ToolOutput {
    ToolOutput::compact(succeeded(operation), body)
}

/// A data answer's summary line, `{operation} succeeded` (one per answer: no formatter).
fn succeeded(operation: &str) -> String {
    [operation, " succeeded"].concat()
}

/// [`ok`] of a body with no key but `ResponseMetadata`.
fn ok_empty(world: &World, operation: &str) -> ToolOutput {
    let mut w = body_start(world);
    w.close();
    ok_body(operation, w)
}

pub(crate) fn call(world: &mut World, tool: &CatalogTool, args: &Value) -> ToolOutput {
    let ToolSource::Aws {
        service, operation, ..
    } = &tool.source
    else {
        return ToolOutput::error(format!("Unknown tool: {}", tool.name));
    };
    let op = operation.as_str();
    let modelled = match service.as_str() {
        "omics" => omics(world, op, args),
        "eks" => eks(world, op, args),
        "iam" => iam(world, op, args),
        "cloudformation" => cfn(world, op, args),
        "logs" => logs(world, op, args),
        _ => None,
    };
    match modelled {
        Some(out) => out,
        None => generic(world, op, args),
    }
}

/// Extended operations that hand out what the real server guards with
/// `--allow-sensitive-data-access`: log contents, and credentials or tokens.
pub(crate) fn is_sensitive(tool: &CatalogTool) -> bool {
    let ToolSource::Aws {
        service, operation, ..
    } = &tool.source
    else {
        return false;
    };
    let op = operation.as_str();
    match service.as_str() {
        "logs" => matches!(
            op,
            "GetLogEvents"
                | "FilterLogEvents"
                | "GetLogRecord"
                | "GetQueryResults"
                | "GetLogObject"
        ),
        "sts" => {
            op.starts_with("Get") || op == "DecodeAuthorizationMessage" || op.starts_with("Assume")
        }
        "ecr" => op == "GetAuthorizationToken",
        "kms" => matches!(
            op,
            "Decrypt"
                | "GenerateDataKey"
                | "GenerateDataKeyPair"
                | "GenerateDataKeyWithoutPlaintext"
                | "GenerateDataKeyPairWithoutPlaintext"
                | "GenerateRandom"
        ),
        _ => false,
    }
}

/// Every log group the world's clusters have, by CloudWatch name, with its lines.
fn log_groups(world: &World) -> Vec<(String, &Vec<String>)> {
    let mut groups = Vec::new();
    for c in &world.state.clusters {
        for (kind, lines) in &c.log_groups {
            let name = if kind == "control-plane" {
                format!("/aws/eks/{}/cluster", c.name)
            } else {
                format!("/aws/containerinsights/{}/{kind}", c.name)
            };
            groups.push((name, lines));
        }
    }
    groups.sort_by(|a, b| a.0.cmp(&b.0));
    groups
}

/// CloudWatch Logs over the clusters' log groups: describe the groups, read and filter events.
fn logs(world: &mut World, op: &str, args: &Value) -> Option<ToolOutput> {
    let group_arg = str_arg(args, "logGroupName")
        .or_else(|| str_arg(args, "logGroupIdentifier"))
        .map(str::to_owned);
    let limit = args
        .get("limit")
        .and_then(Value::as_u64)
        .map_or(100, |n| usize::try_from(n.clamp(1, 10_000)).unwrap_or(100));
    let epoch_ms = super::epoch_of(&world.state.base_time).unwrap_or(0) * 1000;
    let account = world.state.account.clone();
    let region = world.state.region.clone();
    let out = match op {
        "DescribeLogGroups" => {
            let prefix = str_arg(args, "logGroupNamePrefix").unwrap_or_default();
            let pattern = str_arg(args, "logGroupNamePattern");
            let groups: Vec<Value> = log_groups(world)
                .into_iter()
                .filter(|(n, _)| n.starts_with(prefix) && pattern.is_none_or(|p| n.contains(p)))
                .take(limit)
                .map(|(n, lines)| {
                    json!({
                        "logGroupName": n,
                        "arn": format!("arn:aws:logs:{region}:{account}:log-group:{n}:*"),
                        "storedBytes": lines.iter().map(String::len).sum::<usize>(),
                        "creationTime": epoch_ms,
                    })
                })
                .collect();
            ok(world, op, json!({"logGroups": groups}))
        }
        "GetLogEvents" | "FilterLogEvents" => {
            let Some(group) = group_arg else {
                return Some(aws_error(
                    "InvalidParameterException",
                    op,
                    "Either logGroupName or logGroupIdentifier must be given.",
                ));
            };
            let groups = log_groups(world);
            let Some((_, lines)) = groups.iter().find(|(n, _)| *n == group) else {
                return Some(aws_error(
                    "ResourceNotFoundException",
                    op,
                    "The specified log group does not exist.",
                ));
            };
            let filter = str_arg(args, "filterPattern")
                .map(|p| p.trim_matches('"').to_owned())
                .filter(|p| !p.is_empty());
            let events: Vec<Value> = lines
                .iter()
                .enumerate()
                .filter(|(_, l)| filter.as_ref().is_none_or(|f| l.contains(f.as_str())))
                .take(limit)
                .map(|(i, l)| {
                    let at = epoch_ms + i64::try_from(i).unwrap_or(0) * 1000;
                    json!({"timestamp": at, "message": l, "ingestionTime": at, "logStreamName": "mock-stream"})
                })
                .collect();
            ok(world, op, json!({"events": events}))
        }
        _ => return None,
    };
    Some(out)
}

/// The page size a list call asks for (`maxItems`, `maxResults` or `MaxItems`), capped at 100.
fn page_size(args: &Value) -> usize {
    ["maxItems", "maxResults", "MaxItems"]
        .iter()
        .find_map(|k| args.get(*k).and_then(Value::as_u64))
        .map_or(100, |n| usize::try_from(n.clamp(1, 100)).unwrap_or(100))
}

/// A run batch's fields as the list and get calls show them, up to its run summary: `id`,
/// `name` (in key order; `GetBatch` writes `runSummary` next).
fn batch_head(w: &mut Compact, b: &BatchFx) {
    w.key("id").str(&b.id).key("name").str(&b.name);
}

/// A run batch's fields after its run summary: `status`, `totalRuns`.
fn batch_tail(w: &mut Compact, b: &BatchFx) {
    w.key("status").str(b.status.as_str());
    w.key("totalRuns").u64(u64::from(b.runs));
}

/// A run, as an object (keys in order).
fn run_json(w: &mut Compact, r: &RunFx) {
    w.open().key("batchId").opt_str(r.batch_id.as_deref());
    w.key("id").str(&r.id).key("name").str(&r.name);
    w.key("status").str(r.status.as_str()).close();
}

fn not_found(op: &str, what: &str, id: &str) -> ToolOutput {
    aws_error(
        "ResourceNotFoundException",
        op,
        &format!("{what} {id} not found"),
    )
}

/// HealthOmics run batches and runs. Cancelling a batch cancels its unfinished runs; a
/// batch or run that has finished cannot be cancelled again (`ConflictException`).
fn omics(world: &mut World, op: &str, args: &Value) -> Option<ToolOutput> {
    let batch_id = str_arg(args, "batchId").unwrap_or_default();
    let run_id = str_arg(args, "id").unwrap_or_default();
    let batch = world
        .state
        .run_batches
        .iter()
        .position(|b| b.id == batch_id);
    // Only the run operations look a run up (a scan of every run).
    let run = if matches!(op, "GetRun" | "CancelRun" | "DeleteRun") {
        world.state.runs.iter().position(|r| r.id == run_id)
    } else {
        None
    };
    let out = match (op, batch, run) {
        (
            "CancelRunBatch" | "GetBatch" | "DeleteRunBatch" | "DeleteBatch" | "ListRunsInBatch",
            None,
            _,
        ) => not_found(op, "Run batch", batch_id),
        ("CancelRunBatch", Some(i), _) => {
            let status = world.state.run_batches[i].status;
            if !status.is_active() {
                return Some(aws_error(
                    "ConflictException",
                    op,
                    &format!(
                        "Run batch {batch_id} is {}; only a CREATING, PENDING, SUBMITTING or INPROGRESS batch can be cancelled",
                        status.as_str()
                    ),
                ));
            }
            world.state.run_batches[i].status = BatchStatus::Cancelled;
            let index = world.batch_runs();
            for &r in index.get(batch_id).map_or(&[][..], Vec::as_slice) {
                let Some(run) = world.state.runs.get_mut(r) else {
                    continue;
                };
                if run.status.is_active() {
                    run.status = RunStatus::Cancelled;
                }
            }
            ok_empty(world, op)
        }
        ("GetBatch", Some(i), _) => {
            let mut w = body_start(world);
            // A polled batch is written once until the state changes.
            world.cached_tail(&mut w, ("GetBatch", i), |world, w| {
                let index = world.batch_runs();
                let b = &world.state.run_batches[i];
                // Counted by state first: one key per state, not one allocation per run.
                let mut counts = [0u64; RunStatus::BY_LOWER_NAME.len()];
                for r in index
                    .get(&b.id)
                    .map_or(&[][..], Vec::as_slice)
                    .iter()
                    .filter_map(|&r| world.state.runs.get(r))
                {
                    counts[r.status as usize] += 1;
                }
                batch_head(w, b);
                // The states that have runs, in key order, as the summary's map would hold them.
                w.key("runSummary").open();
                for s in RunStatus::BY_LOWER_NAME {
                    if counts[s as usize] > 0 {
                        w.key(s.as_lower()).u64(counts[s as usize]);
                    }
                }
                w.close();
                batch_tail(w, b);
                w.close();
            });
            ok_body(op, w)
        }
        ("ListBatch", _, _) => {
            let status = str_arg(args, "status");
            let name = str_arg(args, "name");
            let mut w = body_start(world);
            w.key("items").open_array();
            for b in world
                .state
                .run_batches
                .iter()
                .filter(|b| {
                    status.is_none_or(|s| b.status.as_str() == s)
                        && name.is_none_or(|n| b.name == n)
                })
                .take(page_size(args))
            {
                w.open();
                batch_head(&mut w, b);
                batch_tail(&mut w, b);
                w.close();
            }
            w.close_array().close();
            ok_body(op, w)
        }
        ("ListRunsInBatch", Some(_), _) => {
            let cancelled = world
                .state
                .run_batches
                .iter()
                .any(|b| b.id == batch_id && b.status == BatchStatus::Cancelled);
            let index = world.batch_runs();
            let mut w = body_start(world);
            w.key("runs").open_array();
            for r in index
                .get(batch_id)
                .map_or(&[][..], Vec::as_slice)
                .iter()
                .filter_map(|&r| world.state.runs.get(r))
                .take(page_size(args))
            {
                let submission = if cancelled && r.status == RunStatus::Cancelled {
                    "CANCEL_SUCCESS"
                } else {
                    "SUCCESS"
                };
                w.open()
                    .key("runId")
                    .str(&r.id)
                    .key("runSettingId")
                    .str(&r.name);
                w.key("submissionStatus").str(submission).close();
            }
            w.close_array().close();
            ok_body(op, w)
        }
        ("StartRunBatch", _, _) => {
            let n = world.state.run_batches.len() + 1;
            let runs = args
                .get("batchRunSettings")
                .and_then(|s| s.get("inlineSettings"))
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let batch = BatchFx {
                id: format!("rb-{n:04}"),
                name: str_arg(args, "batchName").unwrap_or("unnamed").to_owned(),
                status: BatchStatus::Pending,
                runs: u32::try_from(runs).unwrap_or(u32::MAX),
            };
            for i in 1..=runs {
                world.state.runs.push(RunFx {
                    id: format!("{}-r{i:03}", batch.id),
                    name: format!("{}-{i:03}", batch.name),
                    status: RunStatus::Pending,
                    batch_id: Some(batch.id.clone()),
                });
            }
            world.runs_changed();
            let body = json!({"id": batch.id, "status": batch.status.as_str()});
            world.state.run_batches.push(batch);
            ok(world, op, body)
        }
        ("DeleteRunBatch" | "DeleteBatch", Some(i), _) => {
            let status = world.state.run_batches[i].status;
            if status.is_active() || status == BatchStatus::Stopping {
                return Some(aws_error(
                    "ConflictException",
                    op,
                    &format!(
                        "Run batch {batch_id} is still {}; cancel it first",
                        status.as_str()
                    ),
                ));
            }
            if op == "DeleteRunBatch" {
                // Deletes the batch's runs and keeps the batch, marked RUNS_DELETED.
                world
                    .state
                    .runs
                    .retain(|r| r.batch_id.as_deref() != Some(batch_id));
                world.runs_changed();
                world.state.run_batches[i].status = BatchStatus::RunsDeleted;
            } else {
                world.state.run_batches.remove(i);
            }
            ok_empty(world, op)
        }
        ("GetRun" | "CancelRun" | "DeleteRun", _, None) => not_found(op, "Run", run_id),
        ("GetRun", _, Some(i)) => {
            let mut w = body_start(world);
            let r = &world.state.runs[i];
            w.key("batchId").opt_str(r.batch_id.as_deref());
            w.key("id").str(&r.id).key("name").str(&r.name);
            w.key("status").str(r.status.as_str()).close();
            ok_body(op, w)
        }
        ("CancelRun", _, Some(i)) => {
            let status = world.state.runs[i].status;
            if !status.is_active() {
                return Some(aws_error(
                    "ConflictException",
                    op,
                    &format!(
                        "Run {run_id} is {}; only a PENDING, STARTING or RUNNING run can be cancelled",
                        status.as_str()
                    ),
                ));
            }
            world.state.runs[i].status = RunStatus::Cancelled;
            ok_empty(world, op)
        }
        ("DeleteRun", _, Some(i)) => {
            let status = world.state.runs[i].status;
            if status.is_active() {
                return Some(aws_error(
                    "ConflictException",
                    op,
                    &format!("Run {run_id} is still {}; cancel it first", status.as_str()),
                ));
            }
            world.state.runs.remove(i);
            world.runs_changed();
            ok_empty(world, op)
        }
        ("ListRuns", _, _) => {
            let status = str_arg(args, "status");
            let name = str_arg(args, "name");
            let batch = str_arg(args, "batchId");
            let limit = page_size(args);
            let mut w = body_start(world);
            w.key("items").open_array();
            for r in world
                .state
                .runs
                .iter()
                .filter(|r| {
                    status.is_none_or(|s| r.status.as_str() == s)
                        && name.is_none_or(|n| r.name == n)
                        && batch.is_none_or(|b| r.batch_id.as_deref() == Some(b))
                })
                .take(limit)
            {
                run_json(&mut w, r);
            }
            w.close_array().close();
            ok_body(op, w)
        }
        _ => return None,
    };
    Some(out)
}

fn eks(world: &mut World, op: &str, args: &Value) -> Option<ToolOutput> {
    let name = str_arg(args, "name")
        .or_else(|| str_arg(args, "clusterName"))
        .unwrap_or_default()
        .to_owned();
    let region = world.state.region.clone();
    let account = world.state.account.clone();
    let position = world.state.clusters.iter().position(|c| c.name == name);
    let missing = || {
        aws_error(
            "ResourceNotFoundException",
            op,
            &format!("No cluster found for name: {name}."),
        )
    };
    Some(match (op, position) {
        ("ListClusters", _) => {
            let names: Vec<&str> = world
                .state
                .clusters
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            let body = json!({"clusters": names});
            ok(world, op, body)
        }
        ("DescribeCluster", Some(i)) => {
            let c = &world.state.clusters[i];
            let body = json!({"cluster": {
                "name": c.name, "version": c.version, "status": c.status,
                "arn": format!("arn:aws:eks:{region}:{account}:cluster/{}", c.name),
                "resourcesVpcConfig": {"vpcId": c.vpc_id, "subnetIds": c.subnets, "securityGroupIds": c.security_groups},
            }});
            ok(world, op, body)
        }
        ("DeleteCluster", Some(i)) => {
            if !world.state.clusters[i].nodegroups.is_empty() {
                let groups: Vec<String> = world.state.clusters[i]
                    .nodegroups
                    .iter()
                    .map(|n| n.name.clone())
                    .collect();
                return Some(aws_error(
                    "ResourceInUseException",
                    op,
                    &format!("Cluster has nodegroups attached: {}", groups.join(", ")),
                ));
            }
            let c = world.state.clusters.remove(i);
            ok(
                world,
                op,
                json!({"cluster": {"name": c.name, "status": "DELETING"}}),
            )
        }
        ("ListNodegroups", Some(i)) => {
            let groups: Vec<&str> = world.state.clusters[i]
                .nodegroups
                .iter()
                .map(|n| n.name.as_str())
                .collect();
            let body = json!({"nodegroups": groups});
            ok(world, op, body)
        }
        ("CreateNodegroup", Some(i)) => {
            let group = str_arg(args, "nodegroupName")
                .unwrap_or_default()
                .to_owned();
            if world.state.clusters[i]
                .nodegroups
                .iter()
                .any(|n| n.name == group)
            {
                return Some(aws_error(
                    "ResourceInUseException",
                    op,
                    &format!("NodeGroup already exists with name {group} and cluster name {name}"),
                ));
            }
            let instance_types: Vec<String> = args
                .get("instanceTypes")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .filter(|v: &Vec<String>| !v.is_empty())
                .unwrap_or_else(|| vec!["t3.medium".to_owned()]);
            let desired = args
                .get("scalingConfig")
                .and_then(|c| c.get("desiredSize"))
                .and_then(Value::as_u64)
                .map_or(2, |n| u32::try_from(n).unwrap_or(u32::MAX));
            world.state.clusters[i].nodegroups.push(NodegroupFx {
                name: group.clone(),
                instance_types: instance_types.clone(),
                desired_size: desired,
                status: "CREATING".into(),
            });
            let body = json!({"nodegroup": {"nodegroupName": group, "clusterName": name, "instanceTypes": instance_types,
                "scalingConfig": {"desiredSize": desired}, "status": "CREATING"}});
            ok(world, op, body)
        }
        ("UpdateNodegroupConfig", Some(i)) => {
            let group = str_arg(args, "nodegroupName").unwrap_or_default();
            let tick = world.tick;
            let Some(n) = world.state.clusters[i]
                .nodegroups
                .iter_mut()
                .find(|n| n.name == group)
            else {
                return Some(aws_error(
                    "ResourceNotFoundException",
                    op,
                    &format!("No node group found for name: {group}."),
                ));
            };
            if let Some(size) = args
                .get("scalingConfig")
                .and_then(|c| c.get("desiredSize"))
                .and_then(Value::as_u64)
            {
                n.desired_size = u32::try_from(size).unwrap_or(u32::MAX);
            }
            let body = json!({"update": {"id": format!("upd-{tick:08}"), "status": "InProgress", "type": "ConfigUpdate"}});
            ok(world, op, body)
        }
        ("DescribeNodegroup" | "DeleteNodegroup", Some(i)) => {
            let group = str_arg(args, "nodegroupName").unwrap_or_default();
            let Some(g) = world.state.clusters[i]
                .nodegroups
                .iter()
                .position(|n| n.name == group)
            else {
                return Some(aws_error(
                    "ResourceNotFoundException",
                    op,
                    &format!("No node group found for name: {group}."),
                ));
            };
            if op == "DeleteNodegroup" {
                let n = world.state.clusters[i].nodegroups.remove(g);
                return Some(ok(
                    world,
                    op,
                    json!({"nodegroup": {"nodegroupName": n.name, "status": "DELETING"}}),
                ));
            }
            let n = &world.state.clusters[i].nodegroups[g];
            let body = json!({"nodegroup": {"nodegroupName": n.name, "clusterName": name, "instanceTypes": n.instance_types,
                "scalingConfig": {"desiredSize": n.desired_size}, "status": n.status}});
            ok(world, op, body)
        }
        (
            "DescribeCluster"
            | "DeleteCluster"
            | "ListNodegroups"
            | "DescribeNodegroup"
            | "DeleteNodegroup"
            | "CreateNodegroup"
            | "UpdateNodegroupConfig",
            None,
        ) => missing(),
        _ => return None,
    })
}

fn iam(world: &mut World, op: &str, args: &Value) -> Option<ToolOutput> {
    let role = str_arg(args, "RoleName").unwrap_or_default().to_owned();
    let account = world.state.account.clone();
    let position = world.state.roles.iter().position(|r| r.name == role);
    let missing = || {
        aws_error(
            "NoSuchEntity",
            op,
            &format!("The role with name {role} cannot be found."),
        )
    };
    Some(match (op, position) {
        ("CreateRole", Some(_)) => aws_error(
            "EntityAlreadyExists",
            op,
            &format!("Role with name {role} already exists."),
        ),
        ("CreateRole", None) => {
            let trust = str_arg(args, "AssumeRolePolicyDocument")
                .and_then(|d| serde_json::from_str::<Value>(d).ok());
            world.state.roles.push(RoleFx {
                name: role.clone(),
                description: str_arg(args, "Description").map(str::to_owned),
                assume_role_policy: trust,
                managed_policies: Vec::new(),
                inline_policies: std::collections::BTreeMap::new(),
            });
            let body = json!({"Role": {"RoleName": role, "Arn": format!("arn:aws:iam::{account}:role/{role}")}});
            ok(world, op, body)
        }
        ("AttachRolePolicy", Some(i)) => {
            let arn = str_arg(args, "PolicyArn").unwrap_or_default().to_owned();
            let policies = &mut world.state.roles[i].managed_policies;
            if !policies.contains(&arn) {
                policies.push(arn);
            }
            ok(world, op, json!({}))
        }
        ("DetachRolePolicy", Some(i)) => {
            let arn = str_arg(args, "PolicyArn").unwrap_or_default();
            let policies = &mut world.state.roles[i].managed_policies;
            let Some(p) = policies.iter().position(|a| a == arn) else {
                return Some(aws_error(
                    "NoSuchEntity",
                    op,
                    &format!("Policy {arn} was not found."),
                ));
            };
            policies.remove(p);
            ok(world, op, json!({}))
        }
        ("ListRoles", _) => {
            let roles: Vec<Value> = world.state.roles.iter().map(|r| json!({"RoleName": r.name, "Arn": format!("arn:aws:iam::{account}:role/{}", r.name)})).collect();
            ok(world, op, json!({"Roles": roles, "IsTruncated": false}))
        }
        ("GetRole", Some(i)) => {
            let r = &world.state.roles[i];
            let body = json!({"Role": {"RoleName": r.name, "Arn": format!("arn:aws:iam::{account}:role/{}", r.name)}});
            ok(world, op, body)
        }
        ("DeleteRole", Some(i)) => {
            let r = &world.state.roles[i];
            if !r.inline_policies.is_empty() || !r.managed_policies.is_empty() {
                return Some(aws_error(
                    "DeleteConflict",
                    op,
                    "Cannot delete entity, must delete policies first.",
                ));
            }
            world.state.roles.remove(i);
            ok(world, op, json!({}))
        }
        ("ListRolePolicies", Some(i)) => {
            let names: Vec<&String> = world.state.roles[i].inline_policies.keys().collect();
            let body = json!({"PolicyNames": names, "IsTruncated": false});
            ok(world, op, body)
        }
        ("ListAttachedRolePolicies", Some(i)) => {
            let attached: Vec<Value> = world.state.roles[i]
                .managed_policies
                .iter()
                .map(|a| json!({"PolicyArn": a, "PolicyName": a.rsplit('/').next()}))
                .collect();
            ok(
                world,
                op,
                json!({"AttachedPolicies": attached, "IsTruncated": false}),
            )
        }
        ("GetRolePolicy" | "DeleteRolePolicy", Some(i)) => {
            let name = str_arg(args, "PolicyName").unwrap_or_default();
            if !world.state.roles[i].inline_policies.contains_key(name) {
                return Some(aws_error(
                    "NoSuchEntity",
                    op,
                    &format!("The role policy with name {name} cannot be found."),
                ));
            }
            if op == "DeleteRolePolicy" {
                world.state.roles[i].inline_policies.remove(name);
                return Some(ok(world, op, json!({})));
            }
            let document = world.state.roles[i].inline_policies.get(name).cloned();
            ok(
                world,
                op,
                json!({"RoleName": role, "PolicyName": name, "PolicyDocument": document}),
            )
        }
        ("PutRolePolicy", Some(i)) => {
            let name = str_arg(args, "PolicyName").unwrap_or_default().to_owned();
            let document = str_arg(args, "PolicyDocument")
                .and_then(|d| serde_json::from_str::<Value>(d).ok())
                .unwrap_or(Value::Null);
            if document.is_null() {
                return Some(aws_error(
                    "MalformedPolicyDocument",
                    op,
                    "The policy document is not valid JSON.",
                ));
            }
            world.state.roles[i].inline_policies.insert(name, document);
            ok(world, op, json!({}))
        }
        (
            "GetRole"
            | "DeleteRole"
            | "ListRolePolicies"
            | "ListAttachedRolePolicies"
            | "GetRolePolicy"
            | "DeleteRolePolicy"
            | "PutRolePolicy"
            | "AttachRolePolicy"
            | "DetachRolePolicy",
            None,
        ) => missing(),
        _ => return None,
    })
}

fn cfn(world: &mut World, op: &str, args: &Value) -> Option<ToolOutput> {
    let name = str_arg(args, "StackName").map(str::to_owned);
    Some(match op {
        "DescribeStacks" | "ListStacks" => {
            let stacks: Vec<Value> = world
                .state
                .stacks
                .iter()
                .filter(|s| name.as_ref().is_none_or(|n| &s.name == n))
                .map(|s| {
                    let tags: Vec<Value> = s
                        .tags
                        .iter()
                        .map(|(k, v)| json!({"Key": k, "Value": v}))
                        .collect();
                    let outputs: Vec<Value> = s
                        .outputs
                        .iter()
                        .map(|(k, v)| json!({"OutputKey": k, "OutputValue": v}))
                        .collect();
                    json!({
                        "StackName": s.name,
                        "StackId": format!("arn:aws:cloudformation:{}:{}:stack/{}/mock", world.state.region, world.state.account, s.name),
                        "StackStatus": s.status,
                        "CreationTime": s.creation_time.as_deref().unwrap_or(&world.state.base_time),
                        "Tags": tags,
                        "Outputs": outputs,
                    })
                })
                .collect();
            if let Some(n) = &name
                && stacks.is_empty()
            {
                return Some(aws_error(
                    "ValidationError",
                    op,
                    &format!("Stack with id {n} does not exist"),
                ));
            }
            let key = if op == "ListStacks" {
                "StackSummaries"
            } else {
                "Stacks"
            };
            ok(world, op, json!({ key: stacks }))
        }
        "CreateStack" => {
            let n = name.unwrap_or_default();
            if world.state.stacks.iter().any(|s| s.name == n) {
                return Some(aws_error(
                    "AlreadyExistsException",
                    op,
                    &format!("Stack [{n}] already exists"),
                ));
            }
            let cluster = args
                .get("Tags")
                .and_then(Value::as_array)
                .and_then(|tags| {
                    tags.iter()
                        .find(|t| t.get("Key").and_then(Value::as_str) == Some("cluster"))
                })
                .and_then(|t| str_arg(t, "Value"))
                .unwrap_or_default()
                .to_owned();
            let now = world.now();
            let mut stack = StackFx::new(n.clone(), cluster, "CREATE_IN_PROGRESS", now);
            if let Some(tags) = args.get("Tags").and_then(Value::as_array) {
                for t in tags {
                    if let (Some(k), Some(v)) = (str_arg(t, "Key"), str_arg(t, "Value")) {
                        stack.tags.insert(k.to_owned(), v.to_owned());
                    }
                }
            }
            world.state.stacks.push(stack);
            let (region, account) = (&world.state.region, &world.state.account);
            let id = format!("arn:aws:cloudformation:{region}:{account}:stack/{n}/mock");
            ok(world, op, json!({"StackId": id}))
        }
        "DeleteStack" => {
            let n = name.unwrap_or_default();
            // CloudFormation deletes of unknown stacks succeed silently; so does the mock.
            world.state.stacks.retain(|s| s.name != n);
            ok(world, op, json!({}))
        }
        _ => return None,
    })
}

/// The answer for operations the world does not model: the identifiers the call named (the
/// arguments named `...Name`, `...Id`, `...Arn` or their plurals, when they hold strings).
fn generic(world: &World, op: &str, args: &Value) -> ToolOutput {
    let mut echo = Map::new();
    if let Some(obj) = args.as_object() {
        for (k, v) in obj {
            let key = k.to_ascii_lowercase();
            let identifier = ["name", "id", "arn", "names", "ids", "arns"]
                .iter()
                .any(|suffix| key.ends_with(suffix));
            let strings =
                v.is_string() || v.as_array().is_some_and(|a| a.iter().all(Value::is_string));
            if identifier && strings {
                echo.insert(k.clone(), v.clone());
            }
        }
    }
    ok(world, op, json!({"Operation": op, "Identifiers": echo}))
}
