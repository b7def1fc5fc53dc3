"""A small Django app shaped like spec 000's Ragstar: organisations, their LLM settings
and their integrations, whose secrets live in keysafe."""
