"""A fault-injecting HTTP proxy in front of the local emulator (moto server), and a fault wrapper for the
function itself: the faults no emulator produces, injected under the *real* boto3/botocore stack (and the
lean DynamoDB writer, ``consumers/aws/lean_dynamodb.py``), in AWS's own wire shapes.

    proxy = FaultProxy(moto.endpoint).start()         # then AWS_ENDPOINT_URL=proxy.endpoint (proxy.env())
    proxy.set("ddb_throttle", p=0.5, seconds=3)        # switchable at run time, thread-safe
    proxy.clear()                                      # every fault off
    proxy.stats()                                      # what was injected, per fault

    python -m sam.local.faults --upstream http://127.0.0.1:5000 [--port P] [--fault NAME k=v ...]

Faults (``FAULTS``; each one a rule: which service/operations, what to do, ``p`` = probability per matching
request, optional ``seconds`` = how long the rule lasts and ``count`` = how many injections it makes):

    ddb_throttle         BatchWriteItem -> 400 ProvisionedThroughputExceededException
    ddb_throttling       BatchWriteItem -> 400 ThrottlingException
    ddb_5xx              BatchWriteItem -> 500 InternalServerError (status=503: ServiceUnavailable)
    ddb_reset            BatchWriteItem -> connection reset (``when="after"``: after DynamoDB wrote it)
    ddb_outage           every DynamoDB request -> 503 (``mode="reset"``: resets) for ``seconds``
    ddb_unprocessed      BatchWriteItem: a share (``share``) of the items of a request is not forwarded and
                         comes back in ``UnprocessedItems`` (all of them held: 400 ProvisionedThroughput...)
    ddb_crc              BatchWriteItem is served, but its response's ``x-amz-crc32`` does not match the body
    sqs_failed_entries   SendMessageBatch: a share of the entries is not forwarded and comes back ``Failed``
                         (``SenderFault`` false, ``Code`` InternalError)
    sqs_error            SendMessageBatch -> 500 InternalError
                         (``code="RequestThrottled"``, ``status=400``: throttled)
    sqs_reset            SendMessageBatch -> connection reset
    sqs_outage           every SQS request -> 503 (or resets) for ``seconds``
    kinesis_read_throttle  GetRecords -> 400 ProvisionedThroughputExceededException
    kinesis_5xx          GetRecords -> 500 InternalFailure
    kinesis_reset        GetRecords -> connection reset
    http_5xx             any request -> 500 in the service's shape  (``when="after"``: after it was served)
    http_reset           any request -> connection reset             (``when="after"`` likewise)
    latency              any request (``service=``/``ops=`` narrow it) waits ``delay_s`` before forwarding

The modules: ``shapes`` (AWS error shapes, the DynamoDB CRC), ``plan`` (FaultSpec, FAULTS, Rule, FaultPlan,
Decision), ``wire`` (the HTTP/1.1 server side: requests, responses, resets), ``rewrite`` (UnprocessedItems and
Failed entries), ``proxy`` (FaultProxy), ``handler`` (HandlerFaults, InjectedCrash), ``__main__`` (the CLI).
"""

from sam.local.faults.handler import HandlerFaults, InjectedCrash
from sam.local.faults.plan import FAULTS, Decision, FaultPlan, FaultSpec, Rule
from sam.local.faults.proxy import FaultProxy
from sam.local.faults.shapes import error_response

__all__ = [
    "FAULTS",
    "Decision",
    "FaultPlan",
    "FaultProxy",
    "FaultSpec",
    "HandlerFaults",
    "InjectedCrash",
    "Rule",
    "error_response",
]
