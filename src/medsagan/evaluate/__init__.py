"""Scoring, metrics, model selection and thresholds."""
