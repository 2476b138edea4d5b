"""The handler on moto server, as in tests/integration (the fixtures live there; imported, not copied)."""

from tests.integration.conftest import handler, resources  # noqa: F401  (pytest fixtures)
