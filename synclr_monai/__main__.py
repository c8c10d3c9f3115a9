"""Command line: ``python -m synclr_monai <command> [args]``.

Commands
--------
synth     write a synthetic EM dataset in the lab's on-disk layout
check     validate a dataset root and print a per-bbox summary
evaluate  kNN / linear-probe evaluation of an embeddings file, with plots
finetune  cleft segmentation from the pretrained encoder versus from scratch (Dice of both)
neighbours the k most similar synapses of a query synapse (table + gallery)
propagate labels of every synapse from a few labelled ones, with a confidence (--curve: accuracy vs labelled share)
outliers  a per-synapse outlier score (candidate segmentation errors) and a gallery of the top ones
explore   one self-contained HTML page: the 2-D map of all synapses, hover for slices, click for neighbours

Exit codes (every command): 0 success; 2 bad usage or bad input (the user's data, files or settings:
one short message naming the file or value; add --debug or set SYNCLR_DEBUG=1 for the full traceback);
1 a failure while running (the traceback is printed).
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback

# command -> "module:function"; each function takes argv (list[str]) and returns an exit code.
# Imported lazily so that `synth` does not pay for importing torch/MONAI.
COMMANDS = {
    "synth": "synclr_monai.data.synthetic:main",
    "check": "synclr_monai.data.checks:main",
    "evaluate": "synclr_monai.evaluation.cli:main",
    "finetune": "synclr_monai.finetune.cli:main",
    "neighbours": "synclr_monai.atlas.neighbours:main",
    "propagate": "synclr_monai.atlas.propagate:main",
    "outliers": "synclr_monai.atlas.outliers:main",
    "explore": "synclr_monai.atlas.explore:main",
}


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``argv[0]`` to its command and return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"unknown command {name!r}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    from synclr_monai.errors import EXIT_FAILURE, EXIT_USER_ERROR, UserError, report_user_error

    if "--debug" in rest:  # understood by every command, so taken out before the command's own parser
        rest = [a for a in rest if a != "--debug"]
        os.environ["SYNCLR_DEBUG"] = "1"
    module_name, func_name = COMMANDS[name].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    try:
        return int(func(rest) or 0)
    except UserError as err:
        report_user_error(err)
        return EXIT_USER_ERROR
    except Exception:  # a failure while running: the traceback, and exit code 1
        traceback.print_exc()
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
