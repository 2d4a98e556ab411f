#!/usr/bin/env python3
"""Generates Tollgate's tool catalogue: crates/catalog/data/catalog.json.

    python3 xtask/gen_catalog.py [--reference PATH] [--botocore-data DIR]

Without --botocore-data it creates a throwaway venv under /tmp, installs the pinned botocore
(BOTOCORE_VERSION) into it and reads botocore's service models from there. The output is
deterministic (sorted keys, stable order), so re-running it with the same inputs changes
nothing; building and testing Tollgate never runs this script.

Inputs:
- the 16 tools of the real awslabs EKS MCP server (names and input schemas as recorded in
  --reference, default ../shared/reference/eks-mcp-server-0.2.1.tools.json). Descriptions and
  titles are ours: the recording omits the server's prose, and we do not copy it.
- the AWS service models of the services in SERVICES: one tool per API operation.

The rules (naming, schemas, risk classes and levels, annotations) are documented in
docs/catalog.md; this file is their implementation.
"""

import argparse
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile

BOTOCORE_VERSION = "1.44.8"

# botocore service directory -> (abbreviation used in tool names, display name).
SERVICES = {
    "eks": ("EKS", "Amazon EKS"),
    "omics": ("AHO", "AWS HealthOmics"),
    "iam": ("IAM", "AWS IAM"),
    "cloudformation": ("CFN", "AWS CloudFormation"),
    "logs": ("CWL", "Amazon CloudWatch Logs"),
    "cloudwatch": ("CW", "Amazon CloudWatch"),
    "ecr": ("ECR", "Amazon ECR"),
    "autoscaling": ("ASG", "Amazon EC2 Auto Scaling"),
    "elbv2": ("ELB", "Elastic Load Balancing v2"),
    "sts": ("STS", "AWS STS"),
    "kms": ("KMS", "AWS KMS"),
}

# Services whose changes are about identity, keys and credentials: one level riskier.
SENSITIVE_SERVICES = {"iam", "kms", "sts"}

# The leading verb of an operation name decides its class. Checked in order; the first
# table containing the verb wins. Unknown verbs are classed `write` (the cautious middle).
READ_VERBS = {
    "Describe", "Get", "List", "Search", "Lookup", "Query", "Filter", "Validate", "Estimate",
    "Simulate", "Preview", "Check", "Detect", "Test", "Download", "Decode", "Verify", "Can",
}
DESTRUCTIVE_VERBS = {
    "Delete", "Remove", "Terminate", "Deregister", "Detach", "Disassociate", "Purge", "Revoke",
    "Drop", "Schedule",  # KMS ScheduleKeyDeletion
}
EXECUTE_VERBS = {
    "Start", "Run", "Invoke", "Execute", "Cancel", "Stop", "Reboot", "Retry", "Resume",
    "Suspend", "Rollback", "Send", "Assume", "Decrypt", "Encrypt", "ReEncrypt", "Sign",
    "Signal", "Continue", "Rotate", "Enter", "Exit", "Set",
}
# Everything else that changes state: Create, Put, Update, Tag, Untag, Attach, Associate,
# Register, Add, Modify, Enable, Disable, Upload, Import, Export, Change, Accept, Reject,
# Upgrade, Replace, Reset, Record, Activate, Deactivate, Copy, Generate, Initiate, Complete,
# Publish, Batch*, ...
IDEMPOTENT_VERBS = {
    "Put", "Set", "Tag", "Untag", "Delete", "Remove", "Deregister", "Detach", "Disassociate",
    "Enable", "Disable", "Update", "Attach", "Associate",
}
# Destructive operations on these nouns (or in sensitive services) are critical.
CRITICAL_NOUNS = re.compile(r"^(Cluster|Stack|Role|User|Key|Repository|Policy|Workflow|ReferenceStore|SequenceStore|LogGroup)")

