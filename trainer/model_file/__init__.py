"""The tuned model as a file: a refitted network (and its fold ensemble) written as a
weights-only ``torch.save`` file, and read back for prediction.

* ``model_format``: the file's format, one typed definition (:class:`ModelFile`) that the
  writer fills and the reader reads, its versions (``FORMAT_VERSION``), the upgrade of older
  files and :class:`ArtifactError`;
* ``packing``: a refit packed as that format (``pack``) and as bytes (``to_bytes``);
* ``loading``: a file read back (``read``) as the network that predicts raw rows
  (``load_model``: :class:`TunedModel`, or the fold models' :class:`EnsembleModel`).

Imports only the parts below it (``trainer.specs``, ``data``, ``nets``, ``engines``), never
``trainer.tuning``, which imports it to pack the study's final model.
"""
