"""Stage check-params: the first stage of the pipeline. It depends on the whole params.yaml, so
DVC runs it first after any change of params (`dvc repro`, `dvc exp run -S ...`): it validates
every key at every level (unknown keys included) and checks that dvc.yaml was generated from
these params, and stops the whole run with one line before any stage does work. Its stamp's
bytes never change, so a valid change reruns only this check (about a second: no torch)."""
import sys
import time

from advgame import UserError
from advgame.artifacts import atomic_path, save_json
from advgame.names import stage_report, timing_path
from advgame.pipeline.preflight import STAMP, STAMP_TEXT, check, process_start


def main() -> int:
    start, clock = time.perf_counter(), {"process": process_start(), "start": time.time()}
    try:
        clock["work"] = time.time()
        check()
        with atomic_path(STAMP) as tmp:
            tmp.write_text(STAMP_TEXT)
        seconds = round(time.perf_counter() - start, 2)
        clock["done"] = time.time()
        # the committed-results rule of every stage (pipeline/stage.py): seconds apart
        save_json({"stage": "check-params", "valid": True}, stage_report("check-params"))
        clock["ended"] = time.time()
        save_json({"stage": "check-params", "seconds": seconds, "clock": clock, "passes": {}},
                  timing_path("check-params"))
    except UserError as e:
        print(f"error [check-params]: {e}", file=sys.stderr)
        return 2
    print(f"check-params: params.yaml valid, dvc.yaml current ({seconds:.2f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
