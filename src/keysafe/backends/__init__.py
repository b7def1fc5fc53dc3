"""Stores behind one small protocol. See ``base`` for the protocol and capabilities."""
