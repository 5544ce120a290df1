"""Heatmap panels and evaluation plots."""
