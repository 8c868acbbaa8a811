"""The Python API: the library behind the CLI, without files or argv (for notebooks and scripts).

Import from ``cnncli`` directly: ``cnncli.stats``, ``cnncli.project``, ``cnncli.top``.
"""
