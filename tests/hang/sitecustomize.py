"""Loaded by a test's worker process (PYTHONPATH=tests/hang): with IRDISTILL_TEST_HANG_AT=N,
the Hugging Face Trainer hangs right after it has saved checkpoint N, having written the file
IRDISTILL_TEST_HANG_MARKER, so that the test can kill the worker in the middle of a cell at a
known point."""
import os
import time

if os.environ.get("IRDISTILL_TEST_HANG_AT"):
    import transformers

    _save = transformers.Trainer._save_checkpoint
    _at = int(os.environ["IRDISTILL_TEST_HANG_AT"])

    def _save_then_hang(self, *args, **kwargs):
        _save(self, *args, **kwargs)
        if self.state.global_step == _at:
            with open(os.environ["IRDISTILL_TEST_HANG_MARKER"], "w") as handle:
                handle.write(str(os.getpid()))
            time.sleep(3600)

    transformers.Trainer._save_checkpoint = _save_then_hang
