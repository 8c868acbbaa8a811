"""One module per `cnn` command: its click parameters and a ``command()`` that builds it (registered
by name in ``cnncli/cli.py``'s ``_COMMANDS``). Each parses, calls its ``cnncli.api`` module, renders."""
