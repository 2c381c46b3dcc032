"""CPython's concurrent.futures behaviour tests, run against offload's executors and futures.

Adapted from CPython's ``Lib/test/test_concurrent_futures/`` (see each module's docstring).
"""
