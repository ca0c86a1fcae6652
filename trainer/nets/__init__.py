"""The networks a study can tune: templates, declarative layer stacks and plugins.

``layers`` walks a layer stack (shapes, sizes, torch modules), ``networks`` builds every
network by one path, ``plugins`` finds networks written in Python. Imports ``trainer.specs``
and ``trainer.data`` only.
"""
