"""The database side: tables and migrations, a study's lifecycle, Optuna's storage and the
trial queries, uploads, stored models and tokens. It imports neither HTTP nor the workers."""
