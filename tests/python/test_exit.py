"""The interpreter's exit while a daemon thread is inside a library call (the GIL released).

CPython ends such a thread from inside its GIL acquisition during finalisation, which unwound through the call's C++
frames and aborted the process (exit status 134, "terminate called without an active exception"). The module's exit
hook now waits for the calls in flight and then refuses new calls from other threads: the process exits with its own
status after the call returns. Seen failing before the hook (status -6 from subprocess.run).
"""
import subprocess
import sys
import textwrap

import pytest


PRELUDE = textwrap.dedent(
    """
    import atexit, sys, threading, time
    import numpy as np
    """
)

DAEMON = textwrap.dedent(
    """
    import diffsample as ds

    rng = np.random.default_rng(0)
    mix = ds.GaussianMixture(np.ones(25), rng.normal(size=(25, 50)), np.ones(25))
    x = np.zeros((1 << 14, 50), np.float32)
    started, result = threading.Event(), {}

    def work():
        started.set()
        ds.langevin(mix, x, steps=200, step_size=0.01)
        result["done"] = True
        print("call done", flush=True)

    threading.Thread(target=work, daemon=True).start()
    started.wait()
    time.sleep(0.05)  # the call is running, the GIL released
    print("main exits, call running:", "done" not in result, flush=True)
    sys.exit(3)
    """
)


def run(script):
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)


def test_exit_with_a_daemon_thread_inside_a_call_waits_for_the_call():
    r = run(PRELUDE + DAEMON)
    assert "main exits" in r.stdout, r.stderr
    assert r.returncode == 3, (r.returncode, r.stderr[-2000:])
    assert "terminate called" not in r.stderr
    if "call running: True" not in r.stdout:
        pytest.skip("the call (about 4 s on 2 cores) ended before the exit began: nothing to wait for on this machine")
    # The hook waited: the call's own line comes after the main thread's.
    assert r.stdout.index("call done") > r.stdout.index("main exits"), r.stdout


def test_exit_hooks_registered_before_the_import_still_call_the_library():
    # atexit runs hooks last-registered first: this one runs after the module's own, on the exiting thread.
    script = PRELUDE + textwrap.dedent(
        """
        def late():
            import diffsample as ds
            x = np.zeros((4, 2), np.float32)
            mix = ds.GaussianMixture(np.ones(1), np.zeros((1, 2)), np.ones(1))
            ds.langevin(mix, x, steps=2, step_size=0.01)
            print("late hook ran", flush=True)
        atexit.register(late)
        import diffsample
        """
    )
    r = run(script)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "late hook ran" in r.stdout, r.stderr[-2000:]


def test_a_child_forked_after_a_call_calls_the_library_and_exits():
    # The CPU pool's threads (made by the first call) do not exist in a forked child: its calls make their own, and
    # its exit runs the module's exit hook and the pool's destructor without waiting for the parent's threads (the
    # child crashed or hung at exit before).
    script = PRELUDE + textwrap.dedent(
        """
        import os
        import diffsample as ds
        mix = ds.GaussianMixture(np.ones(3), np.zeros((3, 4)), np.ones(3))
        x = np.zeros((4096, 4), np.float32)
        ds.langevin(mix, x, steps=5, step_size=0.01)
        pid = os.fork()
        if pid == 0:
            ds.langevin(mix, x, steps=5, step_size=0.01)
            sys.exit(7)
        _, status = os.waitpid(pid, 0)
        print("child status", os.waitstatus_to_exitcode(status), flush=True)
        """
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "child status 7" in r.stdout, (r.stdout, r.stderr[-2000:])
