"""The MLflow model registry of the study: one registered model per final defender,
`advgame-<defender>`, whose version carries the defender's evaluation (clean, worst-case and
PGD-curr error at the training eta, from reports/metrics.json) and whose alias `study`
points at the version of the current study. Only tracking.py calls this (Tracker.register_defenders).

The version registered is the newest logged model named for the defender (its training stage
logs it; see Tracker.log_model) from a finished run. A version already under the alias with the
same logged model is kept (a rerun of the report registers nothing new), only its metrics are
refreshed.
"""
from __future__ import annotations

from pathlib import Path

from advgame import attack_table
from advgame.artifacts import load_json
from advgame.names import METRICS, final_defenders, registered_model

ALIAS = "study"
# a version's tags: the attack table's single-attack headline cells
HEADLINE = [a.headline[1] for a in attack_table.headline() if not a.family]


def eval_metrics(defender: str, root: str | Path = ".") -> dict[str, float]:
    """clean, worst-case and PGD-curr error at the training eta: the defender's row of
    reports/metrics.json, the headline stage's (a defender with a detector reports pgd-adaptive
    as its PGD-curr), so the registry and the headline agree."""
    f = Path(root) / METRICS
    row = load_json(f).get(defender, {}) if f.exists() else {}  # none yet: a version without tags
    return {k: float(row[k]) for k in HEADLINE if k in row}


def latest_logged_model(client, exp_id: str, name: str, dvc_exp: str = ""):
    """The newest logged model of this name whose run finished in the same place as the report:
    the workspace (`dvc_exp` "") or the DVC experiment of that name, else (inside an experiment
    that took the model from DVC's cache, not training it) the workspace's. Experiments log into
    the same store (e.g. the seed experiments of `make seeds`); their models are never the
    workspace's. None if there is none."""
    models = client.search_logged_models([exp_id], filter_string=f"name = '{name}'",
                                         order_by=[{"field_name": "creation_timestamp", "ascending": False}],
                                         max_results=200)
    by_place: dict[str, object] = {}
    for m in models:
        if not m.source_run_id:
            continue
        run = client.get_run(m.source_run_id)
        if run.info.status == "FINISHED":
            by_place.setdefault(run.data.tags.get("advgame.dvc_exp", ""), m)
    return by_place.get(dvc_exp) or by_place.get("")


def register_defenders(tracker, params, root: str | Path = ".") -> dict[str, str]:
    """Register each final defender's model; returns {defender: version} of those registered.
    A defender whose model was never logged (tracking was off when it trained) is skipped and
    named on stderr."""
    import sys

    import mlflow

    client = tracker.client
    own = client.get_run(tracker.run_id)
    exp_id, dvc_exp = own.info.experiment_id, own.data.tags.get("advgame.dvc_exp", "")
    eta = params.attack.eta
    done, missing = {}, []
    for d in final_defenders(params):
        logged = latest_logged_model(client, exp_id, d, dvc_exp)
        if logged is None:
            missing.append(d)
            continue
        name = registered_model(d)
        version = _current_version(client, name, logged.model_id)
        if version is None and (version := _version_of(client, name, logged.model_id)) is not None:
            client.set_registered_model_alias(name, ALIAS, version)  # registered before: move back
        if version is None:
            if not client.search_registered_models(f"name = '{name}'"):
                client.create_registered_model(name, tags={"advgame.defender": d},
                                               description=f"advgame defender {d} (arXiv 1711.04368 study)")
            version = mlflow.register_model(f"models:/{logged.model_id}", name).version
            client.set_registered_model_alias(name, ALIAS, version)
        metrics = eval_metrics(d, root)
        for k, v in metrics.items():
            client.set_model_version_tag(name, version, f"eval.{k}", f"{v:g}")
            client.log_metric(tracker.run_id, f"{d}.{k}", v, model_id=logged.model_id)
        client.set_model_version_tag(name, version, "eval.eta", f"{eta:g}")
        client.set_model_version_tag(name, version, "advgame.defender", d)
        done[d] = str(version)
    if missing:
        print(f"registry: no logged model for {', '.join(missing)} (trained with tracking off?); "
              "not registered", file=sys.stderr)
    return done


def _current_version(client, name: str, model_id: str) -> str | None:
    """The version under the `study` alias if it is this logged model already."""
    try:
        mv = client.get_model_version_by_alias(name, ALIAS)
    except Exception:  # no such model or alias yet
        return None
    # a version registered from `models:/<id>` keeps the id in its source (model_id may be None)
    return mv.version if model_id in (mv.model_id, (mv.source or "").removeprefix("models:/")) else None


def _version_of(client, name: str, model_id: str) -> str | None:
    """A version of `name` already registered from this logged model (None if none)."""
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except Exception:  # no such model yet
        return None
    for mv in versions:
        if model_id in (mv.model_id, (mv.source or "").removeprefix("models:/")):
            return mv.version
    return None
