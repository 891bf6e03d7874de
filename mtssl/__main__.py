"""``python -m mtssl``: the ``mtssl`` command."""

import os
import sys

from mtssl.cli import main

code = main()
if int(os.environ.get("WORLD_SIZE", "1")) > 1:
    # Under torchrun, once the run is written and the process group destroyed, leave without the
    # interpreter's teardown: gloo's worker threads can still hold work objects then, and destroying
    # them during finalisation aborts the process ("terminate called without an active exception",
    # pytorch/pytorch#179291) after a run that succeeded. Everything mtssl writes is closed by now.
    logging_module = sys.modules.get("logging")
    if logging_module is not None:
        logging_module.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)
