"""The side-by-side benchmark harness behind ``lmcontrol bench``.

- ``suite``: ``BenchSuite`` / ``BenchMethod`` — what a method package registers (example in its docstring);
- ``runner``: interleaved, resumable generation and scoring of a suite;
- ``report``: ``report.md`` and the PNG plots;
- ``plugin``: the ``base`` suite (plain sampling vs prompting).
"""
