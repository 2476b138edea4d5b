"""A stand-in for Lambda's context object with the real attributes and methods
(https://docs.aws.amazon.com/lambda/latest/dg/python-context.html), for the local poller and tests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LambdaContext:
    timeout_ms: int = 60_000
    function_name: str = "scoring"
    memory_limit_in_mb: int = 1769
    function_version: str = "$LATEST"
    region: str = "us-east-1"
    account_id: str = "123456789012"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    _end: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._end = time.monotonic() + self.timeout_ms / 1000

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account_id}:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return time.strftime("%Y/%m/%d/[$LATEST]local")

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._end - time.monotonic()) * 1000))


# A Lambda handler as the local poller invokes it: handler(event, context) -> response.
Handler = Callable[[dict[str, Any], Any], Any]
