"""Getting secrets to workloads: ``keysafe run`` and ``keysafe export``.

``names`` maps secret names to environment variable names and parses ``keysafe://``
references; ``sources`` reads a scope from the configured store or through a keysafe
server; ``formats`` renders the export formats; ``run`` supervises the child process.
Kept free of typer and rich so that ``keysafe run`` starts fast (``cli.entry``).
"""
