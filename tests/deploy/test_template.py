"""sam/template.yaml: cfn-lint clean, the settings the design depends on, and least-privilege IAM.

cfn-lint validates resource properties, but not the values inside a SAM ``Events:`` block once they use
``!Ref`` (checked: a misspelt ``MaxRetryAttempts`` there passes), so the event-source settings are asserted
here, resolved the way the local poller resolves them (``!Ref Param`` -> the parameter's ``Default``).

The IAM test derives the actions the *shipped* code calls from its source (``ast`` over the import closure,
from grimp's graph, of each function's handler module: ``consumers.handler``, ``consumers.s3_handler``,
``consumers.http_handler``), maps each client method to its API name with botocore's own service model,
and compares with what that function's role grants. Actions Lambda itself needs on the function's behalf
(event-source mapping, on-failure destinations, logs, traces, KMS) are listed below, each with the page that
requires it; anything else granted fails the test.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consumers.core import limits
from consumers.core.config import HTTP_REQUIRED, S3_BATCH_REQUIRED, Settings
from consumers.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "sam" / "template.yaml"
SAMCONFIG = REPO / "sam" / "samconfig.toml"


def _load_package_module():
    spec = importlib.util.spec_from_file_location("sam_package", REPO / "sam" / "package.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


package = _load_package_module()


def resources_of(template: dict, type_: str) -> dict[str, dict]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == type_}


def default(template: dict, value: Any) -> Any:
    """A literal, or ``{"Ref": Param}`` resolved to the parameter's Default (what the poller does)."""
    if isinstance(value, dict) and set(value) == {"Ref"} and value["Ref"] in template.get("Parameters", {}):
        raw = template["Parameters"][value["Ref"]]["Default"]
        return int(raw) if template["Parameters"][value["Ref"]]["Type"] == "Number" else raw
    return value


def refs(value: Any) -> set[str]:
    """Logical ids and parameters a value points at (Ref, GetAtt, ${...} in Sub), through Fn::If branches."""
    out: set[str] = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "Ref":
                out.add(str(inner).split(".")[0])
            elif key == "Fn::GetAtt":
                out.add((inner[0] if isinstance(inner, list) else str(inner)).split(".")[0])
            elif key == "Fn::Sub":
                text, variables = (inner, {}) if isinstance(inner, str) else (inner[0], inner[1])
                out |= {m.split(".")[0] for m in re.findall(r"\$\{([^}!]+)\}", text)} - set(variables)
                out |= refs(variables)
            elif key == "Fn::If":
                out |= refs(inner[1]) | refs(inner[2])
            else:
                out |= refs(inner)
    elif isinstance(value, list):
        for inner in value:
            out |= refs(inner)
    return out - {
        "AWS::NoValue",
        "AWS::Partition",
        "AWS::Region",
        "AWS::AccountId",
        "AWS::StackName",
        "AWS::URLSuffix",
    }


# Each function: its handler module (whose import closure is its code), its role and its log group.
FUNCTIONS = {
    "ScoringFunction": {
        "module": "consumers.handler",
        "role": "ScoringFunctionRole",
        "logs": "ScoringLogGroup",
    },
    "BatchScoringFunction": {
        "module": "consumers.s3_handler",
        "role": "BatchFunctionRole",
        "logs": "BatchLogGroup",
    },
    "HttpScoringFunction": {
        "module": "consumers.http_handler",
        "role": "HttpFunctionRole",
        "logs": "HttpLogGroup",
    },
    "CollisionFunction": {
        "module": "consumers.collision_handler",
        "role": "CollisionFunctionRole",
        "logs": "CollisionLogGroup",
        "calls_aws": False,  # it reads only the stream records Lambda hands it
    },
    "RangeWorkerFunction": {
        "module": "consumers.s3_worker",
        "role": "RangeWorkerRole",
        "logs": "RangeWorkerLogGroup",
    },
}


@pytest.fixture(scope="module")
def esm(template, function) -> dict:
    events = function["Properties"]["Events"]
    assert set(events) == {"Stream"}, "one event named Stream (the local poller looks it up by name)"
    assert events["Stream"]["Type"] == "Kinesis"
    return {k: default(template, v) for k, v in events["Stream"]["Properties"].items()}


# ------------------------------------------------------------------------------------------------ lint


def test_cfn_lint_reports_nothing():
    from cfnlint.api import ManualArgs, lint_file

    matches = lint_file(TEMPLATE, config=ManualArgs(regions=["us-east-1"]))
    assert [f"{m.rule.id} line {m.linenumber}: {m.message}" for m in matches] == []


def test_samconfig_has_dev_and_prod_stages():
    import tomllib

    config = tomllib.loads(SAMCONFIG.read_text())
    for stage in ("dev", "prod"):
        deploy = config[stage]["deploy"]["parameters"]
        assert deploy["stack_name"].endswith(stage)
        assert deploy["capabilities"] == "CAPABILITY_IAM"
        assert deploy["resolve_s3"] is True
    prod = config["prod"]["deploy"]["parameters"]["parameter_overrides"]
    assert "TableDeletionProtection=true" in prod


# ------------------------------------------------------------------------------------------------ function


def test_function_runtime_code_and_tracing(template, function):
    props = function["Properties"]
    assert props["Runtime"] == "python3.12"
    assert props["Handler"] == "consumers.handler.lambda_handler"
    assert props["Tracing"] == "Active"
    assert default(template, props["Architectures"][0]) == "x86_64"
    assert set(template["Parameters"]["Architecture"]["AllowedValues"]) == set(package.PLATFORMS)
    # The code is what `make package` builds: the template points at package.py's default output and
    # tells `sam build` to take it as built (tests/deploy/test_sam_build.py).
    code_dir = (TEMPLATE.parent / props["CodeUri"]).resolve()
    assert code_dir == package.DEFAULT_OUT.resolve()
    assert function["Metadata"]["BuildMethod"] == "makefile"
    assert props["AutoPublishAlias"] == "live"


def test_memory_and_timeout_defaults(template, function):
    props = function["Properties"]
    assert default(template, props["MemorySize"]) == 1769  # one full vCPU
    timeout = default(template, props["Timeout"])
    assert 30 <= timeout <= 120
    # the handler keeps TIME_RESERVE_MS back from the deadline to answer with batchItemFailures
    reserve_ms = {f.name: f.default for f in dataclasses.fields(Settings)}["time_reserve_ms"]
    assert reserve_ms / 1000 < timeout / 10


