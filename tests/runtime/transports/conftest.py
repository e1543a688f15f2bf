"""Fixtures of the transport tests: the iris and echo servers (one per module)."""

from tests.helpers.oip_servers import echo, iris_server  # noqa: F401  (fixtures)
