//! The extended catalogue's AWS-operation tools. Where the world models the resource the call
//! reads or changes it (HealthOmics run batches, EKS clusters and nodegroups, IAM roles and
//! their inline policies, CloudFormation stacks); errors read like boto's
//! (`An error occurred (Code) when calling the Op operation: message`). Every other operation
//! gets a deterministic answer: a request id from the world's logical clock and the
//! identifiers it was given.

use serde_json::{Map, Value, json};
use tollgate_catalog::{CatalogTool, ToolSource};

use super::real::str_arg;
use super::{BatchFx, ToolOutput, World};

fn aws_error(code: &str, operation: &str, message: &str) -> ToolOutput {
    ToolOutput::error(format!(
        "An error occurred ({code}) when calling the {operation} operation: {message}"
    ))
}

fn ok(world: &World, operation: &str, mut body: Value) -> ToolOutput {
    body["ResponseMetadata"] = json!({"RequestId": world.request_id(), "HTTPStatusCode": 200});
    ToolOutput::data(format!("{operation} succeeded"), body)
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
        _ => None,
    };
    match modelled {
        Some(out) => out,
        None => generic(world, op, args),
    }
}

fn batch_json(b: &BatchFx) -> Value {
    json!({"id": b.id, "name": b.name, "status": b.status, "totalRuns": b.runs})
}

fn omics(world: &mut World, op: &str, args: &Value) -> Option<ToolOutput> {
    let id = str_arg(args, "batchId").unwrap_or_default().to_owned();
    let find = |w: &World| w.state.run_batches.iter().position(|b| b.id == id);
    Some(match op {
        "CancelRunBatch" => match find(world) {
            None => aws_error(
                "ResourceNotFoundException",
                op,
                &format!("Run batch {id} not found"),
            ),
            Some(i) => {
                let b = &mut world.state.run_batches[i];
                if b.status != "RUNNING" && b.status != "PENDING" {
                    let status = b.status.clone();
                    return Some(aws_error(
                        "ConflictException",
                        op,
                        &format!(
                            "Run batch {id} is {status}; only a PENDING or RUNNING batch can be cancelled"
                        ),
                    ));
                }
                b.status = "CANCELLED".into();
                ok(world, op, json!({}))
            }
        },
        "GetBatch" => match find(world) {
            None => aws_error(
                "ResourceNotFoundException",
                op,
                &format!("Run batch {id} not found"),
            ),
            Some(i) => {
                let body = batch_json(&world.state.run_batches[i]);
                ok(world, op, body)
            }
        },
        "ListBatch" => {
            let status = str_arg(args, "status");
            let name = str_arg(args, "name");
            let items: Vec<Value> = world
                .state
                .run_batches
                .iter()
                .filter(|b| {
                    status.is_none_or(|s| b.status == s) && name.is_none_or(|n| b.name == n)
                })
                .map(batch_json)
                .collect();
            ok(world, op, json!({"items": items}))
        }
        "StartRunBatch" => {
            let n = world.state.run_batches.len() + 1;
            let batch = BatchFx {
                id: format!("rb-{n:04}"),
                name: str_arg(args, "batchName").unwrap_or("unnamed").to_owned(),
                status: "PENDING".into(),
                runs: u32::try_from(
                    args.get("batchRunSettings")
                        .and_then(|s| s.get("inlineSettings"))
                        .and_then(Value::as_array)
                        .map_or(0, Vec::len),
                )
                .unwrap_or(u32::MAX),
            };
            let body = json!({"id": batch.id, "status": batch.status});
            world.state.run_batches.push(batch);
            ok(world, op, body)
        }
        "DeleteRunBatch" | "DeleteBatch" => match find(world) {
            None => aws_error(
                "ResourceNotFoundException",
                op,
                &format!("Run batch {id} not found"),
            ),
            Some(i)
                if matches!(
                    world.state.run_batches[i].status.as_str(),
                    "RUNNING" | "PENDING" | "CANCELLING"
                ) =>
            {
                aws_error(
                    "ConflictException",
                    op,
                    &format!(
                        "Run batch {id} is still {}; cancel it first",
                        world.state.run_batches[i].status
                    ),
                )
            }
            Some(i) => {
                world.state.run_batches.remove(i);
                ok(world, op, json!({}))
            }
        },
        _ => return None,
    })
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
            "DescribeCluster" | "DeleteCluster" | "ListNodegroups" | "DescribeNodegroup"
            | "DeleteNodegroup",
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
            | "PutRolePolicy",
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
                .map(|s| json!({"StackName": s.name, "StackStatus": s.status, "Tags": [{"Key": "cluster", "Value": s.cluster}]}))
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
        "DeleteStack" => {
            let n = name.unwrap_or_default();
            // CloudFormation deletes of unknown stacks succeed silently; so does the mock.
            world.state.stacks.retain(|s| s.name != n);
            ok(world, op, json!({}))
        }
        _ => return None,
    })
}

/// The answer for operations the world does not model: the identifiers the call named.
fn generic(world: &World, op: &str, args: &Value) -> ToolOutput {
    let mut echo = Map::new();
    if let Some(obj) = args.as_object() {
        for (k, v) in obj {
            let key = k.to_ascii_lowercase();
            if (key.ends_with("name") || key.ends_with("id") || key.ends_with("arn"))
                && v.is_string()
            {
                echo.insert(k.clone(), v.clone());
            }
        }
    }
    ok(world, op, json!({"Operation": op, "Identifiers": echo}))
}
