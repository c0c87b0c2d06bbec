"""Start-up cost of a stage: `import advgame`, the stage runner's imports, and opening the MLflow
run (SQLite), at once or in the background beside a stage body (pipeline.stage.run_stage opens
it beside the body: the last two cases differ by what that saves). Medians over repeats, each in
a fresh process. Run: make bench."""
import statistics
import subprocess
import sys
import tempfile
import time

REPEATS = 5
OPEN = ("from advgame.pipeline import tracking; import time; "
        "t = tracking.Tracker('bench', {{'a': 1}}, {{}}, background={bg}); time.sleep({body}); "
        "t.log_metrics({{'x': 1.0}}); t.finish()")
CASES = {
    "import advgame": "import advgame",
    "import torch": "import torch",
    "import advgame.pipeline.stage (torch, pydantic, yaml)": "import advgame.pipeline.stage",
    "stage start-up + MLflow run (sqlite)": "import advgame.pipeline.stage; " + OPEN.format(bg=False, body=0),
    "the same + a 3 s body, run opened first": "import advgame.pipeline.stage; " + OPEN.format(bg=False, body=3),
    "the same + a 3 s body, run opened beside it": "import advgame.pipeline.stage; " + OPEN.format(bg=True, body=3),
}


def timed(code: str, env: dict) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)
    return time.perf_counter() - t


def main() -> None:
    import os

    with tempfile.TemporaryDirectory() as d:
        env = {**os.environ, "ADVGAME_TRACKING": "on", "MLFLOW_TRACKING_URI": f"sqlite:///{d}/m.db"}
        timed(CASES["stage start-up + MLflow run (sqlite)"], env)  # creates the database once
        base = statistics.median(timed("pass", env) for _ in range(REPEATS))
        print(f"{'python -c pass':<48}{base:7.2f} s (median of {REPEATS})")
        for name, code in CASES.items():
            m = statistics.median(timed(code, env) for _ in range(REPEATS))
            print(f"{name:<48}{m:7.2f} s  ({m / base:5.1f}x bare python)")


if __name__ == "__main__":
    main()
