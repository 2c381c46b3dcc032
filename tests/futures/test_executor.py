"""CPython's ExecutorTest, run against offload's four executors.

Adapted from CPython's ``Lib/test/test_concurrent_futures/executor.py`` (CPython main,
3.15 development; Python Software Foundation License); the test bodies are CPython's.
In CPython that module holds the mixin and each pool's test module binds it; here
:func:`create_executor_tests` binds it to the four offload executors of :mod:`.util`.

Changes: submitted functions come from :mod:`.fns` (the server imports them by name):
``pow``, ``divmod``, ``time.sleep``, ``str``, ``operator.add`` become ``fns.pow_``,
``fns.divmod_``, ``fns.sleep``, ``fns.str_``, ``fns.add``; ``my_object.my_method``
becomes ``fns.my_method`` with ``my_object`` as its argument; ``raiser``,
``timeout_on_one`` and the falsey exceptions live in :mod:`.fns`.
``support.SHORT_TIMEOUT`` is 20 s (pytest's limit is 60 s); ``support.sleeping_retry``
is a polling loop; the free-threading (``Py_GIL_DISABLED``) branches and the
``ignore_fork_in_thread_deprecation_warnings`` decorators (process pools) are left out.

Skipped:

- ``test_max_workers_negative``: max_workers semantics of the pools (a Client has none);
- where this interpreter's own ``concurrent.futures`` predates the behaviour a test
  checks (CPython's ThreadPoolExecutor would fail it too), with the reason: the
  ``buffersize`` tests (``Executor.map(buffersize=)``, new in 3.14),
  ``test_map_exception`` and ``test_map_timeout_from_callable`` (``Executor.map``
  yielding the results after a failed call), and ``test_swallows_falsey_exceptions``
  (gh-132063: ``Future.result()`` raising an exception that is falsey).
"""

import contextlib
import inspect
import itertools
import threading
import time
import unittest
import weakref
from concurrent import futures

from .fns import (
    FalseyBoolException,
    FalseyLenException,
    MyObject,
    add,
    capture,
    divmod_,
    make_dummy_object,
    mul,
    my_method,
    pow_,
    raiser,
    sleep,
    str_,
    timeout_on_one,
)
from .util import SHORT_TIMEOUT, create_executor_tests, gc_collect, setup_module, teardown_module


def _map_goes_on_after_a_failure() -> bool:
    """Whether this interpreter's Executor.map yields the results after a failed call."""
    with futures.ThreadPoolExecutor(1) as executor:
        i = executor.map(divmod, [1, 1], [0, 1])
        with contextlib.suppress(ZeroDivisionError):
            next(i)
        return next(i, None) == (1, 0)


def _future_raises_falsey_exceptions() -> bool:
    """Whether this interpreter's Future.result() raises a falsey exception (gh-132063)."""
    f = futures.Future()
    f.set_exception(FalseyBoolException("x"))
    try:
        f.result()
    except FalseyBoolException:
        return True
    return False


HAS_BUFFERSIZE = "buffersize" in inspect.signature(futures.Executor.map).parameters
MAP_GOES_ON = _map_goes_on_after_a_failure()
FALSEY_RAISED = _future_raises_falsey_exceptions()

requires_buffersize = unittest.skipUnless(
    HAS_BUFFERSIZE, "Executor.map(buffersize=) is new in Python 3.14; not on this interpreter"
)
requires_map_goes_on = unittest.skipUnless(
    MAP_GOES_ON,
    "this interpreter's Executor.map stops at a failed call (CPython main yields the rest)",
)