def test_reserved_concurrency_is_optional(template, function):
    assert function["Properties"]["ReservedConcurrentExecutions"] == {
        "Fn::If": ["HasReservedConcurrency", {"Ref": "ReservedConcurrency"}, {"Ref": "AWS::NoValue"}]
    }
    assert template["Parameters"]["ReservedConcurrency"]["Default"] == -1


def test_environment_builds_valid_settings(template, function):
    """Every variable Settings.from_env requires is set by the template, and the defaults are valid."""
    variables = function["Properties"]["Environment"]["Variables"]
    assert variables["SCORES_TABLE"] == {"Ref": "ScoresTable"}
    assert variables["DLQ_URL"] == {"Ref": "QuarantineQueue"}
    assert variables["MODEL_URI"] == {"Ref": "ModelUri"}
    for name in ("POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE", "POWERTOOLS_LOG_LEVEL"):
        assert name in variables
    env = {}
    for name, value in variables.items():
        while isinstance(value, dict) and "Fn::If" in value:
            value = value["Fn::If"][2]  # the branch of the defaults (every optional feature off)
        resolved = default(template, value)
        env[name] = str(resolved) if not isinstance(resolved, dict) else f"<{name}>"
    settings = Settings.from_env(env)
    assert settings.model_uri == "model/bundles/default"
    assert settings.model_cache_dir.startswith("/tmp/")  # the only writable path on Lambda
    with pytest.raises(ConfigError):
        Settings.from_env({k: v for k, v in env.items() if k != "SCORES_TABLE"})


def test_log_group_is_the_functions_with_retention(template, function):
    group = template["Resources"]["ScoringLogGroup"]["Properties"]
    assert function["Properties"]["LoggingConfig"]["LogGroup"] == {"Ref": "ScoringLogGroup"}
    assert group["LogGroupName"] == {"Fn::Sub": "/aws/lambda/${AWS::StackName}-scoring"}
    assert function["Properties"]["FunctionName"] == {"Fn::Sub": "${AWS::StackName}-scoring"}
    assert default(template, group["RetentionInDays"]) == 30


# ------------------------------------------------------------------------------------------- stream + mapping