# Read operations that return data that may hold secrets: medium, not low.
SENSITIVE_READS = re.compile(r"(LogEvents|Query|Secret|Credential|AuthorizationToken|SessionToken|FederationToken|AccessKey|DataKey|ReadSet$|Object$)")

# How deep nested structures are expanded into JSON Schema; deeper members accept any value
# (the models are recursive in places, e.g. CloudWatch metric math).
MAX_DEPTH = 6

# The 16 real tools: our descriptions, risk classes and levels, and for the two tools whose
# effect depends on their `operation` argument, the class of each operation (the tool's own
# class is the worst case).
REAL_TOOLS = {
    "list_k8s_resources": ("List Kubernetes resources of one kind in an EKS cluster, optionally filtered by namespace and selectors.", "read", "low", None),
    "get_pod_logs": ("Read a pod's container logs from an EKS cluster (needs --allow-sensitive-data-access).", "read", "medium", None),
    "get_k8s_events": ("List the Kubernetes events about one object in an EKS cluster.", "read", "low", None),
    "list_api_versions": ("List the Kubernetes API versions an EKS cluster serves.", "read", "low", None),
    "manage_k8s_resource": ("Create, replace, patch, delete or read one Kubernetes resource in an EKS cluster, chosen by `operation`.", "destructive", "high",
                            {"read": "read", "create": "write", "replace": "write", "patch": "write", "delete": "destructive"}),
    "apply_yaml": ("Apply the Kubernetes manifests of a YAML file to an EKS cluster.", "write", "high", None),
    "generate_app_manifest": ("Write Kubernetes deployment and service manifests for a container image to a local directory.", "write", "low", None),
    "search_eks_troubleshoot_guide": ("Search the EKS troubleshooting guide.", "read", "low", None),
    "get_cloudwatch_logs": ("Query CloudWatch Logs for a cluster, pod or node (needs --allow-sensitive-data-access).", "read", "medium", None),
    "get_cloudwatch_metrics": ("Read CloudWatch metrics of a cluster's resources.", "read", "low", None),
    "manage_eks_stacks": ("Generate, deploy, describe or delete the CloudFormation stack of an EKS cluster, chosen by `operation`.", "destructive", "critical",
                          {"generate": "write", "deploy": "write", "describe": "read", "delete": "destructive"}),
    "add_inline_policy": ("Add a new inline IAM policy to a role.", "write", "high", None),
    "get_policies_for_role": ("List the managed and inline IAM policies of a role.", "read", "low", None),
    "get_eks_metrics_guidance": ("List the CloudWatch metrics worth watching for an EKS resource type.", "read", "low", None),
    "get_eks_vpc_config": ("Describe the VPC configuration of an EKS cluster.", "read", "low", None),
    "get_eks_insights": ("List or read the EKS upgrade and configuration insights of a cluster.", "read", "low", None),
}

# The default tool subset is the real tools plus the HealthOmics run-batch tools the seed's
# policy names; the catalogue crate selects them by this pattern.
HEALTHOMICS_RUN_BATCH = re.compile(r"RunBatch")


