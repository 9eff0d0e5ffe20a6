"""Leaderboards, figures and reports built from MLflow runs."""
