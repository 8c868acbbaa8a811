"""The commands, one module each: an options dataclass (``StatsOptions``, ``ProjectOptions``, …),
one ``run(model, …, options)`` that returns a result (rows, meta, warnings, files; ``document()``
for the renderer), and the keyword form ``cnncli.stats(model, **options)``. The CLI builds the
same options from its parameters and renders the same result.
"""