class ExecutorTest:
    # Executor.shutdown() and context manager usage is tested by
    # ExecutorShutdownTest.
    def test_submit(self):
        future = self.executor.submit(pow_, 2, 8)
        self.assertEqual(256, future.result())

    def test_submit_keyword(self):
        future = self.executor.submit(mul, 2, y=8)
        self.assertEqual(16, future.result())
        future = self.executor.submit(capture, 1, self=2, fn=3)
        self.assertEqual(future.result(), ((1,), {"self": 2, "fn": 3}))
        with self.assertRaises(TypeError):
            self.executor.submit(fn=capture, arg=1)
        with self.assertRaises(TypeError):
            self.executor.submit(arg=1)

    def test_map(self):
        self.assertEqual(
            list(self.executor.map(pow_, range(10), range(10))),
            list(map(pow, range(10), range(10))),
        )

        self.assertEqual(
            list(self.executor.map(pow_, range(10), range(10), chunksize=3)),
            list(map(pow, range(10), range(10))),
        )

    @requires_map_goes_on
    def test_map_exception(self):
        i = self.executor.map(divmod_, [5, 5, 5, 5], [2, 3, 0, 5])
        self.assertEqual(next(i), (2, 1))
        self.assertEqual(next(i), (1, 2))
        self.assertRaises(ZeroDivisionError, next, i)
        self.assertEqual(next(i), (1, 0))
        self.assertRaises(StopIteration, next, i)
        self.assertRaises(StopIteration, next, i)

        i = self.executor.map(divmod_, [5, 5, 5, 5], [2, 0, 3, 5], chunksize=3)
        self.assertEqual(next(i), (2, 1))
        self.assertRaises(ZeroDivisionError, next, i)
        self.assertEqual(next(i), (1, 2))
        self.assertEqual(next(i), (1, 0))
        self.assertRaises(StopIteration, next, i)
        self.assertRaises(StopIteration, next, i)

    @requires_map_goes_on
    def test_map_timeout_from_callable(self):
        # A TimeoutError from the callable is not the map() timeout, whether
        # or not a map() timeout is set.
        for timeout in (None, SHORT_TIMEOUT):
            with self.subTest(timeout=timeout):
                i = self.executor.map(timeout_on_one, [0, 1, 2, 3], timeout=timeout)
                self.assertEqual(next(i), 0)
                self.assertRaises(TimeoutError, next, i)
                self.assertEqual(next(i), 2)
                self.assertEqual(next(i), 3)
                self.assertRaises(StopIteration, next, i)

    def test_map_timeout(self):
        results = []
        i = self.executor.map(sleep, [0, 0, 6], timeout=5)
        try:
            for result in i:
                results.append(result)
        except futures.TimeoutError:
            pass
        else:
            self.fail("expected TimeoutError")

        # gh-110097: On heavily loaded systems, the launch of the worker may
        # take longer than the specified timeout.
        self.assertIn(results, ([None, None], [None], []))

        # The remaining calls are cancelled, so the iterator is exhausted.
        self.assertRaises(StopIteration, next, i)
        self.assertRaises(StopIteration, next, i)

    def test_map_close(self):
        i = self.executor.map(divmod_, [5, 5, 5, 5], [2, 0, 3, 5])
        self.assertEqual(next(i), (2, 1))
        i.close()
        self.assertRaises(StopIteration, next, i)
        self.assertRaises(StopIteration, next, i)

        i = self.executor.map(divmod_, [5, 5, 5, 5], [2, 0, 3, 5], chunksize=3)
        self.assertEqual(next(i), (2, 1))
        i.close()
        self.assertRaises(StopIteration, next, i)
        self.assertRaises(StopIteration, next, i)

    @requires_buffersize
    def test_map_buffersize_type_validation(self):
        for buffersize in ("foo", 2.0):
            with (
                self.subTest(buffersize=buffersize),
                self.assertRaisesRegex(
                    TypeError,
                    "buffersize must be an integer or None",
                ),
            ):
                self.executor.map(str_, range(4), buffersize=buffersize)

    @requires_buffersize
    def test_map_buffersize_value_validation(self):
        for buffersize in (0, -1):
            with (
                self.subTest(buffersize=buffersize),
                self.assertRaisesRegex(
                    ValueError,
                    "buffersize must be None or > 0",
                ),
            ):
                self.executor.map(str_, range(4), buffersize=buffersize)

    @requires_buffersize
    def test_map_buffersize(self):
        ints = range(4)
        for buffersize in (1, 2, len(ints), len(ints) * 2):
            with self.subTest(buffersize=buffersize):
                res = self.executor.map(str_, ints, buffersize=buffersize)
                self.assertListEqual(list(res), ["0", "1", "2", "3"])

    @requires_buffersize
    def test_map_buffersize_on_multiple_iterables(self):
        ints = range(4)
        for buffersize in (1, 2, len(ints), len(ints) * 2):
            with self.subTest(buffersize=buffersize):
                res = self.executor.map(add, ints, ints, buffersize=buffersize)
                self.assertListEqual(list(res), [0, 2, 4, 6])

    @requires_buffersize
    def test_map_buffersize_on_infinite_iterable(self):
        res = self.executor.map(str_, itertools.count(), buffersize=2)
        self.assertEqual(next(res, None), "0")
        self.assertEqual(next(res, None), "1")
        self.assertEqual(next(res, None), "2")

    @requires_buffersize
    def test_map_buffersize_on_multiple_infinite_iterables(self):
        res = self.executor.map(add, itertools.count(), itertools.count(), buffersize=2)
        self.assertEqual(next(res, None), 0)
        self.assertEqual(next(res, None), 2)
        self.assertEqual(next(res, None), 4)

    @requires_buffersize
    def test_map_buffersize_on_empty_iterable(self):
        res = self.executor.map(str_, [], buffersize=2)
        self.assertIsNone(next(res, None))

    @requires_buffersize
    def test_map_buffersize_without_iterable(self):
        res = self.executor.map(str_, buffersize=2)
        self.assertIsNone(next(res, None))

    @requires_buffersize
    def test_map_buffersize_when_buffer_is_full(self):
        ints = iter(range(4))
        buffersize = 2
        self.executor.map(str_, ints, buffersize=buffersize)
        self.executor.shutdown(wait=True)  # wait for tasks to complete
        self.assertEqual(
            next(ints),
            buffersize,
            msg="should have fetched only `buffersize` elements from `ints`.",
        )

    def test_shutdown_race_issue12456(self):
        # Issue #12456: race condition at shutdown where trying to post a
        # sentinel in the call queue blocks (the queue is full while processes
        # have exited).
        self.executor.map(str_, [2] * (self.worker_count + 1))
        self.executor.shutdown()

    def test_no_stale_references(self):
        # Issue #16284: check that the executors don't unnecessarily hang onto
        # references.
        my_object = MyObject()
        my_object_collected = threading.Event()

        def set_event():
            my_object_collected.set()

        my_object_callback = weakref.ref(my_object, lambda obj: set_event())  # noqa: F841
        # Deliberately discarding the future.
        self.executor.submit(my_method, my_object)
        del my_object

        collected = my_object_collected.wait(timeout=SHORT_TIMEOUT)
        self.assertTrue(collected, "Stale reference not collected within timeout.")

    @unittest.skip("max_workers semantics of the pools: a Client has no max_workers")
    def test_max_workers_negative(self):
        for number in (0, -1):
            with self.assertRaisesRegex(ValueError, "max_workers must be greater than 0"):
                self.executor_type(max_workers=number)

    def test_free_reference(self):
        # Issue #14406: Result iterator should not keep an internal
        # reference to result objects.
        for obj in self.executor.map(make_dummy_object, range(10)):
            wr = weakref.ref(obj)
            del obj
            gc_collect()  # For PyPy or other GCs.

            # support.sleeping_retry(SHORT_TIMEOUT): poll, fail once it has passed.
            deadline = time.monotonic() + SHORT_TIMEOUT
            while wr() is not None:
                self.assertLess(time.monotonic(), deadline, "result still referenced")
                time.sleep(0.01)

    @unittest.skipUnless(
        FALSEY_RAISED,
        "this interpreter's Future.result() swallows falsey exceptions (gh-132063)",
    )
    def test_swallows_falsey_exceptions(self):
        # see gh-132063: Prevent exceptions that evaluate as falsey
        # from being ignored.
        # Recall: `x` is falsey if `len(x)` returns 0 or `bool(x)` returns False.

        msg = "boolbool"
        with self.assertRaisesRegex(FalseyBoolException, msg):
            self.executor.submit(raiser, FalseyBoolException, msg).result()

        msg = "lenlen"
        with self.assertRaisesRegex(FalseyLenException, msg):
            self.executor.submit(raiser, FalseyLenException, msg).result()


create_executor_tests(globals(), ExecutorTest)


def setUpModule():
    setup_module()


def tearDownModule():
    teardown_module()
