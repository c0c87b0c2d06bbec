"""`advgame`: the project's tools under one command (pyproject's [project.scripts]).

    advgame pipeline [--check]        regenerate dvc.yaml from params.yaml (python -m advgame.pipeline)
    advgame seeds run|collect|...     training-seed experiments (python -m advgame.pipeline.seeds)
    advgame server [--port 5000]      a team's MLflow server on PostgreSQL (python -m advgame.pipeline.server)
    advgame summary                   the headline numbers after `make study` (python -m advgame.pipeline.summary)
    advgame evaluate MODEL [...]      your own model against the study's attacks (evaluation/own_model.py)
    advgame verify [--repro ...]      does a rerun agree with the committed results? (pipeline/verify.py)
    advgame warm [-- CMD ...]         CMD (default: dvc repro) with warm stage start-ups (pipeline/warm.py)

Each subcommand hands the rest of the command line to that tool's own `main(argv)`, so
`advgame <command> --help` is the tool's help. The top of the package's layers: it imports
the pipeline's modules, nothing imports it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from advgame import UserError
from advgame.names import DATA, RESULTS, RUNS

COMMANDS = {
    "pipeline": "regenerate dvc.yaml from params.yaml (= python -m advgame.pipeline)",
    "seeds": "training-seed experiments: run, collect, bank, rebase, show, commits (= python -m advgame.pipeline.seeds)",
    "server": "a team's MLflow tracking server on PostgreSQL (= python -m advgame.pipeline.server)",
    "summary": "print the study's headline numbers (= python -m advgame.pipeline.summary)",
    "evaluate": "evaluate your own model (a checkpoint or TorchScript file) against the study's attacks",
    "verify": "judge a rerun's headline numbers against the committed ones, within their seed-level spread",
    "warm": "run a command (default: dvc repro) with its stages started from a fork server (torch, MLflow loaded)",
}


def _pipeline(argv: list[str]) -> int:
    from advgame.pipeline.generator import main

    return main(argv)


def _seeds(argv: list[str]) -> int:
    from advgame.pipeline.seeds import main

    main(argv)
    return 0


def _server(argv: list[str]) -> int:
    from advgame.pipeline.server import main

    main(argv)
    return 0


def _summary(argv: list[str]) -> int:
    from advgame.pipeline import summary

    argparse.ArgumentParser(prog="advgame summary", description=summary.__doc__).parse_args(argv)
    summary.main()
    return 0


def _verify(argv: list[str]) -> int:
    from advgame.pipeline.verify import main

    return main(argv)


def _warm(argv: list[str]) -> int:
    from advgame.pipeline.warm import main

    return main(argv)


def evaluate_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="advgame evaluate", description=COMMANDS["evaluate"] + ": clean, FGSM-curr, PGD-curr at every "
        "eta, the cascade (eval.strong_attacks) at the main eta, the worst case per image; writes the "
        "JSON of a pipeline evaluation and prints your row beside the study's defenders.")
    ap.add_argument("model", help="an advgame checkpoint, a plain state_dict (with --arch) or a TorchScript file")
    ap.add_argument("--arch", help="the architecture of a plain state_dict (advgame.models: smallcnn, cifarcnn, resnet18)")
    ap.add_argument("--classes", type=int, default=10, help="classes of a plain state_dict (default %(default)s)")
    ap.add_argument("--data", help="a .pt file holding tensors x (N, C, H, W) in [0, 1] and y (N,); "
                    f"default: the study's test split {DATA}/test.pt")
    ap.add_argument("--n", type=int, default=0, help="the first n images (default: eval.n_main for the "
                    "study's split, all of yours)")
    ap.add_argument("--eta", type=float, default=0.3, help="the main L-inf eta: the strong set and the "
                    "leaderboard (default %(default)s)")
    ap.add_argument("--etas", type=float, nargs="*", default=[], help="more etas for FGSM-curr and PGD-curr")
    ap.add_argument("--params", help="params file for the attacks' settings (default: ./params.yaml if present)")
    ap.add_argument("--name", help="your model's name in the JSON and the table (default: the file's stem)")
    ap.add_argument("--out", help="the JSON (default reports/own/<name>.json)")
    ap.add_argument("--results", default=RESULTS, help="the study's results to compare with")
    ap.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: the params' run.device)")
    return ap


def _out_path(a: argparse.Namespace, name: str) -> Path:
    out = Path(a.out or f"reports/own/{name}.json")
    for held in ("reports/eval", RUNS):
        if out.resolve().is_relative_to(Path(held).resolve()):
            raise UserError(f"--out {out}: {held}/ holds the pipeline's evaluations; write elsewhere "
                            "(default reports/own/<name>.json)")
    return out


def _evaluate(argv: list[str]) -> int:
    a = evaluate_parser().parse_args(argv)
    try:
        report(a)
    except UserError as e:
        print(f"error [evaluate]: {e}", file=sys.stderr)
        return 2
    return 0


def report(a: argparse.Namespace) -> None:
    """Load, evaluate, write the JSON, print the summary and the leaderboard."""
    from advgame.artifacts import load_json, save_json
    from advgame.evaluation.own_model import evaluate_model, load_data, load_model, load_params
    from advgame.report.leaderboard import leaderboard
    from advgame.runtime import setup_torch

    name = a.name or Path(a.model).stem
    out = _out_path(a, name)
    p = load_params(a.params)
    setup_torch(p.run.threads)  # as the evaluation stages: the same bits for the same inputs
    x, y = load_data(a.data, a.n or (0 if a.data else p.eval.n_main))
    model = load_model(a.model, a.arch, tuple(x.shape), a.classes)
    row = evaluate_model(model, x, y, a.eta, etas=a.etas, params=p, name=name, device=a.device)
    save_json(row, out)
    failed = [k for k, v in row["sanity"].items() if v is False]
    print(f"wrote {out} ({len(x)} images, {row['seconds']:.1f} s); sanity checks: "
          + (f"FAIL {', '.join(failed)} (see sanity_detail)" if failed else "pass"))
    study = load_json(a.results) if Path(a.results).exists() else {}
    print("\n".join(leaderboard(row, study, a.eta)))
    if not study:
        print(f"({a.results} not found: no study rows to compare with)")


RUN = {"pipeline": _pipeline, "seeds": _seeds, "server": _server, "summary": _summary, "evaluate": _evaluate,
       "verify": _verify, "warm": _warm}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="advgame", description=__doc__.split("\n\n")[0],
                                 epilog="`advgame <command> --help` for a command's options")
    sub = ap.add_subparsers(dest="command", metavar="command", required=True)
    for name, text in COMMANDS.items():
        sub.add_parser(name, help=text, add_help=False)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in RUN:
        parser().parse_args(argv)  # the commands' list for --help, or one line naming them
    prog, sys.argv[0] = sys.argv[0], f"advgame {argv[0]}"  # the tools' usage lines name this command
    try:
        return RUN[argv[0]](argv[1:]) or 0
    finally:
        sys.argv[0] = prog


if __name__ == "__main__":
    raise SystemExit(main())
