"""Bundled sample models and images; installed as the package ``cnncli.samples``."""
