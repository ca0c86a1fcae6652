"""``python -m service`` is ``regtune``."""

from service.cli import app

app()
