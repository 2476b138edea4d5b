"""The scoring core: pure Python + numpy/xgboost/orjson. No AWS SDK, no entry point, no local tooling."""
