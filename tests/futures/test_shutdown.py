"""CPython's executor shutdown tests, run against offload's four executors.

Adapted from CPython's ``Lib/test/test_concurrent_futures/test_shutdown.py`` (CPython
main, Python Software Foundation License); the test bodies are CPython's.

Changes: submitted functions come from :mod:`.fns` (``time.sleep``, ``pow``, ``int``,
``abs``, ``id`` become ``fns.sleep``, ``fns.pow_``, ``fns.int_``, ``fns.abs_``,
``fns.id_``). The ``assert_python_ok`` scripts build the test's executor with
:func:`.util.make_executor` (a remote one connects to this module's server) and import
``sleep_and_print`` from :mod:`.fns`. A remote call prints in the server's worker, not
in the script, so each script prints the value the call returned (``sleep_and_print``
returns its message) from a done callback: "apple" reaches the script's stdout only if
the call completed and its future was resolved before the interpreter exited, which
is what the CPython test checks.

The ``ThreadPoolShutdownTest`` tests that apply to any executor run for all four
(``test_context_manager_shutdown``, ``test_del_shutdown``, ``test_shutdown_no_wait``
and ``test_cancel_futures_wait_false``): their joins of ``executor._threads`` are left
out, the rest is kept.

Left out, since they test pool internals: ``test_threads_terminate`` (counts
``executor._threads``), ``test_thread_names_assigned`` and ``test_thread_names_default``
(``thread_name_prefix`` and the pool's thread names), and all of
``ProcessPoolShutdownTest`` (``test_processes_terminate``, its
``test_context_manager_shutdown``/``test_del_shutdown``/``test_shutdown_no_wait``
variants, which join ``_processes``, ``_call_queue`` and
``_executor_manager_thread``, and ``test_shutdown_gh_132969_case_1/2``, which need
``max_tasks_per_child`` and an mp_context). In ``test_hang_gh83386`` the
``multiprocessing.set_start_method`` line (process pools only) is left out.
"""

import signal
import unittest

from .fns import abs_, int_, pow_, sleep
from .util import (
    create_executor_tests,
    gc_collect,
    run_python,
    setup_module,
    teardown_module,
)