def test_event_source_mapping_settings(template, esm):
    assert esm["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert esm["BatchSize"] == limits.KINESIS_ESM_MAX_BATCH_SIZE  # the 6 MB payload caps it further
    assert 1 <= esm["MaximumBatchingWindowInSeconds"] <= 5
    assert esm["StartingPosition"] in ("LATEST", "TRIM_HORIZON")
    assert esm["BisectBatchOnFunctionError"] is True
    assert 0 < esm["MaximumRetryAttempts"] <= 10  # finite: -1 retries until the record expires
    assert 3600 <= esm["MaximumRecordAgeInSeconds"] <= 86400
    assert esm["ParallelizationFactor"] == 1
    assert esm["DestinationConfig"] == {"OnFailure": {"Destination": {"Fn::GetAtt": ["FailureQueue", "Arn"]}}}
    # a discarded batch can be replayed from the stream only while its records are still there
    retention_s = (
        default(template, template["Resources"]["EventStream"]["Properties"]["RetentionPeriodHours"]) * 3600
    )
    assert esm["MaximumRecordAgeInSeconds"] <= retention_s / 2


def test_event_source_parameters_allow_only_valid_values(template):
    p = template["Parameters"]
    assert p["BatchSize"]["MaxValue"] == limits.KINESIS_ESM_MAX_BATCH_SIZE
    assert p["MaximumBatchingWindowInSeconds"]["MaxValue"] == limits.KINESIS_ESM_MAX_BATCHING_WINDOW_S
    assert p["ParallelizationFactor"]["MaxValue"] == limits.KINESIS_ESM_MAX_PARALLELIZATION_FACTOR
    assert p["MaximumRetryAttempts"]["MaxValue"] == limits.KINESIS_ESM_MAX_RETRY_ATTEMPTS
    assert p["MaximumRetryAttempts"]["MinValue"] >= 0, "-1 (infinite) must not be allowed"
    assert p["MaximumRecordAgeInSeconds"]["MinValue"] > 0, "-1 (infinite) must not be allowed"
    assert set(p["StartingPosition"]["AllowedValues"]) <= {"LATEST", "TRIM_HORIZON"}


def test_mapping_reads_the_stream_or_the_enhanced_fan_out_consumer(function):
    stream = function["Properties"]["Events"]["Stream"]["Properties"]["Stream"]
    assert stream == {
        "Fn::If": [
            "UseEnhancedFanOut",
            {"Fn::GetAtt": ["StreamConsumer", "ConsumerARN"]},
            {
                "Fn::If": [
                    "CreateStream",
                    {"Fn::GetAtt": ["EventStream", "Arn"]},
                    {"Ref": "ExistingStreamArn"},
                ]
            },
        ]
    }


def test_stream_mode_encryption_and_existing_stream(template):
    stream = template["Resources"]["EventStream"]
    assert stream["Condition"] == "CreateStream"
    assert template["Conditions"]["CreateStream"] == {"Fn::Equals": [{"Ref": "ExistingStreamArn"}, ""]}
    props = stream["Properties"]
    assert props["StreamModeDetails"] == {"StreamMode": {"Ref": "StreamMode"}}
    assert set(template["Parameters"]["StreamMode"]["AllowedValues"]) == {"ON_DEMAND", "PROVISIONED"}
    assert props["ShardCount"] == {
        "Fn::If": ["CreateProvisionedStream", {"Ref": "ShardCount"}, {"Ref": "AWS::NoValue"}]
    }
    assert props["StreamEncryption"]["EncryptionType"] == "KMS"
    assert props["StreamEncryption"]["KeyId"] == {
        "Fn::If": ["HasKmsKey", {"Ref": "KmsKeyArn"}, "alias/aws/kinesis"]
    }
    consumer = template["Resources"]["StreamConsumer"]
    assert consumer["Type"] == "AWS::Kinesis::StreamConsumer" and consumer["Condition"] == "UseEnhancedFanOut"
    assert template["Parameters"]["EnhancedFanOut"]["Default"] == "false"


# -------------------------------------------------------------------------------------- table, queues, bucket


def test_scores_table(template):
    table = template["Resources"]["ScoresTable"]
    props = table["Properties"]
    assert default(template, props["BillingMode"]) == "PAY_PER_REQUEST"  # on demand unless asked
    assert props["KeySchema"] == [{"AttributeName": "event_id", "KeyType": "HASH"}]
    assert props["AttributeDefinitions"] == [{"AttributeName": "event_id", "AttributeType": "S"}]
    assert props["TimeToLiveSpecification"] == {"AttributeName": "ttl", "Enabled": True}
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["SSESpecification"]["SSEEnabled"] is True and props["SSESpecification"]["SSEType"] == "KMS"
    assert table["DeletionPolicy"] == "Retain" and table["UpdateReplacePolicy"] == "Retain"
    # the writer's attributes (consumers/aws/dynamodb.py) use the key and ttl names the table declares
    sink = ast.parse((REPO / "consumers" / "aws" / "dynamodb.py").read_text())
    strings = {n.value for n in ast.walk(sink) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert {"event_id", "ttl"} <= strings


def test_provisioned_scores_scale_writes_by_target_tracking(template):
    res = template["Resources"]
    assert template["Parameters"]["ScoresBillingMode"]["AllowedValues"] == ["PAY_PER_REQUEST", "PROVISIONED"]
    target, policy = res["ScoresWriteScaling"], res["ScoresWriteScalingPolicy"]
    assert target["Condition"] == policy["Condition"] == "ProvisionedScores"
    assert target["Properties"]["ScalableDimension"] == "dynamodb:table:WriteCapacityUnits"
    assert target["Properties"]["ResourceId"] == {"Fn::Sub": "table/${ScoresTable}"}
    tracking = policy["Properties"]["TargetTrackingScalingPolicyConfiguration"]
    metric = tracking["PredefinedMetricSpecification"]["PredefinedMetricType"]
    assert metric == "DynamoDBWriteCapacityUtilization"


def test_alerts_bus_rule_queue_and_dlq(template):
    res = template["Resources"]
    rule = res["AlertRule"]["Properties"]
    assert rule["EventBusName"] == {"Ref": "AlertBus"}
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["AlertQueue", "Arn"]}
    assert target["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": ["AlertQueueDlq", "Arn"]}
    # the rule matches what the code sends (consumers/core/alerts.py)
    from consumers.core.alerts import DEFAULT_SOURCE, DETAIL_TYPE

    assert rule["EventPattern"] == {"source": [DEFAULT_SOURCE], "detail-type": [DETAIL_TYPE]}
    (statement,) = res["AlertQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["AlertRule", "Arn"]}}}
    # the local mode builds the same wiring (sam/local/resources.py)
    from sam.local.resources import ALERT_PATTERN

    assert rule["EventPattern"] == ALERT_PATTERN
    # and actionable writes cannot be deployed without the archive that keeps the other scores
    rule_ = template["Rules"]["ActionableWritesNeedTheArchive"]
    assert rule_["Assertions"][0]["Assert"] == {"Fn::Equals": [{"Ref": "ArchiveScores"}, "true"]}


def test_queues_are_encrypted_and_keep_messages_14_days(template):
    for name in ("QuarantineQueue", "FailureQueue", "BatchFailureQueue", "RangeDeadLetterQueue"):
        props = template["Resources"][name]["Properties"]
        assert props["KmsMasterKeyId"] == {"Fn::If": ["HasKmsKey", {"Ref": "KmsKeyArn"}, "alias/aws/sqs"]}
        assert props["MessageRetentionPeriod"] == 14 * 24 * 3600
        assert "RedrivePolicy" not in props, "nothing consumes these queues automatically"
        assert "FifoQueue" not in props  # SendMessageBatch of 10 without group ids


def test_model_bucket_or_existing_bucket(template):
    bucket = template["Resources"]["ModelBucket"]
    assert bucket["Condition"] == "CreateModelBucket"
    props = bucket["Properties"]
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}  # rollback of an overwritten bundle
    assert props["PublicAccessBlockConfiguration"] == dict.fromkeys(
        ["BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"], True
    )
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert {"ModelBucketName", "ModelPrefix", "ModelUri"} <= set(template["Parameters"])


# -------------------------------------------------------------------------------------------- alarms, outputs


def test_alarms(template):
    alarms = resources_of(template, "AWS::CloudWatch::Alarm")
    watched = {
        (
            default(template, spec["Namespace"]),
            spec["MetricName"],
            tuple(sorted(refs(spec["Dimensions"]))),
        )
        for a in alarms.values()
        for spec in (
            [a["Properties"]]
            if "MetricName" in a["Properties"]
            else [m["MetricStat"]["Metric"] for m in a["Properties"]["Metrics"] if "MetricStat" in m]
        )
    }
    assert watched == {
        ("AWS/Lambda", "IteratorAge", ("ScoringFunction",)),
        ("AWS/Lambda", "Errors", ("ScoringFunction",)),
        ("AWS/Lambda", "Invocations", ("ScoringFunction",)),  # ErrorRateAlarm: Errors / Invocations
        ("AWS/SQS", "ApproximateAgeOfOldestMessage", ("FailureQueue",)),
        ("AWS/SQS", "ApproximateAgeOfOldestMessage", ("QuarantineQueue",)),
        ("EventScoring", "DriftPSIMax", ()),  # the drift monitor's largest PSI of a window
        ("AWS/Lambda", "Throttles", ("ScoringFunction",)),
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible", ("QuarantineQueue",)),
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible", ("FailureQueue",)),
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible", ("AlertQueueDlq",)),
        ("AWS/Lambda", "Errors", ("BatchScoringFunction",)),
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible", ("BatchFailureQueue",)),
        ("AWS/SQS", "ApproximateAgeOfOldestMessage", ("RangeQueue",)),
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible", ("RangeDeadLetterQueue",)),
        ("AWS/ApiGateway", "5xx", ("ScoringHttpApi",)),
        # the code's own EMF metrics (consumers/bootstrap.py report_collisions, consumers/telemetry.py
        # report_rollout), dimension service only
        ("EventScoring", "EventIdCollisions", ()),
        ("EventScoring", "ModelGuardrailTripped", ()),
        ("EventScoring", "ModelRefreshRefused", ()),
    }
    topic = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}
    for name, alarm in alarms.items():
        assert alarm["Properties"]["AlarmActions"] == topic, name
        assert alarm["Properties"]["OKActions"] == topic, name
        assert alarm["Properties"]["TreatMissingData"] == "notBreaching", name
    assert template["Parameters"]["AlarmTopicArn"]["Default"] == ""