def botocore_data_dir():
    venv = os.path.join(tempfile.gettempdir(), f"tollgate-botocore-{BOTOCORE_VERSION}")
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(python):
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", f"botocore=={BOTOCORE_VERSION}"], check=True)
    out = subprocess.run(
        [python, "-c", "import botocore, os; print(botocore.__version__); print(os.path.join(os.path.dirname(botocore.__file__), 'data'))"],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    if out[0] != BOTOCORE_VERSION:
        sys.exit(f"expected botocore {BOTOCORE_VERSION} in {venv}, found {out[0]}")
    return out[1]


def load_model(data_dir, service):
    versions = sorted(os.listdir(os.path.join(data_dir, service)))
    base = os.path.join(data_dir, service, versions[-1], "service-2.json")
    if os.path.exists(base):
        with open(base) as f:
            return json.load(f)
    with gzip.open(base + ".gz") as f:
        return json.load(f)


def split_verb(operation):
    words = re.findall(r"[A-Z][a-z0-9]*|[a-z0-9]+", operation)
    # Acronym runs (e.g. "ID") come out as single letters; that does not matter for the verb.
    if not words:
        return operation, ""
    verb = words[0]
    if verb == "Batch" and len(words) > 1:
        verb = "Batch" + words[1]
    return verb, operation[len(verb):]


def base_verb(verb):
    return verb[len("Batch"):] if verb.startswith("Batch") and verb != "Batch" else verb


def classify(service, operation):
    verb, rest = split_verb(operation)
    v = base_verb(verb)
    if v in READ_VERBS:
        cls = "read"
    elif v in DESTRUCTIVE_VERBS:
        cls = "destructive"
    elif v in EXECUTE_VERBS:
        cls = "execute"
    else:
        cls = "write"
    sensitive = service in SENSITIVE_SERVICES
    if cls == "read":
        level = "medium" if (SENSITIVE_READS.search(operation) or sensitive) else "low"
    elif cls == "write":
        level = "high" if sensitive else "medium"
    elif cls == "execute":
        level = "critical" if sensitive and v in ("Assume",) else "high"
    else:
        level = "critical" if (sensitive or CRITICAL_NOUNS.match(rest)) else "high"
    return cls, level, v


def annotations(cls, verb, open_world):
    read_only = cls == "read"
    return {
        "readOnlyHint": read_only,
        # Per the MCP specification these two only mean something when the tool is not
        # read-only; for read tools they are false.
        "destructiveHint": cls == "destructive",
        "idempotentHint": read_only or verb in IDEMPOTENT_VERBS,
        "openWorldHint": open_world,
    }


class SchemaBuilder:
    def __init__(self, shapes):
        self.shapes = shapes

    def shape(self, name, depth):
        s = self.shapes[name]
        t = s["type"]
        if t == "structure":
            if depth >= MAX_DEPTH:
                return {"type": "object", "description": f"{name} (nested deeper than {MAX_DEPTH} levels: not expanded)"}
            props = {}
            for member, ref in sorted(s.get("members", {}).items()):
                props[member] = self.shape(ref["shape"], depth + 1)
            out = {"type": "object", "properties": props, "additionalProperties": False}
            req = sorted(s.get("required", []))
            if req:
                out["required"] = req
            if s.get("union"):
                out["maxProperties"] = 1
                out["minProperties"] = 1
            return out
        if t == "list":
            if depth >= MAX_DEPTH:
                return {"type": "array"}
            out = {"type": "array", "items": self.shape(s["member"]["shape"], depth + 1)}
            if "min" in s:
                out["minItems"] = int(s["min"])
            if "max" in s:
                out["maxItems"] = int(s["max"])
            return out
        if t == "map":
            if depth >= MAX_DEPTH:
                return {"type": "object"}
            out = {"type": "object", "additionalProperties": self.shape(s["value"]["shape"], depth + 1)}
            if "max" in s:
                out["maxProperties"] = int(s["max"])
            return out
        if t == "string":
            out = {"type": "string"}
            if "enum" in s:
                out["enum"] = list(s["enum"])
            if "min" in s:
                out["minLength"] = int(s["min"])
            if "max" in s:
                out["maxLength"] = int(s["max"])
            # botocore's `pattern`s are Java regular expressions; several do not compile as
            # ECMA-262 patterns, so they are left out rather than emitted half-right.
            return out
        if t in ("integer", "long"):
            out = {"type": "integer"}
            if "min" in s:
                out["minimum"] = s["min"]
            if "max" in s:
                out["maximum"] = s["max"]
            return out
        if t in ("float", "double"):
            out = {"type": "number"}
            if "min" in s:
                out["minimum"] = s["min"]
            if "max" in s:
                out["maximum"] = s["max"]
            return out
        if t == "boolean":
            return {"type": "boolean"}
        if t == "timestamp":
            return {"type": "string", "format": "date-time"}
        if t == "blob":
            return {"type": "string", "contentEncoding": "base64"}
        raise SystemExit(f"unknown shape type {t} for {name}")


def input_schema(model, op):
    ref = op.get("input")
    if not ref:
        return {"type": "object", "properties": {}, "additionalProperties": False}
    schema = SchemaBuilder(model["shapes"]).shape(ref["shape"], 0)
    return schema


def own_prose(schema):
    """Replaces the recording's placeholder descriptions and titles with our own: titles in
    pydantic's convention (the field name in title case), descriptions naming the field."""
    props = schema.get("properties", {})
    for name, prop in props.items():
        words = name.replace("_", " ")
        if "title" in prop:
            prop["title"] = words.title()
        if "description" in prop:
            prop["description"] = f"The {words}."
    if "title" in schema:
        schema["title"] = "Arguments"
    return schema


def real_tools(reference):
    with open(reference) as f:
        recorded = json.load(f)["tools"]
    names = [t["name"] for t in recorded]
    if sorted(names) != sorted(REAL_TOOLS):
        sys.exit(f"the reference lists {names}; REAL_TOOLS lists {sorted(REAL_TOOLS)}")
    tools = []
    for t in recorded:
        description, cls, level, ops = REAL_TOOLS[t["name"]]
        verb = "Delete" if cls == "destructive" else ("Get" if cls == "read" else "Create")
        tool = {
            "name": t["name"],
            "description": description,
            "input_schema": own_prose(t["inputSchema"]),
            "class": cls,
            "level": level,
            "annotations": annotations(cls, verb, True),
            "source": {"kind": "real"},
        }
        if ops:
            tool["operation_classes"] = ops
        tools.append(tool)
    return tools


def aws_tools(data_dir):
    tools = []
    for service, (abbr, display) in SERVICES.items():
        model = load_model(data_dir, service)
        for operation in sorted(model["operations"]):
            op = model["operations"][operation]
            if op.get("deprecated"):
                continue
            verb, rest = split_verb(operation)
            cls, level, base = classify(service, operation)
            tools.append({
                "name": f"{verb}{abbr}{rest}",
                "description": f"{display} {operation}: a {cls} operation, {level} risk.",
                "input_schema": input_schema(model, op),
                "class": cls,
                "level": level,
                "annotations": annotations(cls, base, True),
                "source": {"kind": "aws", "service": service, "abbreviation": abbr, "operation": operation},
            })
    tools.sort(key=lambda t: t["name"])
    return tools


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", default=os.path.join(root, "..", "shared", "reference", "eks-mcp-server-0.2.1.tools.json"))
    parser.add_argument("--botocore-data", help="botocore's data directory (default: install the pinned botocore in a venv)")
    parser.add_argument("--out", default=os.path.join(root, "crates", "catalog", "data", "catalog.json"))
    args = parser.parse_args()
    data_dir = args.botocore_data or botocore_data_dir()
    tools = real_tools(args.reference) + aws_tools(data_dir)
    names = [t["name"] for t in tools]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        sys.exit(f"duplicate tool names: {dupes}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("{\n")
        f.write(f'"botocore_version": {json.dumps(BOTOCORE_VERSION)},\n')
        f.write('"services": ' + json.dumps({k: v[0] for k, v in SERVICES.items()}, sort_keys=True) + ",\n")
        f.write('"tools": [\n')
        # One tool per line: reviewable diffs when the generator or botocore changes.
        f.write(",\n".join(json.dumps(t, sort_keys=True, separators=(",", ":")) for t in tools))
        f.write("\n]\n}\n")
    counts = {}
    for t in tools:
        counts[(t["class"], t["level"])] = counts.get((t["class"], t["level"]), 0) + 1
    print(f"wrote {len(tools)} tools to {os.path.relpath(args.out, root)} ({os.path.getsize(args.out)} bytes)")
    for key in sorted(counts):
        print(f"  {key[0]:<12} {key[1]:<9} {counts[key]}")


if __name__ == "__main__":
    main()
