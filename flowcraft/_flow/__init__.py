"""Building a flow: the builder, the blueprint it freezes into, and what reads a blueprint.

Knows no runtime: nothing here executes a node.
"""
