"""The ``regtune`` command line: local tuning, the service's processes, the HTTP client."""

from service.cli import local, processes, remote  # noqa: F401  (each registers its commands)
from service.cli.root import app

__all__ = ["app"]
