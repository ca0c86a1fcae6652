"""The workers: claim a study, run its search, recover dead workers' trials, store the final
model. They work through ``service.store``."""
