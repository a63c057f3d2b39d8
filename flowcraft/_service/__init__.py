"""Durable runs: ``FlowService`` over the runtime's public API and the ``RunStore`` protocol."""
