"""Deployment checks: the SAM template (lint, settings, least-privilege IAM) and the Lambda package."""
