"""Fixtures of the integration tests: the served iris artifact (one per module)
and the streaming apps with their model key."""

from tests.helpers.served import served  # noqa: F401  (fixture)
from tests.helpers.streams import apps, key_file  # noqa: F401  (fixtures)
