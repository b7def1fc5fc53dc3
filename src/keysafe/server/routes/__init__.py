"""One module per resource; each is thin: parse, call the manager, render."""