def test_outputs_name_everything_a_user_needs(template):
    outputs = template["Outputs"]
    assert {
        "FunctionName",
        "FunctionArn",
        "FunctionAliasArn",
        "EventSourceMappingId",
        "LogGroupName",
        "StreamName",
        "StreamArn",
        "StreamConsumerArn",
        "ScoresTableName",
        "ScoresTableArn",
        "QuarantineQueueUrl",
        "QuarantineQueueArn",
        "FailureQueueUrl",
        "FailureQueueArn",
        "ModelBucketName",
        "ModelPrefix",
        "ModelUri",
        "RoleArn",
        "BatchFunctionName",
        "BatchBucketName",
        "BatchInputPrefix",
        "BatchOutputPrefix",
        "BatchFailureQueueUrl",
        "RangeQueueUrl",
        "RangeDeadLetterQueueUrl",
        "JobsTableName",
        "RangeWorkerFunctionName",
        "HttpFunctionName",
        "HttpApiId",
        "HttpApiUrl",
    } <= set(outputs)
    # SAM-generated resources: <Function>.Alias / .Version and the mapping <Function><EventName>
    generated = {"ScoringFunctionStream"}
    for name, output in outputs.items():
        for target in refs(output["Value"]):
            assert (
                target in template["Resources"] or target in template["Parameters"] or target in generated
            ), (name, target)
        value = output["Value"]
        if "Fn::If" not in value:  # a conditional resource outside an Fn::If needs the output's Condition
            for target in refs(value) & set(template["Resources"]):
                condition = template["Resources"][target].get("Condition")
                assert output.get("Condition") == condition, f"output {name} needs Condition {condition}"


# ------------------------------------------------------------------------------------------------ IAM

# IAM authorises some API calls under another action's name. Each entry: botocore's API name -> IAM action.
# SQS: "SendMessageBatch ... permissions are the same as for SendMessage" (also Delete/ChangeVisibility):
#   https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-api-permissions-reference.html
# S3: HeadObject needs s3:GetObject, ListObjectsV2 needs s3:ListBucket:
#   https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadObject.html and .../API_ListObjectsV2.html
# S3 multipart uploads: CreateMultipartUpload, UploadPart and CompleteMultipartUpload are authorised as
#   s3:PutObject; AbortMultipartUpload is its own action:
#   https://docs.aws.amazon.com/AmazonS3/latest/userguide/mpuoverview.html#mpuAndPermissions
IAM_ALIASES = {
    "sqs:SendMessageBatch": "sqs:SendMessage",
    "s3:CreateMultipartUpload": "s3:PutObject",
    "s3:UploadPart": "s3:PutObject",
    "s3:CompleteMultipartUpload": "s3:PutObject",
    "sqs:DeleteMessageBatch": "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
    "s3:HeadObject": "s3:GetObject",
    "s3:ListObjectsV2": "s3:ListBucket",
    # UploadPartCopy needs s3:PutObject on the destination (and s3:GetObject on the source, granted apart):
    #   https://docs.aws.amazon.com/AmazonS3/latest/API/API_UploadPartCopy.html
    "s3:UploadPartCopy": "s3:PutObject",
    # DeleteObjects is authorised per key as s3:DeleteObject:
    #   https://docs.aws.amazon.com/AmazonS3/latest/API/API_DeleteObjects.html
    "s3:DeleteObjects": "s3:DeleteObject",
}

# What Lambda does with the function's role without the code calling it, and on which resources.
PLATFORM_ACTIONS = {
    # Event-source mapping polling the stream:
    # https://docs.aws.amazon.com/lambda/latest/dg/services-kinesis-create.html
    "kinesis:DescribeStream": {"EventStream", "ExistingStreamArn"},
    "kinesis:DescribeStreamSummary": {"EventStream", "ExistingStreamArn"},
    "kinesis:GetRecords": {"EventStream", "ExistingStreamArn"},
    "kinesis:GetShardIterator": {"EventStream", "ExistingStreamArn"},
    "kinesis:ListShards": {"EventStream", "ExistingStreamArn"},
    # ... through an enhanced fan-out consumer (same page; SubscribeToShard's resource is the consumer)
    "kinesis:SubscribeToShard": {"StreamConsumer"},
    "kinesis:DescribeStreamConsumer": {"StreamConsumer"},
    # On-failure destination: https://docs.aws.amazon.com/lambda/latest/dg/kinesis-on-failure-destination.html
    "sqs:SendMessage": {"FailureQueue"},
    # Customer managed key: consumers need kms:Decrypt
    # (https://docs.aws.amazon.com/streams/latest/dev/permissions-user-key-KMS.html), SQS producers
    # kms:GenerateDataKey + kms:Decrypt
    # (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-key-management.html)
    "kms:Decrypt": {"KmsKeyArn"},
    "kms:GenerateDataKey": {"KmsKeyArn"},
    # The runtime's log and trace writers: https://docs.aws.amazon.com/lambda/latest/dg/monitoring-cloudwatchlogs.html
    # and https://docs.aws.amazon.com/lambda/latest/dg/services-xray.html
    # (X-Ray has no resource-level permissions)
    "logs:CreateLogStream": {"ScoringLogGroup"},
    "logs:PutLogEvents": {"ScoringLogGroup"},
    "xray:PutTraceSegments": {"*"},
    "xray:PutTelemetryRecords": {"*"},
    # In a VPC (FeatureDatabase / FeatureCache), Lambda manages the function's network interfaces with its
    # role; these EC2 actions take no resource-level permissions:
    # https://docs.aws.amazon.com/lambda/latest/dg/configuration-vpc.html#configuration-vpc-permissions
    **dict.fromkeys(
        VPC_ACTIONS := tuple(
            f"ec2:{a}"
            for a in (
                "CreateNetworkInterface",
                "DescribeNetworkInterfaces",
                "DeleteNetworkInterface",
                "AssignPrivateIpAddresses",
                "UnassignPrivateIpAddresses",
            )
        ),
        {"*"},
    ),
}

# Where the code's calls land: the resource behind the variable the handler builds each client's target from.
CODE_RESOURCES = {
    "dynamodb": {"ScoresTable"},
    "sqs": {"QuarantineQueue"},
    "s3": {"ModelBucket", "ModelBucketName", "ModelPrefix"},
    "s3:PutObject": {"DeadLetterOverflowBucket", "ScoresArchiveBucket"},  # dead-letter overflow, the archive
    "events": {"AlertBus"},
}

