"""Deployment files generated from the topic catalog and the stage registry (see generate.py)."""
