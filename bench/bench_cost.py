"""The study's cost against this host's compute floor (advgame.pipeline.cost): per stage of the
last run here (`make study`), the image-passes, the floor time at this host's best throughput
(measured now), body, wall and overhead seconds and efficiency, and the study's totals. Run
after `make study`: make bench."""
import sys
from pathlib import Path

from advgame.pipeline import cost

if __name__ == "__main__":
    if not any(Path("reports/timing").glob("*.json")):
        sys.exit("no stage has run here yet (reports/timing/ is empty): run `make study` first")
    cost.main()
