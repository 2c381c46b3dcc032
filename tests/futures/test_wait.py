"""CPython's ``futures.wait`` tests, run against offload's four executors.

Adapted from CPython's ``Lib/test/test_concurrent_futures/test_wait.py`` (CPython main,
Python Software Foundation License); the test bodies are CPython's.

Changes: submitted functions come from :mod:`.fns` (``divmod`` becomes
``fns.divmod_``; ``event.wait`` becomes ``fns.event_wait`` with the event as its
argument; ``self.create_event()`` gives a file-backed :class:`.fns.Event` that a
remote worker can wait on). ``ThreadPoolWaitTests.test_pending_calls_race`` runs for
all four executors (its local ``future_func`` is ``fns.event_wait``).
``threading_helper.join_thread`` is ``Thread.join`` with ``SHORT_TIMEOUT``. Nothing is
left out.
"""

import sys
import threading

from offload import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION, wait

from .fns import divmod_, event_wait, mul, wait_and_raise
from .util import (
    CANCELLED_AND_NOTIFIED_FUTURE,
    CANCELLED_FUTURE,
    EXCEPTION_FUTURE,
    SHORT_TIMEOUT,
    SUCCESSFUL_FUTURE,
    create_executor_tests,
    setup_module,
    teardown_module,
)


class _Futures:
    """``concurrent.futures`` as the tests use it, from what offload re-exports."""

    ALL_COMPLETED = ALL_COMPLETED
    FIRST_COMPLETED = FIRST_COMPLETED
    FIRST_EXCEPTION = FIRST_EXCEPTION
    wait = staticmethod(wait)


futures = _Futures


class WaitTests:
    def test_20369(self):
        # See https://bugs.python.org/issue20369
        future = self.executor.submit(mul, 1, 2)
        done, not_done = futures.wait([future, future], return_when=futures.ALL_COMPLETED)
        self.assertEqual({future}, done)
        self.assertEqual(set(), not_done)

    def test_first_completed(self):
        event = self.create_event()
        future1 = self.executor.submit(mul, 21, 2)
        future2 = self.executor.submit(event_wait, event)

        try:
            done, not_done = futures.wait(
                [CANCELLED_FUTURE, future1, future2], return_when=futures.FIRST_COMPLETED
            )

            self.assertEqual(set([future1]), done)
            self.assertEqual(set([CANCELLED_FUTURE, future2]), not_done)
        finally:
            event.set()
        future2.result()  # wait for job to finish

    def test_first_completed_some_already_completed(self):
        event = self.create_event()
        future1 = self.executor.submit(event_wait, event)

        try:
            finished, pending = futures.wait(
                [CANCELLED_AND_NOTIFIED_FUTURE, SUCCESSFUL_FUTURE, future1],
                return_when=futures.FIRST_COMPLETED,
            )

            self.assertEqual(set([CANCELLED_AND_NOTIFIED_FUTURE, SUCCESSFUL_FUTURE]), finished)
            self.assertEqual(set([future1]), pending)
        finally:
            event.set()
        future1.result()  # wait for job to finish

    def test_first_exception(self):
        event1 = self.create_event()
        event2 = self.create_event()
        try:
            future1 = self.executor.submit(mul, 2, 21)
            future2 = self.executor.submit(wait_and_raise, event1)
            future3 = self.executor.submit(event_wait, event2)

            # Ensure that future1 is completed before future2 finishes
            def wait_for_future1():
                future1.result()
                event1.set()

            t = threading.Thread(target=wait_for_future1)
            t.start()

            finished, pending = futures.wait(
                [future1, future2, future3], return_when=futures.FIRST_EXCEPTION
            )

            self.assertEqual(set([future1, future2]), finished)
            self.assertEqual(set([future3]), pending)

            t.join(SHORT_TIMEOUT)
            self.assertFalse(t.is_alive())
        finally:
            event1.set()
            event2.set()
        future3.result()  # wait for job to finish

    def test_first_exception_some_already_complete(self):
        event = self.create_event()
        future1 = self.executor.submit(divmod_, 21, 0)
        future2 = self.executor.submit(event_wait, event)

        try:
            finished, pending = futures.wait(
                [
                    SUCCESSFUL_FUTURE,
                    CANCELLED_FUTURE,
                    CANCELLED_AND_NOTIFIED_FUTURE,
                    future1,
                    future2,
                ],
                return_when=futures.FIRST_EXCEPTION,
            )

            self.assertEqual(
                set([SUCCESSFUL_FUTURE, CANCELLED_AND_NOTIFIED_FUTURE, future1]), finished
            )
            self.assertEqual(set([CANCELLED_FUTURE, future2]), pending)
        finally:
            event.set()
        future2.result()  # wait for job to finish

    def test_first_exception_one_already_failed(self):
        event = self.create_event()
        future1 = self.executor.submit(event_wait, event)

        try:
            finished, pending = futures.wait(
                [EXCEPTION_FUTURE, future1], return_when=futures.FIRST_EXCEPTION
            )

            self.assertEqual(set([EXCEPTION_FUTURE]), finished)
            self.assertEqual(set([future1]), pending)
        finally:
            event.set()
        future1.result()  # wait for job to finish

    def test_all_completed(self):
        future1 = self.executor.submit(divmod_, 2, 0)
        future2 = self.executor.submit(mul, 2, 21)

        finished, pending = futures.wait(
            [SUCCESSFUL_FUTURE, CANCELLED_AND_NOTIFIED_FUTURE, EXCEPTION_FUTURE, future1, future2],
            return_when=futures.ALL_COMPLETED,
        )

        self.assertEqual(
            set(
                [
                    SUCCESSFUL_FUTURE,
                    CANCELLED_AND_NOTIFIED_FUTURE,
                    EXCEPTION_FUTURE,
                    future1,
                    future2,
                ]
            ),
            finished,
        )
        self.assertEqual(set(), pending)

    def test_timeout(self):
        short_timeout = 0.050

        event = self.create_event()
        future = self.executor.submit(event_wait, event)

        try:
            finished, pending = futures.wait(
                [CANCELLED_AND_NOTIFIED_FUTURE, EXCEPTION_FUTURE, SUCCESSFUL_FUTURE, future],
                timeout=short_timeout,
                return_when=futures.ALL_COMPLETED,
            )

            self.assertEqual(
                set([CANCELLED_AND_NOTIFIED_FUTURE, EXCEPTION_FUTURE, SUCCESSFUL_FUTURE]),
                finished,
            )
            self.assertEqual(set([future]), pending)
        finally:
            event.set()
        future.result()  # wait for job to finish

    # From ThreadPoolWaitTests.

    def test_pending_calls_race(self):
        # Issue #14406: multi-threaded race condition when waiting on all
        # futures.
        event = self.create_event()
        oldswitchinterval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)
        try:
            fs = {self.executor.submit(event_wait, event) for i in range(100)}
            event.set()
            futures.wait(fs, return_when=futures.ALL_COMPLETED)
        finally:
            sys.setswitchinterval(oldswitchinterval)


create_executor_tests(globals(), WaitTests)


def setUpModule():
    setup_module()


def tearDownModule():
    teardown_module()
