"""The ``keysafe`` command line: thin commands over ``SecretManager``.

``entry.main`` is the console script. It answers a plain ``keysafe get`` without
importing typer or rich (see ``reading``); every other command goes through the typer
app in ``app``. Errors become exit codes in one place (``exitcodes``).
"""
