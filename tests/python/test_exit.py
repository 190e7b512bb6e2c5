"""The interpreter's exit while a daemon thread is inside a library call (the GIL released).

CPython ends such a thread from inside its GIL acquisition during finalisation, which unwound through the call's C++
frames and aborted the process (exit status 134, "terminate called without an active exception"). The module's exit
hook now refuses new calls and waits for the calls in flight: the process exits with its own status after the call
returns. Seen failing before the hook (status -6 from subprocess.run).
"""
import subprocess
import sys
import textwrap


SCRIPT = textwrap.dedent(
    """
    import sys, threading, time
    import numpy as np
    import diffsample as ds

    rng = np.random.default_rng(0)
    mix = ds.GaussianMixture(np.ones(25), rng.normal(size=(25, 50)), np.ones(25))
    x = np.zeros((1 << 13, 50), np.float32)
    started = threading.Event()
    result = {}

    def work():
        started.set()
        ds.langevin(mix, x, steps=200, step_size=0.01)
        result["done"] = True

    threading.Thread(target=work, daemon=True).start()
    started.wait()
    time.sleep(0.2)  # the call is running, the GIL released
    print("main exits", flush=True)
    sys.exit(3)
    """
)


def test_exit_with_a_daemon_thread_inside_a_call_waits_for_the_call():
    run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600)
    assert "main exits" in run.stdout, run.stderr
    assert run.returncode == 3, (run.returncode, run.stderr[-2000:])
    assert "terminate called" not in run.stderr
