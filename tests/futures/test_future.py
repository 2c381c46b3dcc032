"""CPython's Future tests, run against ``offload.Future`` and, where they apply, ``offload.Job``.

Adapted from CPython's ``Lib/test/test_concurrent_futures/test_future.py`` (CPython main,
Python Software Foundation License).

``FutureTests`` keeps CPython's test bodies, on the Future class as offload re-exports it
(``offload.Future``). Changes: ``support.captured_stderr`` also catches the
``concurrent.futures`` logger (:func:`.util.captured_stderr`: pytest installs handlers,
so logging's last resort does not write to stderr); ``support.SHORT_TIMEOUT`` is 20 s.
``test_class_str`` checks that offload's re-exports are ``concurrent.futures``'s own
classes, which print as ``concurrent.futures`` prints them on this Python (CPython main
expects ``<class 'concurrent.futures.Future'>``, older versions print the ``_base``
module; that is the interpreter's, not offload's). Skipped: ``test_get_snapshot``
when ``Future._get_snapshot`` (a private helper added in CPython main) does not exist on
this interpreter.

``JobTests`` runs the cancel, result, exception and done-callback tests against
:class:`offload.Job`, the future of a checkpointed call, on a client without a server
(the job runs here) and on a remote client (it runs on the server). A Job is started
at once (never PENDING): CPython's future fixtures map to jobs of
:mod:`.fns`'s checkpointed functions as follows:

- PENDING_FUTURE: a paused job (``Job.pause()``: not running, can still be cancelled);
- RUNNING_FUTURE: a job waiting on an event (``ck_wait_and_return``);
- CANCELLED_FUTURE: a paused job that was cancelled;
- EXCEPTION_FUTURE: a job that failed (``ck_divmod_(1, 0)``: ZeroDivisionError, where
  CPython's fixture holds an OSError);
- SUCCESSFUL_FUTURE: a job that returned 42 (``ck_mul(6, 7)``).

``set_result``/``set_exception`` are the executor's side of a future: a job completes
by running, so where a CPython test calls them the job's event is set instead, and a
callback added before completion runs on the thread that completes the job: the test
waits for it (up to SHORT_TIMEOUT) where CPython's runs it inline. Not run for Job:
``test_repr`` (a Job's repr names its class), ``test_class_str``,
``test_multiple_set_result``/``test_multiple_set_exception`` (executor-side API) and
``test_get_snapshot`` (private).
"""

import threading
import time
import unittest
from concurrent import futures as _cf
from concurrent.futures._base import CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED, PENDING, RUNNING

import offload
from offload import Future, Job

from .fns import ck_divmod_, ck_mul, ck_wait_and_raise, ck_wait_and_return
from .util import (
    CANCELLED_AND_NOTIFIED_FUTURE,
    CANCELLED_FUTURE,
    EXCEPTION_FUTURE,
    PENDING_FUTURE,
    RUNNING_FUTURE,
    SHORT_TIMEOUT,
    SUCCESSFUL_FUTURE,
    BaseTestCase,
    LocalClientMixin,
    RemoteClientMixin,
    captured_stderr,
    create_executor_tests,
    create_future,
    setup_module,
    teardown_module,
)

futures = _cf


