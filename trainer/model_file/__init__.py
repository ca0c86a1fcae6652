"""The tuned model as a file: written from a fitted model, read back for prediction.

Imports the parts below ``trainer.tuning`` (specs, data, nets, engines); the search never
imports it back.
"""