_LAMBDA_RUNTIME = {"xray:PutTraceSegments": {"*"}, "xray:PutTelemetryRecords": {"*"}}
_MODEL = {"ModelBucket", "ModelBucketName", "ModelPrefix"}
_JOBS = {f"dynamodb:{a}": {"JobsTable"} for a in ("GetItem", "PutItem", "UpdateItem", "Query")}
# The same, per function; an action's entry wins over its service's.
PLATFORM_ACTIONS_BY_FUNCTION = {
    "ScoringFunction": PLATFORM_ACTIONS,
    "BatchScoringFunction": {
        # Asynchronous invocation (S3) on-failure destination, and its queue's customer managed key:
        # https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-retain-records.html
        "sqs:SendMessage": {"BatchFailureQueue"},
        "kms:Decrypt": {"KmsKeyArn"},
        "kms:GenerateDataKey": {"KmsKeyArn"},
        "logs:CreateLogStream": {"BatchLogGroup"},
        "logs:PutLogEvents": {"BatchLogGroup"},
        **_LAMBDA_RUNTIME,
    },
    "HttpScoringFunction": {
        "logs:CreateLogStream": {"HttpLogGroup"},
        "logs:PutLogEvents": {"HttpLogGroup"},
        **_LAMBDA_RUNTIME,
    },
    "RangeWorkerFunction": {
        # The SQS event-source mapping: https://docs.aws.amazon.com/lambda/latest/dg/with-sqs.html
        **{f"sqs:{a}": {"RangeQueue"} for a in ("ReceiveMessage", "DeleteMessage", "GetQueueAttributes")},
        # Customer managed key of the queues: https://docs.aws.amazon.com/lambda/latest/dg/with-sqs.html
        "kms:Decrypt": {"KmsKeyArn"},
        "kms:GenerateDataKey": {"KmsKeyArn"},
        "logs:CreateLogStream": {"RangeWorkerLogGroup"},
        "logs:PutLogEvents": {"RangeWorkerLogGroup"},
        **_LAMBDA_RUNTIME,
    },
    "CollisionFunction": {
        # The mapping reading the table's stream: https://docs.aws.amazon.com/lambda/latest/dg/with-ddb.html
        **{f"dynamodb:{a}": {"ScoresTable"} for a in ("DescribeStream", "GetRecords", "GetShardIterator")},
        "dynamodb:ListStreams": {"ScoresTable"},
        "logs:CreateLogStream": {"CollisionLogGroup"},
        "logs:PutLogEvents": {"CollisionLogGroup"},
        **_LAMBDA_RUNTIME,
    },
}
CODE_RESOURCES_BY_FUNCTION = {
    "ScoringFunction": {
        **CODE_RESOURCES,
        "dynamodb:BatchGetItem": {"FeatureTableName"},
        # consumers/aws/db_credentials.py: the login secret, or an IAM token for the proxy's user
        "secretsmanager:GetSecretValue": {"FeatureDbSecretStore", "ExistingFeatureDbSecretName"},
        "rds-db:connect": {"FeatureDbProxy", "ExistingFeatureDbProxyResourceId", "FeatureDbUser"},
    },
    "BatchScoringFunction": {
        "dynamodb:BatchWriteItem": {"ScoresTable"},
        "dynamodb:BatchGetItem": {"FeatureTableName"},
        **_JOBS,
        "s3:GetObject": _MODEL | {"BatchBucket", "BatchInputPrefix"},
        "s3:PutObject": {"BatchBucket", "BatchOutputPrefix", "BatchWorkPrefix"},  # + manifests
        "s3:AbortMultipartUpload": {"BatchBucket", "BatchOutputPrefix"},
        "sqs:SendMessage": {"RangeQueue"},
    },
    "RangeWorkerFunction": {
        "dynamodb:BatchWriteItem": {"ScoresTable"},
        "dynamodb:BatchGetItem": {"FeatureTableName"},
        **_JOBS,
        "s3:GetObject": _MODEL | {"BatchBucket", "BatchInputPrefix", "BatchWorkPrefix"},
        "s3:PutObject": {"BatchBucket", "BatchOutputPrefix", "BatchWorkPrefix"},
        "s3:AbortMultipartUpload": {"BatchBucket", "BatchOutputPrefix", "BatchWorkPrefix"},
        "s3:DeleteObject": {"BatchBucket", "BatchWorkPrefix"},
        "sqs:SendMessage": {"RangeQueue", "RangeDeadLetterQueue"},  # a scan handed on, dead letters
        "sqs:ChangeMessageVisibility": {"RangeQueue"},
    },
    "HttpScoringFunction": {
        "dynamodb:BatchWriteItem": {"HttpScoresTable"},  # its own key space, never the stream's table
        "dynamodb:BatchGetItem": {"FeatureTableName"},
        "s3:GetObject": _MODEL,
    },
    "CollisionFunction": {},
}


def code_resources(function: str, action: str) -> set[str]:
    spec = CODE_RESOURCES_BY_FUNCTION[function]
    return set(spec.get(action, spec.get(action.split(":")[0], set())))


CLIENT_FACTORIES = {"client", "create_client", "resource"}
# Client methods that sign a request locally instead of calling an API, and the IAM action the signed request
# needs: an RDS IAM authentication token (https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/UsingWithRDS.IAMDBAuth.IAMPolicy.html)
PRESIGNED = {"generate_db_auth_token": ("rds", "rds-db:connect")}
NOT_CLIENTS = {"socket", "ssl", "os", "shutil", "gzip", "zlib", "json", "orjson"}  # modules, not clients


def shipped_sources(module: str = "consumers.handler") -> dict[str, Path]:
    """The code one function runs: its handler module and everything it imports, directly or not (grimp's
    import graph of consumers/, imports inside functions included)."""
    import grimp

    graph = grimp.build_graph("consumers", cache_dir=None)  # a cache can lag behind files changed this second
    names = {module} | graph.find_upstream_modules(module)
    files = {}
    for name in names:
        base = REPO.joinpath(*name.split("."))
        files[name] = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
    return files


