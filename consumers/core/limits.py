"""AWS limits, named, with the page that states each. The local emulators are looser than AWS
(moto accepts 26-item batches, duplicate keys and >1 MiB records), so the code enforces these itself."""

# Lambda: https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html
LAMBDA_INVOKE_PAYLOAD_BYTES = 6 * 1024 * 1024  # synchronous invocation request/response payload (6 MB)
LAMBDA_UNZIPPED_PACKAGE_BYTES = 250 * 1024 * 1024  # deployment package incl. layers, unzipped

# Kinesis event source: https://docs.aws.amazon.com/lambda/latest/dg/services-kinesis-parameters.html
KINESIS_ESM_MAX_BATCH_SIZE = 10_000
KINESIS_ESM_MAX_BATCHING_WINDOW_S = 300
KINESIS_ESM_MAX_PARALLELIZATION_FACTOR = 10
KINESIS_ESM_MAX_RETRY_ATTEMPTS = 10_000

# Kinesis Data Streams: https://docs.aws.amazon.com/streams/latest/dev/service-sizes-and-limits.html
# and https://docs.aws.amazon.com/kinesis/latest/APIReference/API_PutRecords.html
KINESIS_MAX_RECORD_BYTES = 1024 * 1024  # data blob + partition key, default maximum
KINESIS_PUT_RECORDS_MAX_ENTRIES = 500
KINESIS_PUT_RECORDS_MAX_BYTES = 5 * 1024 * 1024
KINESIS_PARTITION_KEY_MAX_CHARS = 256
KINESIS_GET_RECORDS_MAX_RECORDS = 10_000

# DynamoDB: https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_BatchWriteItem.html
# and https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html
DYNAMODB_BATCH_WRITE_MAX_ITEMS = 25
DYNAMODB_BATCH_WRITE_MAX_BYTES = 16 * 1024 * 1024
DYNAMODB_PARTITION_KEY_MAX_BYTES = 2048

# SQS: https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_SendMessageBatch.html
# (256 KiB is the long-standing per-message and per-batch cap; we stay within it even where a queue allows
# more.)
SQS_SEND_BATCH_MAX_ENTRIES = 10
SQS_MAX_MESSAGE_BYTES = 256 * 1024
SQS_SEND_BATCH_MAX_BYTES = 256 * 1024

# KPL aggregation format: https://github.com/awslabs/amazon-kinesis-producer/blob/master/aggregation-format.md
KPL_MAGIC = b"\xf3\x89\x9a\xc2"
KPL_DIGEST_BYTES = 16  # MD5 of the protobuf message