class FutureTests(BaseTestCase):
    def test_done_callback_with_result(self):
        callback_result = None

        def fn(callback_future):
            nonlocal callback_result
            callback_result = callback_future.result()

        f = Future()
        f.add_done_callback(fn)
        f.set_result(5)
        self.assertEqual(5, callback_result)

    def test_done_callback_with_exception(self):
        callback_exception = None

        def fn(callback_future):
            nonlocal callback_exception
            callback_exception = callback_future.exception()

        f = Future()
        f.add_done_callback(fn)
        f.set_exception(Exception("test"))
        self.assertEqual(("test",), callback_exception.args)

    def test_done_callback_with_cancel(self):
        was_cancelled = None

        def fn(callback_future):
            nonlocal was_cancelled
            was_cancelled = callback_future.cancelled()

        f = Future()
        f.add_done_callback(fn)
        self.assertTrue(f.cancel())
        self.assertTrue(was_cancelled)

    def test_done_callback_raises(self):
        with captured_stderr() as stderr:
            raising_was_called = False
            fn_was_called = False

            def raising_fn(callback_future):
                nonlocal raising_was_called
                raising_was_called = True
                raise Exception("doh!")

            def fn(callback_future):
                nonlocal fn_was_called
                fn_was_called = True

            f = Future()
            f.add_done_callback(raising_fn)
            f.add_done_callback(fn)
            f.set_result(5)
            self.assertTrue(raising_was_called)
            self.assertTrue(fn_was_called)
            self.assertIn("Exception: doh!", stderr.getvalue())

    def test_done_callback_already_successful(self):
        callback_result = None

        def fn(callback_future):
            nonlocal callback_result
            callback_result = callback_future.result()

        f = Future()
        f.set_result(5)
        f.add_done_callback(fn)
        self.assertEqual(5, callback_result)

    def test_done_callback_already_failed(self):
        callback_exception = None

        def fn(callback_future):
            nonlocal callback_exception
            callback_exception = callback_future.exception()

        f = Future()
        f.set_exception(Exception("test"))
        f.add_done_callback(fn)
        self.assertEqual(("test",), callback_exception.args)

    def test_done_callback_already_cancelled(self):
        was_cancelled = None

        def fn(callback_future):
            nonlocal was_cancelled
            was_cancelled = callback_future.cancelled()

        f = Future()
        self.assertTrue(f.cancel())
        f.add_done_callback(fn)
        self.assertTrue(was_cancelled)

    def test_done_callback_raises_already_succeeded(self):
        with captured_stderr() as stderr:

            def raising_fn(callback_future):
                raise Exception("doh!")

            f = Future()

            # Set the result first to simulate a future that runs instantly,
            # effectively allowing the callback to be run immediately.
            f.set_result(5)
            f.add_done_callback(raising_fn)

            self.assertIn("exception calling callback for", stderr.getvalue())
            self.assertIn("doh!", stderr.getvalue())

    def test_repr(self):
        self.assertRegex(repr(PENDING_FUTURE), "<Future at 0x[0-9a-f]+ state=pending>")
        self.assertRegex(repr(RUNNING_FUTURE), "<Future at 0x[0-9a-f]+ state=running>")
        self.assertRegex(repr(CANCELLED_FUTURE), "<Future at 0x[0-9a-f]+ state=cancelled>")
        self.assertRegex(
            repr(CANCELLED_AND_NOTIFIED_FUTURE), "<Future at 0x[0-9a-f]+ state=cancelled>"
        )
        self.assertRegex(
            repr(EXCEPTION_FUTURE), "<Future at 0x[0-9a-f]+ state=finished raised OSError>"
        )
        self.assertRegex(
            repr(SUCCESSFUL_FUTURE), "<Future at 0x[0-9a-f]+ state=finished returned int>"
        )

    def test_class_str(self):
        # offload re-exports concurrent.futures's own classes (see the module docstring).
        self.assertIs(offload.Future, futures.Future)
        self.assertIs(offload.wait, futures.wait)
        self.assertIs(offload.as_completed, futures.as_completed)
        self.assertEqual(str(offload.Future), str(futures.Future))
        self.assertTrue(issubclass(offload.Client, futures.Executor))
        self.assertTrue(issubclass(offload.Job, futures.Future))
        self.assertEqual(str(futures.TimeoutError), "<class 'TimeoutError'>")

    def test_cancel(self):
        f1 = create_future(state=PENDING)
        f2 = create_future(state=RUNNING)
        f3 = create_future(state=CANCELLED)
        f4 = create_future(state=CANCELLED_AND_NOTIFIED)
        f5 = create_future(state=FINISHED, exception=OSError())
        f6 = create_future(state=FINISHED, result=5)

        self.assertTrue(f1.cancel())
        self.assertEqual(f1._state, CANCELLED)

        self.assertFalse(f2.cancel())
        self.assertEqual(f2._state, RUNNING)

        self.assertTrue(f3.cancel())
        self.assertEqual(f3._state, CANCELLED)

        self.assertTrue(f4.cancel())
        self.assertEqual(f4._state, CANCELLED_AND_NOTIFIED)

        self.assertFalse(f5.cancel())
        self.assertEqual(f5._state, FINISHED)

        self.assertFalse(f6.cancel())
        self.assertEqual(f6._state, FINISHED)

    def test_cancelled(self):
        self.assertFalse(PENDING_FUTURE.cancelled())
        self.assertFalse(RUNNING_FUTURE.cancelled())
        self.assertTrue(CANCELLED_FUTURE.cancelled())
        self.assertTrue(CANCELLED_AND_NOTIFIED_FUTURE.cancelled())
        self.assertFalse(EXCEPTION_FUTURE.cancelled())
        self.assertFalse(SUCCESSFUL_FUTURE.cancelled())

    def test_done(self):
        self.assertFalse(PENDING_FUTURE.done())
        self.assertFalse(RUNNING_FUTURE.done())
        self.assertTrue(CANCELLED_FUTURE.done())
        self.assertTrue(CANCELLED_AND_NOTIFIED_FUTURE.done())
        self.assertTrue(EXCEPTION_FUTURE.done())
        self.assertTrue(SUCCESSFUL_FUTURE.done())

    def test_running(self):
        self.assertFalse(PENDING_FUTURE.running())
        self.assertTrue(RUNNING_FUTURE.running())
        self.assertFalse(CANCELLED_FUTURE.running())
        self.assertFalse(CANCELLED_AND_NOTIFIED_FUTURE.running())
        self.assertFalse(EXCEPTION_FUTURE.running())
        self.assertFalse(SUCCESSFUL_FUTURE.running())

    def test_result_with_timeout(self):
        self.assertRaises(futures.TimeoutError, PENDING_FUTURE.result, timeout=0)
        self.assertRaises(futures.TimeoutError, RUNNING_FUTURE.result, timeout=0)
        self.assertRaises(futures.CancelledError, CANCELLED_FUTURE.result, timeout=0)
        self.assertRaises(futures.CancelledError, CANCELLED_AND_NOTIFIED_FUTURE.result, timeout=0)
        self.assertRaises(OSError, EXCEPTION_FUTURE.result, timeout=0)
        self.assertEqual(SUCCESSFUL_FUTURE.result(timeout=0), 42)

    def test_result_with_success(self):
        # TODO(brian@sweetapp.com): This test is timing dependent.
        def notification():
            # Wait until the main thread is waiting for the result.
            time.sleep(1)
            f1.set_result(42)

        f1 = create_future(state=PENDING)
        t = threading.Thread(target=notification)
        t.start()

        self.assertEqual(f1.result(timeout=5), 42)
        t.join()

    def test_result_with_cancel(self):
        # TODO(brian@sweetapp.com): This test is timing dependent.
        def notification():
            # Wait until the main thread is waiting for the result.
            time.sleep(1)
            f1.cancel()

        f1 = create_future(state=PENDING)
        t = threading.Thread(target=notification)
        t.start()

        self.assertRaises(futures.CancelledError, f1.result, timeout=SHORT_TIMEOUT)
        t.join()

    def test_exception_with_timeout(self):
        self.assertRaises(futures.TimeoutError, PENDING_FUTURE.exception, timeout=0)
        self.assertRaises(futures.TimeoutError, RUNNING_FUTURE.exception, timeout=0)
        self.assertRaises(futures.CancelledError, CANCELLED_FUTURE.exception, timeout=0)
        self.assertRaises(
            futures.CancelledError, CANCELLED_AND_NOTIFIED_FUTURE.exception, timeout=0
        )
        self.assertTrue(isinstance(EXCEPTION_FUTURE.exception(timeout=0), OSError))
        self.assertEqual(SUCCESSFUL_FUTURE.exception(timeout=0), None)

    def test_exception_with_success(self):
        def notification():
            # Wait until the main thread is waiting for the exception.
            time.sleep(1)
            with f1._condition:
                f1._state = FINISHED
                f1._exception = OSError()
                f1._condition.notify_all()

        f1 = create_future(state=PENDING)
        t = threading.Thread(target=notification)
        t.start()

        self.assertTrue(isinstance(f1.exception(timeout=SHORT_TIMEOUT), OSError))
        t.join()

    def test_multiple_set_result(self):
        f = create_future(state=PENDING)
        f.set_result(1)

        with self.assertRaisesRegex(
            futures.InvalidStateError,
            "FINISHED: <Future at 0x[0-9a-f]+ state=finished returned int>",
        ):
            f.set_result(2)

        self.assertTrue(f.done())
        self.assertEqual(f.result(), 1)

    def test_multiple_set_exception(self):
        f = create_future(state=PENDING)
        e = ValueError()
        f.set_exception(e)

        with self.assertRaisesRegex(
            futures.InvalidStateError,
            "FINISHED: <Future at 0x[0-9a-f]+ state=finished raised ValueError>",
        ):
            f.set_exception(Exception())

        self.assertEqual(f.exception(), e)

    @unittest.skipUnless(
        hasattr(Future, "_get_snapshot"),
        "Future._get_snapshot (private, CPython main) does not exist on this Python",
    )
    def test_get_snapshot(self):
        """Test the _get_snapshot method for atomic state retrieval."""
        # Test with a pending future
        f = Future()
        done, cancelled, result, exception = f._get_snapshot()
        self.assertFalse(done)
        self.assertFalse(cancelled)
        self.assertIsNone(result)
        self.assertIsNone(exception)

        # Test with a finished future (successful result)
        f = Future()
        f.set_result(42)
        done, cancelled, result, exception = f._get_snapshot()
        self.assertTrue(done)
        self.assertFalse(cancelled)
        self.assertEqual(result, 42)
        self.assertIsNone(exception)

        # Test with a finished future (exception)
        f = Future()
        exc = ValueError("test error")
        f.set_exception(exc)
        done, cancelled, result, exception = f._get_snapshot()
        self.assertTrue(done)
        self.assertFalse(cancelled)
        self.assertIsNone(result)
        self.assertIs(exception, exc)

        # Test with a cancelled future
        f = Future()
        f.cancel()
        done, cancelled, result, exception = f._get_snapshot()
        self.assertTrue(done)
        self.assertTrue(cancelled)
        self.assertIsNone(result)
        self.assertIsNone(exception)

        # Test concurrent access (basic thread safety check)
        f = Future()
        f.set_result(100)
        results = []

        def get_snapshot():
            for _ in range(1000):
                snapshot = f._get_snapshot()
                results.append(snapshot)

        threads = [threading.Thread(target=get_snapshot) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # All snapshots should be identical for a finished future
        expected = (True, False, 100, None)
        for result in results:
            self.assertEqual(result, expected)


class JobTests:
    """FutureTests' cancel, result, exception and callback tests on :class:`offload.Job`."""

    def tearDown(self):
        for event in self.created_events:  # let every job still waiting finish
            event.set()
        super().tearDown()

    # -- the fixtures: jobs in CPython's future states ------------------------------------------

    def submit(self, fn, *args):
        job = self.executor.submit(fn, *args)
        self.assertIsInstance(job, Job)
        return job

    def running_job(self, value=None):
        """(job, event): a job that returns ``value`` once ``event`` is set."""
        event = self.create_event()
        return self.submit(ck_wait_and_return, event, value), event

    def paused_job(self):
        job, _ = self.running_job()
        job.pause(timeout=SHORT_TIMEOUT)
        return job

    def cancelled_job(self):
        job = self.paused_job()
        job.cancel()
        return job

    def failed_job(self):
        job = self.submit(ck_divmod_, 1, 0)
        _cf.wait([job], timeout=SHORT_TIMEOUT)
        return job

    def successful_job(self):
        job = self.submit(ck_mul, 6, 7)
        _cf.wait([job], timeout=SHORT_TIMEOUT)
        return job

    def wait_for(self, event):
        self.assertTrue(event.wait(SHORT_TIMEOUT), "the callback was not called")

    # -- the tests ------------------------------------------------------------------------------

    def test_done_callback_with_result(self):
        callback_result = None
        called = threading.Event()

        def fn(callback_future):
            nonlocal callback_result
            callback_result = callback_future.result()
            called.set()

        f, event = self.running_job(5)
        f.add_done_callback(fn)
        event.set()
        self.wait_for(called)
        self.assertEqual(5, callback_result)

    def test_done_callback_with_exception(self):
        callback_exception = None
        called = threading.Event()

        def fn(callback_future):
            nonlocal callback_exception
            callback_exception = callback_future.exception()
            called.set()

        event = self.create_event()
        f = self.submit(ck_wait_and_raise, event)
        f.add_done_callback(fn)
        event.set()
        self.wait_for(called)
        self.assertEqual(("this is an exception",), callback_exception.args)

    def test_done_callback_with_cancel(self):
        was_cancelled = None

        def fn(callback_future):
            nonlocal was_cancelled
            was_cancelled = callback_future.cancelled()

        f = self.paused_job()
        f.add_done_callback(fn)
        self.assertTrue(f.cancel())
        self.assertTrue(was_cancelled)

    def test_done_callback_raises(self):
        with captured_stderr() as stderr:
            raising_was_called = False
            fn_was_called = threading.Event()

            def raising_fn(callback_future):
                nonlocal raising_was_called
                raising_was_called = True
                raise Exception("doh!")

            def fn(callback_future):
                fn_was_called.set()

            f, event = self.running_job(5)
            f.add_done_callback(raising_fn)
            f.add_done_callback(fn)
            event.set()
            self.wait_for(fn_was_called)
            self.assertTrue(raising_was_called)
            self.assertIn("Exception: doh!", stderr.getvalue())

    def test_done_callback_already_successful(self):
        callback_result = None

        def fn(callback_future):
            nonlocal callback_result
            callback_result = callback_future.result()

        f = self.successful_job()
        f.add_done_callback(fn)
        self.assertEqual(42, callback_result)

    def test_done_callback_already_failed(self):
        callback_exception = None

        def fn(callback_future):
            nonlocal callback_exception
            callback_exception = callback_future.exception()

        f = self.failed_job()
        f.add_done_callback(fn)
        self.assertIsInstance(callback_exception, ZeroDivisionError)

    def test_done_callback_already_cancelled(self):
        was_cancelled = None

        def fn(callback_future):
            nonlocal was_cancelled
            was_cancelled = callback_future.cancelled()

        f = self.paused_job()
        self.assertTrue(f.cancel())
        f.add_done_callback(fn)
        self.assertTrue(was_cancelled)

    def test_done_callback_raises_already_succeeded(self):
        with captured_stderr() as stderr:

            def raising_fn(callback_future):
                raise Exception("doh!")

            f = self.successful_job()
            f.add_done_callback(raising_fn)

            self.assertIn("exception calling callback for", stderr.getvalue())
            self.assertIn("doh!", stderr.getvalue())

    def test_cancel(self):
        f1 = self.paused_job()  # PENDING
        f2, event2 = self.running_job()  # RUNNING
        f3 = self.cancelled_job()  # CANCELLED
        f5 = self.failed_job()  # FINISHED with an exception
        f6 = self.successful_job()  # FINISHED with a result

        self.assertTrue(f1.cancel())
        self.assertTrue(f1.cancelled())

        # A running call may or may not be cancellable (a Job stops at a checkpoint), but
        # cancel() says which: True only if the future is cancelled now.
        cancelled = f2.cancel()
        self.assertEqual(cancelled, f2.cancelled())
        if not cancelled:
            self.assertTrue(f2.running())
            event2.set()
            self.assertIsNone(f2.result(timeout=SHORT_TIMEOUT))

        self.assertTrue(f3.cancel())
        self.assertTrue(f3.cancelled())

        self.assertFalse(f5.cancel())
        self.assertTrue(f5.done())
        self.assertFalse(f5.cancelled())

        self.assertFalse(f6.cancel())
        self.assertTrue(f6.done())
        self.assertFalse(f6.cancelled())

    def test_cancelled(self):
        self.assertFalse(self.paused_job().cancelled())
        self.assertFalse(self.running_job()[0].cancelled())
        self.assertTrue(self.cancelled_job().cancelled())
        self.assertFalse(self.failed_job().cancelled())
        self.assertFalse(self.successful_job().cancelled())

    def test_done(self):
        self.assertFalse(self.paused_job().done())
        self.assertFalse(self.running_job()[0].done())
        self.assertTrue(self.cancelled_job().done())
        self.assertTrue(self.failed_job().done())
        self.assertTrue(self.successful_job().done())

    def test_running(self):
        # A paused job (PENDING's stand-in) is left out: CPython has no paused state.
        self.assertTrue(self.running_job()[0].running())
        self.assertFalse(self.cancelled_job().running())
        self.assertFalse(self.failed_job().running())
        self.assertFalse(self.successful_job().running())

    def test_result_with_timeout(self):
        self.assertRaises(futures.TimeoutError, self.paused_job().result, timeout=0)
        self.assertRaises(futures.TimeoutError, self.running_job()[0].result, timeout=0)
        self.assertRaises(futures.CancelledError, self.cancelled_job().result, timeout=0)
        self.assertRaises(ZeroDivisionError, self.failed_job().result, timeout=0)
        self.assertEqual(self.successful_job().result(timeout=0), 42)

    def test_result_with_success(self):
        def notification():
            # Wait until the main thread is waiting for the result.
            time.sleep(1)
            event.set()

        f1, event = self.running_job(42)
        t = threading.Thread(target=notification)
        t.start()

        self.assertEqual(f1.result(timeout=5), 42)
        t.join()

    def test_result_with_cancel(self):
        def notification():
            # Wait until the main thread is waiting for the result.
            time.sleep(1)
            f1.cancel()

        f1 = self.paused_job()
        t = threading.Thread(target=notification)
        t.start()

        self.assertRaises(futures.CancelledError, f1.result, timeout=SHORT_TIMEOUT)
        t.join()

    def test_exception_with_timeout(self):
        self.assertRaises(futures.TimeoutError, self.paused_job().exception, timeout=0)
        self.assertRaises(futures.TimeoutError, self.running_job()[0].exception, timeout=0)
        self.assertRaises(futures.CancelledError, self.cancelled_job().exception, timeout=0)
        self.assertTrue(isinstance(self.failed_job().exception(timeout=0), ZeroDivisionError))
        self.assertEqual(self.successful_job().exception(timeout=0), None)

    def test_exception_with_success(self):
        def notification():
            # Wait until the main thread is waiting for the exception.
            time.sleep(1)
            event.set()

        event = self.create_event()
        f1 = self.submit(ck_wait_and_raise, event)
        t = threading.Thread(target=notification)
        t.start()

        self.assertTrue(isinstance(f1.exception(timeout=SHORT_TIMEOUT), Exception))
        t.join()


create_executor_tests(globals(), JobTests, executor_mixins=(LocalClientMixin, RemoteClientMixin))


def setUpModule():
    setup_module()


def tearDownModule():
    teardown_module()