def code_actions(sources: dict[str, Path]) -> tuple[dict[str, set[str]], set[str]]:
    """IAM actions of the AWS API calls in ``sources``: {action: {"file:line", ...}} and the client services.

    A client's service is identified from ``<x>.client("svc")`` (or ``create_client`` / ``resource``) and
    from ``client(session, "svc", ...)`` (``consumers.aws.clients``);
    calls ``<obj>.<method>(...)`` whose method is an operation of one of those services (botocore's
    ``method_to_api_mapping``) become ``<signing name>:<Operation>``; so do JSON-protocol targets written
    out as strings (``"DynamoDB_20120810.BatchWriteItem"``), for a writer that bypasses the client.
    """
    import boto3

    trees = {name: ast.parse(path.read_text(), filename=str(path)) for name, path in sources.items()}
    services: set[str] = set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in CLIENT_FACTORIES
            ):
                arg = (
                    node.args[0]
                    if node.args
                    else next((k.value for k in node.keywords if k.arg == "service_name"), None)
                )
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    services.add(arg.value)
            elif (  # consumers.aws.clients.client(session, "svc", config): the deadline-bound factory
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "client"
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)
            ):
                services.add(node.args[1].value)
    models = {svc: boto3.client(svc, region_name="us-east-1").meta for svc in services}
    by_target = {m.service_model.metadata.get("targetPrefix"): svc for svc, m in models.items()}
    found: dict[str, set[str]] = {}

    def add(svc: str, operation: str, where: str) -> None:
        action = f"{models[svc].service_model.signing_name}:{operation}"
        found.setdefault(IAM_ALIASES.get(action, action), set()).add(where)

    for name, tree in trees.items():
        where_file = str(sources[name].relative_to(REPO))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                if node.func.attr in PRESIGNED and PRESIGNED[node.func.attr][0] in models:
                    action = PRESIGNED[node.func.attr][1]
                    found.setdefault(action, set()).add(f"{where_file}:{node.lineno}")
                    continue
                target = node.func.value
                if isinstance(target, ast.Name) and target.id in NOT_CLIENTS:
                    continue  # socket.create_connection is not EventBridge's CreateConnection
                for svc, meta in models.items():
                    if node.func.attr in meta.method_to_api_mapping:
                        add(svc, meta.method_to_api_mapping[node.func.attr], f"{where_file}:{node.lineno}")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                m = re.fullmatch(r"([A-Za-z0-9_]+)\.([A-Z][A-Za-z0-9]+)", node.value)
                if m and m.group(1) in by_target:
                    add(by_target[m.group(1)], m.group(2), f"{where_file}:{node.lineno}")
    return found, services


def role_statements(template: dict, role_name: str = "ScoringFunctionRole") -> Iterator[dict]:
    """Every Allow statement of a function's role -- its inline policies and the AWS::IAM::Policy resources
    attached to it -- both branches of each Fn::If (all options on)."""
    role = template["Resources"][role_name]["Properties"]
    policies = list(role.get("Policies", []))
    policies += [
        p["Properties"]
        for p in resources_of(template, "AWS::IAM::Policy").values()
        if {"Ref": role_name} in p["Properties"].get("Roles", [])
    ]
    for policy in policies:
        for statement in policy["PolicyDocument"]["Statement"]:
            if "Fn::If" in statement:
                branches = [b for b in statement["Fn::If"][1:] if b != {"Ref": "AWS::NoValue"}]
            else:
                branches = [statement]
            yield from branches


def actions_of(statement: dict) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)


def resource_targets(statement: dict) -> set[str]:
    resource = statement["Resource"]
    return {"*"} if resource == "*" else refs(resource)


_DERIVED: dict[str, tuple[dict[str, set[str]], set[str]]] = {}


def derived_for(function: str) -> tuple[dict[str, set[str]], set[str]]:
    if function not in _DERIVED:
        _DERIVED[function] = code_actions(shipped_sources(FUNCTIONS[function]["module"]))
    return _DERIVED[function]


@pytest.fixture(scope="module")
def derived():
    return derived_for("ScoringFunction")


@pytest.mark.parametrize("function_name", sorted(FUNCTIONS))
def test_code_actions_are_derived_from_every_client_the_code_builds(function_name):
    actions, services = derived_for(function_name)
    if not FUNCTIONS[function_name].get("calls_aws", True):
        assert not services and not actions, f"{function_name} was declared to call no AWS API"
        return
    assert services, "no boto3 client construction found in the shipped code"
    for svc in services:
        presigned = {action for service, action in PRESIGNED.values() if service == svc}
        assert any(a.startswith(f"{svc}:") or a in presigned for a in actions), (
            f"the code builds a {svc} client but no call on it was recognised: the derivation missed it"
        )


@pytest.mark.parametrize("function_name", sorted(FUNCTIONS))
def test_role_grants_exactly_the_code_actions_plus_what_lambda_needs(template, function_name):
    actions, _ = derived_for(function_name)
    platform = PLATFORM_ACTIONS_BY_FUNCTION[function_name]
    granted: dict[str, set[str]] = {}
    for statement in role_statements(template, FUNCTIONS[function_name]["role"]):
        assert statement["Effect"] == "Allow"
        assert "NotAction" not in statement and "NotResource" not in statement
        for action in actions_of(statement):
            assert "*" not in action, f"wildcard action {action}"
            granted.setdefault(action, set()).update(resource_targets(statement))

    missing = {a: sorted(w) for a, w in actions.items() if a not in granted}
    assert not missing, f"the code calls these but the role does not grant them: {missing}"
    extra = sorted(set(granted) - set(actions) - set(platform))
    assert not extra, f"the role grants actions neither the code nor Lambda uses: {extra}"

    for action, targets in granted.items():
        allowed = set(platform.get(action, set()))
        if action in actions:
            allowed |= code_resources(function_name, action)
        assert targets <= allowed, (
            f"{action} is granted on {sorted(targets - allowed)}, expected only {sorted(allowed)}"
        )
        if action in actions:
            assert targets & code_resources(function_name, action), (
                f"{action} is not granted on {code_resources(function_name, action)}"
            )


def test_only_xray_is_granted_on_every_resource(template):
    for spec in FUNCTIONS.values():
        for statement in role_statements(template, spec["role"]):
            if statement["Resource"] == "*":
                assert all(a.startswith("xray:") or a in VPC_ACTIONS for a in actions_of(statement)), (
                    statement
                )


def test_model_reads_are_limited_to_the_model_prefix(template):
    (statement,) = [s for s in role_statements(template) if "s3:GetObject" in actions_of(s)]
    text, variables = statement["Resource"]["Fn::Sub"]
    assert text == "arn:${AWS::Partition}:s3:::${Bucket}/${ModelPrefix}*"
    assert variables["Bucket"] == {
        "Fn::If": ["CreateModelBucket", {"Ref": "ModelBucket"}, {"Ref": "ModelBucketName"}]
    }


