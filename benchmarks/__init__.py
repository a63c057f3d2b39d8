"""Side-by-side benchmarks for flowcraft: ``python -m benchmarks`` (see ``benchmarks/README.md``).

Every scenario runs the same flow through a bare-Python floor (``benchmarks.floor``), flowcraft,
and, when installed, LangGraph and Flowcraft TS, and prints one JSON line per implementation.
"""
