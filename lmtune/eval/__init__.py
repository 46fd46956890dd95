"""Scoring a model per evaluation unit, metric modules, sampling."""