@pytest.mark.parametrize("function_name", sorted(FUNCTIONS))
def test_function_uses_the_written_role_and_no_generated_policies(template, function_name):
    role_name = FUNCTIONS[function_name]["role"]
    props = template["Resources"][function_name]["Properties"]
    assert props["Role"] == {"Fn::GetAtt": [role_name, "Arn"]}
    assert "Policies" not in props, "SAM would create its own role (with AWSLambdaKinesisExecutionRole)"
    role = template["Resources"][role_name]["Properties"]
    assert "ManagedPolicyArns" not in role
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "lambda.amazonaws.com"} and trust["Action"] == "sts:AssumeRole"
    # one role per function: least privilege is per function (the HTTP API never touches the batch bucket)
    # ... and one role that is no function's: RDS Proxy's (test_feature_db_proxy_role_reads_only_its_secret)
    roles = {f["role"] for f in FUNCTIONS.values()} | {"FeatureDbProxyRole"}
    assert set(resources_of(template, "AWS::IAM::Role")) == roles


def test_env_targets_match_the_granted_resources(template, function):
    """The table/queue the code is pointed at are the ones the role lets it write."""
    variables = function["Properties"]["Environment"]["Variables"]
    assert refs(variables["SCORES_TABLE"]) == CODE_RESOURCES["dynamodb"]
    assert refs(variables["DLQ_URL"]) == CODE_RESOURCES["sqs"]
    on_failure = function["Properties"]["Events"]["Stream"]["Properties"]["DestinationConfig"]["OnFailure"]
    assert refs(on_failure["Destination"]) == PLATFORM_ACTIONS["sqs:SendMessage"]


# ----------------------------------------------------------------------------------------- S3 batch, HTTP API


def _env(template: dict, function_name: str) -> dict[str, str]:
    """A function's environment with every !Ref resolved to
    its parameter's Default (resources: a placeholder)."""
    env = {}
    for name, value in template["Resources"][function_name]["Properties"]["Environment"]["Variables"].items():
        if isinstance(value, dict) and "Fn::If" in value:
            value = value["Fn::If"][2]  # the default branch (conditions off)
        resolved = default(template, value)
        env[name] = str(resolved) if not isinstance(resolved, dict) else f"<{name}>"
    return env


@pytest.mark.parametrize("function_name", sorted(FUNCTIONS))
def test_every_function_ships_from_the_one_package(template, function, function_name):
    fn = template["Resources"][function_name]
    props = fn["Properties"]
    module = FUNCTIONS[function_name]["module"]
    assert props["Handler"] == f"{module}.lambda_handler"
    assert module in package.handler_modules(), "sam/package.py walks the imports from every template handler"
    assert (REPO / Path(*module.split("."))).with_suffix(".py").is_file()
    for key in ("CodeUri", "Runtime", "Architectures", "Tracing", "AutoPublishAlias"):
        assert props[key] == function["Properties"][key], key
    assert fn["Metadata"]["BuildMethod"] == "makefile"
    logs = FUNCTIONS[function_name]["logs"]
    assert props["LoggingConfig"]["LogGroup"] == {"Ref": logs}
    suffix = props["FunctionName"]["Fn::Sub"].removeprefix("${AWS::StackName}")
    assert template["Resources"][logs]["Properties"]["LogGroupName"] == {
        "Fn::Sub": f"/aws/lambda/${{AWS::StackName}}{suffix}"
    }


def test_package_ships_every_handler_and_its_imports():
    shipped = set(package.shipped_files())
    for spec in FUNCTIONS.values():
        assert set(shipped_sources(spec["module"]).values()) <= shipped, spec["module"]
    assert all(p.is_relative_to(REPO / "consumers") for p in shipped)


def test_batch_function_is_triggered_by_objects_under_the_input_prefix(template):
    fn = template["Resources"]["BatchScoringFunction"]["Properties"]
    (event,) = fn["Events"].values()
    assert event["Type"] == "S3"
    props = event["Properties"]
    assert props["Bucket"] == {"Ref": "BatchBucket"}
    assert props["Events"] == "s3:ObjectCreated:*"
    assert props["Filter"] == {"S3Key": {"Rules": [{"Name": "prefix", "Value": {"Ref": "BatchInputPrefix"}}]}}
    env = fn["Environment"]["Variables"]
    assert env["INPUT_PREFIX"] == {"Ref": "BatchInputPrefix"} and env["OUTPUT_PREFIX"] == {
        "Ref": "BatchOutputPrefix"
    }
    # S3 invokes asynchronously: bounded retries, then the event to a queue (an alarm watches it)
    invoke = fn["EventInvokeConfig"]
    assert 0 <= invoke["MaximumRetryAttempts"] <= 2
    assert invoke["DestinationConfig"]["OnFailure"] == {
        "Type": "SQS",
        "Destination": {"Fn::GetAtt": ["BatchFailureQueue", "Arn"]},
    }
    assert default(template, fn["Timeout"]) == 900
    assert default(template, fn["MemorySize"]) >= 1769


def test_batch_settings_build_from_the_template_and_the_prefixes_cannot_loop(template):
    from consumers.core.filescoring import check_prefixes

    env = _env(template, "BatchScoringFunction")
    assert "DLQ_URL" not in env, "the batch function has no quarantine queue"
    settings = Settings.from_env(env, require=S3_BATCH_REQUIRED)
    assert settings.chunk_rows == template["Parameters"]["BatchChunkRows"]["Default"]
    assert settings.model_cache_dir.startswith("/tmp/")
    assert settings.time_reserve_ms >= 5000, "time to complete or abort the uploads"
    check_prefixes(settings.input_prefix, settings.output_prefix)  # the defaults do not loop
    with pytest.raises(ConfigError, match="INPUT_PREFIX"):
        Settings.from_env({k: v for k, v in env.items() if k != "INPUT_PREFIX"}, require=S3_BATCH_REQUIRED)
    with pytest.raises(ConfigError, match="OUTPUT_PREFIX"):
        check_prefixes("data/", "data/scored/")


