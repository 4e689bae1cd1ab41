"""The command line without a terminal (a CI log, a file): progress as whole, periodic lines with a rate
and an ETA; log lines with their time, never cut or wrapped; and a Ctrl-C that is never lost."""
import signal
import subprocess
import sys

from edgekd.pipeline.progress import LineProgress
from tests.helpers import ROOT


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _train(progress: LineProgress, clock: Clock, epochs: range, total: int, seconds_per_epoch: float) -> None:
    for epoch in epochs:
        progress.epoch_start(epoch, total, 100)
        progress.advance(100, 0.5)
        clock.now += seconds_per_epoch
        progress.epoch_end({"samples_per_s": 100 / seconds_per_epoch, "val_accuracy": 0.9})
    progress.close()


def test_a_line_every_interval_and_at_the_last_epoch_with_rate_and_eta():
    clock, lines = Clock(), []
    _train(LineProgress("teacher", lines.append, every_s=10, clock=clock), clock, range(1, 11), 10, 3.0)
    assert lines == [  # 12 s, 24 s since the start, then the last epoch
        "teacher epoch 4/10: 33 samples/s, loss 0.5000, val 90.00%, 12 s elapsed, ETA 18 s",
        "teacher epoch 8/10: 33 samples/s, loss 0.5000, val 90.00%, 24 s elapsed, ETA 6 s",
        "teacher epoch 10/10: 33 samples/s, loss 0.5000, val 90.00%, 30 s elapsed, ETA 0 s"]


def test_after_a_resume_the_eta_counts_the_epochs_this_process_trained_and_an_early_stop_still_reports():
    clock, lines = Clock(), []
    _train(LineProgress("student", lines.append, every_s=100, clock=clock), clock, range(6, 9), 20, 2.0)
    # resumed at epoch 6, stopped early after epoch 8 of 20: 6 s for 3 epochs, 12 left
    assert lines == ["student epoch 8/20: 50 samples/s, loss 0.5000, val 90.00%, 6 s elapsed, ETA 24 s"]


def test_cli_output_to_a_file_is_whole_lines(tmp_path):
    out = tmp_path / ("a-directory-name-long-enough-to-wrap-at-eighty-columns-" * 2) / "run"
    proc = subprocess.run([sys.executable, "-m", "edgekd.pipeline.cli", "run", str(ROOT / "configs" / "digits.toml"),
                           "--out", str(out), "--until", "teacher", "--set", "teacher.train.epochs=2"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr.splitlines()
    assert err and all(line[:8].count(":") == 2 and line[8] == " " for line in err), err  # "HH:MM:SS INFO ..."
    assert not any(ch in proc.stderr for ch in "━…\r") and "…" not in proc.stdout, proc.stderr  # no bar, cut or rewrite
    assert any(line.endswith("ETA 0 s") and "teacher epoch 2/2: " in line and "samples/s" in line for line in err), err
    assert f"run directory: {out}" in proc.stdout.splitlines()  # one line, however long


def test_a_ctrl_c_dropped_inside_a_gc_callback_is_raised_again_at_the_next_check():
    """JAX (loaded by litert-torch) registers a garbage-collector callback; a Ctrl-C that lands in it is
    printed as "Exception ignored" and dropped. What the CLI installs records it, and training loops
    check between batches."""
    code = ("from edgekd.pipeline import interrupt\nimport gc, os, signal\n{install}"
            "def cb(phase, info):\n    if phase == 'start':\n        os.kill(os.getpid(), signal.SIGINT)\n        sum(range(9))\n"
            "gc.callbacks.append(cb)\ngc.collect()\ngc.callbacks.clear()\nprint('went on', flush=True)\ninterrupt.check()\n"
            "print('never here')\n")
    # as a foreground program: a test run in the background (`make test &`) inherits SIGINT ignored
    foreground = dict(preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    with_handler = subprocess.run([sys.executable, "-c", code.format(install="interrupt.install()\n")],
                                  capture_output=True, text=True, **foreground)
    # the drop really happens ("went on" is printed after it), and is neither lost nor shown as a traceback
    assert with_handler.stdout.splitlines() == ["went on"] and with_handler.returncode != 0
    assert with_handler.stderr.rstrip().endswith("KeyboardInterrupt") and "Exception ignored" not in with_handler.stderr
    without = subprocess.run([sys.executable, "-c", code.format(install="")], capture_output=True, text=True,
                             **foreground)
    assert "Exception ignored" in without.stderr  # what it fixes: dropped, printed, and the program goes on
    assert without.stdout.splitlines() == ["went on", "never here"] and without.returncode == 0
