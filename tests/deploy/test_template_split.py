"""sam/template.yaml, the split-file resources (issue 16): the range queue and its dead-letter queue, the
range worker's SQS event source, the coordination table, and the settings the design depends on (the IAM of
the range worker and the S3 function is derived and checked by tests/deploy/test_template.py)."""

from __future__ import annotations

import json

import pytest

from consumers.core.config import RANGE_WORKER_REQUIRED, S3_BATCH_REQUIRED, Settings
from consumers.core.errors import ConfigError
from consumers.core.filescoring import check_prefixes
from tests.deploy.test_template import REPO, TEMPLATE, _env, default

RESULTS = REPO / "benchmarks" / "results" / "s3_split.json"


@pytest.fixture(scope="module")
def template() -> dict:
    from cfnlint.decode import cfn_yaml

    return cfn_yaml.load(str(TEMPLATE))


@pytest.fixture(scope="module")
def worker(template) -> dict:
    return template["Resources"]["RangeWorkerFunction"]["Properties"]


def test_the_worker_reads_the_range_queue_with_partial_batch_responses(template, worker):
    (name,) = worker["Events"]
    assert name == "Ranges"  # sam/local/sqs_source.py looks it up by name
    event = worker["Events"]["Ranges"]
    assert event["Type"] == "SQS"
    props = {k: default(template, v) for k, v in event["Properties"].items()}
    assert props["Queue"] == {"Fn::GetAtt": ["RangeQueue", "Arn"]}
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert 1 <= props["BatchSize"] <= 10 and props["MaximumBatchingWindowInSeconds"] == 0
    assert 2 <= default(template, props["ScalingConfig"]["MaximumConcurrency"]) <= 1000
    assert worker["Handler"] == "consumers.s3_worker.lambda_handler"