def test_batch_role_reads_only_the_input_prefix_and_writes_only_the_output_prefix(template):
    statements = list(role_statements(template, "BatchFunctionRole"))
    bucket = [s for s in statements if "BatchBucket" in resource_targets(s)]
    reads = [s for s in bucket if "s3:GetObject" in actions_of(s)]
    writes = [s for s in bucket if "s3:PutObject" in actions_of(s)]
    assert [s["Resource"] for s in reads] == [{"Fn::Sub": "${BatchBucket.Arn}/${BatchInputPrefix}*"}]
    assert [s["Resource"] for s in writes] == [
        {"Fn::Sub": "${BatchBucket.Arn}/${BatchOutputPrefix}*"},
        {"Fn::Sub": "${BatchBucket.Arn}/${BatchWorkPrefix}*"},  # a split file's manifest
    ]
    assert set(actions_of(writes[0])) == {"s3:PutObject", "s3:AbortMultipartUpload"}
    assert actions_of(writes[1]) == ["s3:PutObject"]
    assert not [s for s in bucket if s not in reads + writes]
    # the bucket statements are a separate policy: inline they would close a dependency cycle
    policy = template["Resources"]["BatchBucketAccess"]
    assert policy["Type"] == "AWS::IAM::Policy" and policy["Properties"]["Roles"] == [
        {"Ref": "BatchFunctionRole"}
    ]
    role_inline = template["Resources"]["BatchFunctionRole"]["Properties"]["Policies"]
    assert "BatchBucket" not in refs(role_inline)


def test_batch_bucket_is_private_encrypted_and_aborts_stale_uploads(template):
    props = template["Resources"]["BatchBucket"]["Properties"]
    assert props["PublicAccessBlockConfiguration"] == dict.fromkeys(
        ["BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"], True
    )
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    rule, work = props["LifecycleConfiguration"]["Rules"]
    assert rule["Status"] == "Enabled" and rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] >= 1
    # the parts of split files that never completed (assembled ones are deleted by the worker)
    assert work["Prefix"] == {"Ref": "BatchWorkPrefix"} and work["ExpirationInDays"] >= 1
    deny = template["Resources"]["BatchBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    p = template["Parameters"]
    assert p["BatchInputPrefix"]["Default"] != p["BatchOutputPrefix"]["Default"]


def test_http_api_uses_iam_authorization_and_throttling(template):
    api = template["Resources"]["ScoringHttpApi"]
    assert api["Type"] == "AWS::Serverless::HttpApi"
    props = api["Properties"]
    # HTTP APIs authorize with IAM, JWT or Lambda authorizers; API keys exist only for REST APIs.
    assert props["Auth"] == {"EnableIamAuthorizer": True, "DefaultAuthorizer": "AWS_IAM"}
    throttling = props["DefaultRouteSettings"]
    rate = default(template, throttling["ThrottlingRateLimit"])
    burst = default(template, throttling["ThrottlingBurstLimit"])
    assert 0 < rate <= burst
    assert props["AccessLogSettings"]["DestinationArn"] == {"Fn::GetAtt": ["HttpApiAccessLogGroup", "Arn"]}


def test_http_route_is_the_documented_one(template):
    import yaml

    fn = template["Resources"]["HttpScoringFunction"]["Properties"]
    (event,) = fn["Events"].values()
    assert event["Type"] == "HttpApi"
    props = event["Properties"]
    assert props["ApiId"] == {"Ref": "ScoringHttpApi"}
    assert props["PayloadFormatVersion"] == "2.0"
    assert props["Auth"] == {"Authorizer": "AWS_IAM"}
    doc = yaml.safe_load((REPO / "docs" / "openapi.yaml").read_text())
    assert {(m.upper(), path) for path, ops in doc["paths"].items() for m in ops} == {
        (props["Method"], props["Path"])
    }
    # the function answers before API Gateway's integration timeout (30 s at most)
    assert default(template, fn["Timeout"]) * 1000 < props["TimeoutInMillis"] <= 30_000


def test_http_settings_build_from_the_template(template):
    env = _env(template, "HttpScoringFunction")
    assert "DLQ_URL" not in env and "INPUT_PREFIX" not in env
    settings = Settings.from_env(env, require=HTTP_REQUIRED)
    assert settings.http_write_scores is False and settings.scores_table == ""  # no table without writes
    assert settings.feature_table == ""  # enrichment off by default
    assert set(template["Parameters"]["HttpWriteScores"]["AllowedValues"]) == {"true", "false"}


def test_http_scores_have_a_key_space_apart_from_the_stream(template):
    # the same event_id scored over HTTP and on the stream must not overwrite one another: separate tables
    fn = template["Resources"]["HttpScoringFunction"]["Properties"]
    assert fn["Environment"]["Variables"]["SCORES_TABLE"] == {
        "Fn::If": ["HttpWritesScores", {"Ref": "HttpScoresTable"}, ""]
    }
    table = template["Resources"]["HttpScoresTable"]
    assert table["Condition"] == "HttpWritesScores" and table["Type"] == "AWS::DynamoDB::Table"
    assert table["Properties"]["KeySchema"] == template["Resources"]["ScoresTable"]["Properties"]["KeySchema"]
    # the HTTP role may write its own table only, the stream role the stream's only
    http_resources = {
        json.dumps(s.get("Resource"), sort_keys=True)
        for s in role_statements(template, "HttpFunctionRole")
        if "dynamodb:BatchWriteItem" in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
    }
    assert http_resources == {json.dumps({"Fn::GetAtt": ["HttpScoresTable", "Arn"]})}
    stream = [s for s in role_statements(template) if "dynamodb:BatchWriteItem" in str(s["Action"])]
    assert stream and all("HttpScoresTable" not in json.dumps(s["Resource"]) for s in stream)


def test_feature_table_is_optional_and_read_only(template):
    assert template["Parameters"]["FeatureTableName"]["Default"] == ""
    for function_name in ("BatchScoringFunction", "HttpScoringFunction"):
        env = template["Resources"][function_name]["Properties"]["Environment"]["Variables"]
        assert env["FEATURE_TABLE"] == {"Fn::If": ["HasFeatureTable", {"Ref": "FeatureTableName"}, ""]}
        policies = template["Resources"][FUNCTIONS[function_name]["role"]]["Properties"]["Policies"]
        conditional = [
            st["Fn::If"] for p in policies for st in p["PolicyDocument"]["Statement"] if "Fn::If" in st
        ]
        (reads,) = [c for c in conditional if c[1].get("Sid") == "ReadFeatures"]
        assert reads[0] == "HasFeatureTable" and reads[1]["Action"] == "dynamodb:BatchGetItem"
        assert reads[2] == {"Ref": "AWS::NoValue"}
