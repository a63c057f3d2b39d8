"""The serialized run: the envelope's records and the codec that turns them into context bytes.

Knows no plan: nothing here looks at a blueprint.
"""
