"""Fixtures of the compiler tests, defined beside the helpers they use."""

from tests.helpers.documents import write  # noqa: F401  (fixture)
from tests.helpers.spec import write_spec  # noqa: F401  (fixture)
