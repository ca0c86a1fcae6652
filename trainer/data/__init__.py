"""The rows a study trains on: built-in datasets, CSV/NPZ readers, tables, splits, scaling.

``datasets`` reads and checks a dataset (``builtin:*``, CSV, NPZ), ``mnist1d`` and ``poly``
generate two built-ins, ``tabular`` encodes string and blank cells per fold, ``splits`` is the
cross-validation protocol and ``preprocessing`` the per-fold standardization. Imports only
``trainer.specs`` (and numpy, scikit-learn): no torch module is built here.
"""