def test_visibility_timeout_and_receive_count_follow_the_worker_timeout(template, worker):
    queue = template["Resources"]["RangeQueue"]["Properties"]
    visibility = default(template, queue["VisibilityTimeout"])
    timeout = default(template, worker["Timeout"])
    batch = worker["Events"]["Ranges"]["Properties"]
    # Lambda's advice for SQS event sources: at least 6x the function timeout (+ the batching window)
    assert visibility >= 6 * timeout + batch["MaximumBatchingWindowInSeconds"]
    redrive = queue["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["RangeDeadLetterQueue", "Arn"]}
    assert redrive["maxReceiveCount"] == {"Ref": "RangeMaxReceiveCount"}
    assert default(template, redrive["maxReceiveCount"]) >= 5  # AWS's advice for partial batch responses
    # the worker dead-letters on the same receive count the queue's redrive policy uses
    assert worker["Environment"]["Variables"]["RANGE_MAX_RECEIVES"] == {"Ref": "RangeMaxReceiveCount"}


def test_the_worker_timeout_covers_a_measured_range_several_times(template, worker):
    """The range size and the timeout come from the measurement (benchmarks/s3_split.py): a range of the
    template's default size takes a fraction of the timeout on one vCPU."""
    measured = json.loads(RESULTS.read_text())
    per_mib_s = measured["per_range"]["seconds_per_mib_one_worker"]
    range_mib = template["Parameters"]["BatchRangeBytes"]["Default"] / 2**20
    timeout = default(template, worker["Timeout"])
    assert timeout >= 4 * per_mib_s * range_mib, (timeout, per_mib_s * range_mib)
    assert default(template, worker["MemorySize"]) >= 1769  # one vCPU, as measured


def test_the_worker_settings_build_from_the_template(template):
    env = _env(template, "RangeWorkerFunction")
    settings = Settings.from_env(env, require=RANGE_WORKER_REQUIRED)
    assert settings.range_max_receives == template["Parameters"]["RangeMaxReceiveCount"]["Default"]
    assert settings.jobs_table and settings.range_queue_url and settings.range_dlq_url
    assert settings.time_reserve_ms >= 5000
    for name in RANGE_WORKER_REQUIRED:
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({k: v for k, v in env.items() if k != name}, require=RANGE_WORKER_REQUIRED)


def test_the_s3_function_splits_above_the_threshold_into_the_range_queue(template):
    variables = template["Resources"]["BatchScoringFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["RANGE_QUEUE_URL"] == {"Ref": "RangeQueue"}
    assert variables["JOBS_TABLE"] == {"Ref": "JobsTable"}
    settings = Settings.from_env(_env(template, "BatchScoringFunction"), require=S3_BATCH_REQUIRED)
    assert settings.split_bytes == template["Parameters"]["BatchSplitBytes"]["Default"] > 0
    assert settings.range_bytes == template["Parameters"]["BatchRangeBytes"]["Default"]
    assert settings.split_bytes >= 2 * settings.range_bytes  # a split file has several ranges
    check_prefixes(settings.input_prefix, settings.output_prefix, settings.work_prefix)  # no loop
    with pytest.raises(ConfigError, match="WORK_PREFIX"):
        check_prefixes("in/", "out/", "in/work/")


def test_the_jobs_table_is_the_one_the_code_writes(template):
    from sam.local.resources import create_jobs_table

    props = template["Resources"]["JobsTable"]["Properties"]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expires", "Enabled": True}
    assert props["SSESpecification"]["SSEEnabled"] is True

    class Capture:
        def create_table(self, **kw):
            self.kw = kw

        def get_waiter(self, name):
            return type("W", (), {"wait": lambda *a, **k: None})()

    local = Capture()
    create_jobs_table(local, "jobs")  # the local mode's table has the template's keys
    assert local.kw["KeySchema"] == props["KeySchema"]
    assert local.kw["AttributeDefinitions"] == props["AttributeDefinitions"]
    from consumers.aws import jobs

    table = jobs.JobTable(None, "t")
    assert table._key("j") == {"job": {"S": "j"}, "item": {"S": jobs.JOB_ITEM}}


def test_range_queues_are_encrypted(template):
    for name in ("RangeQueue", "RangeDeadLetterQueue"):
        props = template["Resources"][name]["Properties"]
        assert props["KmsMasterKeyId"] == {"Fn::If": ["HasKmsKey", {"Ref": "KmsKeyArn"}, "alias/aws/sqs"]}
        assert props["MessageRetentionPeriod"] == 14 * 24 * 3600


def test_alarms_watch_the_queue_age_and_the_dead_letters(template):
    res = template["Resources"]
    age = res["RangeQueueAgeAlarm"]["Properties"]
    assert age["MetricName"] == "ApproximateAgeOfOldestMessage"
    assert age["Threshold"] == {"Ref": "RangeQueueAgeAlarmSeconds"}
    # a backlog older than the time a retried range may take to come back (visibility timeout)
    visibility = default(template, res["RangeQueue"]["Properties"]["VisibilityTimeout"])
    assert default(template, age["Threshold"]) >= visibility
    dlq = res["RangeDeadLetterDepthAlarm"]["Properties"]
    assert dlq["MetricName"] == "ApproximateNumberOfMessagesVisible" and dlq["Threshold"] == 0
    assert dlq["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": ["RangeDeadLetterQueue", "QueueName"]}}
    ]


def test_the_local_event_source_reads_the_templates_settings(template, worker):
    from sam.local.sqs_source import SqsSourceSettings

    local = SqsSourceSettings.from_template(TEMPLATE)
    props = worker["Events"]["Ranges"]["Properties"]
    assert local.batch_size == default(template, props["BatchSize"])
    assert local.report_batch_item_failures is True
    assert local.function_timeout_s == default(template, worker["Timeout"])
    queue = template["Resources"]["RangeQueue"]["Properties"]
    assert local.queue_visibility_timeout_s == default(template, queue["VisibilityTimeout"])
    assert local.max_receive_count == default(template, queue["RedrivePolicy"]["maxReceiveCount"])
