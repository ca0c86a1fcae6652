"""The spec of a study: what a user may ask for, typed and validated, and nothing else.

Holds the study spec (``study_spec``), the network spec (``network_spec``) and what every spec
model shares (``spec_base``: strict models, the operator's limits, ``SpecError``). Pydantic
only: imports nothing of ``trainer`` but itself, so the HTTP boundary can read it cheaply.
"""
