"""Stage publish: the report's inputs for git (advgame.report.publish): a copy of every result the
report reads that its stage keeps in DVC's cache, and the adversarial-examples figure, which needs
the models. Its dependencies are dvc.yaml's (the generator's list); the report stage reads only
that folder and other files git holds."""
from pathlib import Path

import yaml

from advgame.pipeline.stage import run_stage
from advgame.report.publish import publish


def deps() -> list[str]:
    return yaml.safe_load(Path("dvc.yaml").read_text())["stages"]["publish"]["deps"]


def body(ctx):
    return publish(ctx.params, deps(), device=ctx.device)


if __name__ == "__main__":
    run_stage("publish", body, sections=["run", "attack", "eval", "report"], deps=deps())