class ExecutorShutdownTest:
    def test_run_after_shutdown(self):
        self.executor.shutdown()
        self.assertRaises(RuntimeError, self.executor.submit, pow_, 2, 5)

    def test_interpreter_shutdown(self):
        # Test the atexit hook for shutdown of worker threads and processes
        _rc, out, err = run_python(
            f"""if 1:
            from time import sleep
            from tests.futures.fns import print_result, sleep_and_print
            if __name__ == "__main__":
                t = {self.executor_script(5)}
                t.submit(sleep_and_print, 1.0, "apple").add_done_callback(print_result)
            """
        )
        # Errors in atexit hooks don't change the process exit code, check
        # stderr manually.
        self.assertFalse(err)
        self.assertEqual(out.strip(), b"apple")

    def test_submit_after_interpreter_shutdown(self):
        # Test the atexit hook for shutdown of worker threads and processes
        _rc, out, err = run_python(
            f"""if 1:
            import atexit
            @atexit.register
            def run_last():
                try:
                    t.submit(id_, None)
                except RuntimeError:
                    print("runtime-error")
                    raise
            from tests.futures.fns import id_
            if __name__ == "__main__":
                t = {self.executor_script(5)}
            """
        )
        # Errors in atexit hooks don't change the process exit code, check
        # stderr manually.
        self.assertIn("RuntimeError: cannot schedule new futures", err.decode())
        self.assertEqual(out.strip(), b"runtime-error")

    def test_hang_issue12364(self):
        fs = [self.executor.submit(sleep, 0.1) for _ in range(50)]
        self.executor.shutdown()
        for f in fs:
            f.result()

    def test_cancel_futures(self):
        assert self.worker_count <= 5, "test needs few workers"
        fs = [self.executor.submit(sleep, 0.1) for _ in range(50)]
        self.executor.shutdown(cancel_futures=True)
        # We can't guarantee the exact number of cancellations, but we can
        # guarantee that *some* were cancelled. With few workers, many of
        # the submitted futures should have been cancelled.
        cancelled = [fut for fut in fs if fut.cancelled()]
        self.assertGreater(len(cancelled), 20)

        # Ensure the other futures were able to finish.
        # Use "not fut.cancelled()" instead of "fut.done()" to include futures
        # that may have been left in a pending state.
        others = [fut for fut in fs if not fut.cancelled()]
        for fut in others:
            self.assertTrue(fut.done(), msg=f"{fut._state=}")
            self.assertIsNone(fut.exception())

        # Similar to the number of cancelled futures, we can't guarantee the
        # exact number that completed. But, we can guarantee that at least
        # one finished.
        self.assertGreater(len(others), 0)

    def test_hang_gh83386(self):
        """shutdown(wait=False) doesn't hang at exit with running futures.

        See https://github.com/python/cpython/issues/83386.
        """
        _rc, out, err = run_python(
            f"""if True:
            from tests.futures.fns import print_result, sleep_and_print
            if __name__ == "__main__":
                t = {self.executor_script(3)}
                t.submit(sleep_and_print, 1.0, "apple").add_done_callback(print_result)
                t.shutdown(wait=False)
            """
        )
        self.assertFalse(err)
        self.assertEqual(out.strip(), b"apple")

    def test_hang_gh94440(self):
        """shutdown(wait=True) doesn't hang when a future was submitted and
        quickly canceled right before shutdown.

        See https://github.com/python/cpython/issues/94440.
        """
        if not hasattr(signal, "alarm"):
            raise unittest.SkipTest("Tested platform does not support the alarm signal")

        def timeout(_signum, _frame):
            raise RuntimeError("timed out waiting for shutdown")

        kwargs = {}
        executor = self.executor_type(max_workers=1, **kwargs)
        executor.submit(int_).result()
        old_handler = signal.signal(signal.SIGALRM, timeout)
        try:
            signal.alarm(5)
            executor.submit(int_).cancel()
            executor.shutdown(wait=True)
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old_handler)

    # From ThreadPoolShutdownTest: the parts that apply to any executor.

    def test_context_manager_shutdown(self):
        with self.executor_type(max_workers=5) as e:
            self.assertEqual(list(e.map(abs_, range(-5, 5))), [5, 4, 3, 2, 1, 0, 1, 2, 3, 4])
        # Left out: joining executor._threads (pool internals).

    def test_del_shutdown(self):
        executor = self.executor_type(max_workers=5)
        res = executor.map(abs_, range(-5, 5))
        # Left out: threads = executor._threads, and joining them (pool internals).
        del executor
        gc_collect()

        # Make sure the results were all computed before the
        # executor got shutdown.
        assert all([r == abs(v) for r, v in zip(res, range(-5, 5))])

    def test_shutdown_no_wait(self):
        # Ensure that the executor cleans up the threads when calling
        # shutdown with wait=False
        executor = self.executor_type(max_workers=5)
        res = executor.map(abs_, range(-5, 5))
        # Left out: threads = executor._threads, and joining them (pool internals).
        executor.shutdown(wait=False)

        # Make sure the results were all computed before the
        # executor got shutdown.
        assert all([r == abs(v) for r, v in zip(res, range(-5, 5))])

    def test_cancel_futures_wait_false(self):
        # Can only be reliably tested for TPE, since PPE often hangs with
        # `wait=False` (even without *cancel_futures*).
        _rc, out, err = run_python(
            f"""if True:
            from tests.futures.fns import print_result, sleep_and_print
            if __name__ == "__main__":
                t = {self.executor_script(None)}
                t.submit(sleep_and_print, .1, "apple").add_done_callback(print_result)
                t.shutdown(wait=False, cancel_futures=True)
            """
        )
        # Errors in atexit hooks don't change the process exit code, check
        # stderr manually.
        self.assertFalse(err)
        # gh-116682: stdout may be empty if shutdown happens before task
        # starts executing.
        self.assertIn(out.strip(), [b"apple", b""])


create_executor_tests(globals(), ExecutorShutdownTest)


def setUpModule():
    setup_module()


def tearDownModule():
    teardown_module()
