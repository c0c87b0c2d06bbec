"""advgame: the attacker-defender game for image classifiers (Hamm & Mehra, arXiv 1711.04368)."""
import importlib


class UserError(Exception):
    """An error the user can fix (bad params, missing data, unreachable server, corrupt file).

    Stages print its message as one line and exit non-zero, without a traceback.
    """


# the public API beside the modules, imported on first use (PEP 562) so that `import advgame`
# (config, the check-params stage) stays torch-free: name -> its module
_LAZY = {"evaluate_model": "advgame.evaluation.own_model"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'advgame' has no attribute '{name}'")


__all__ = ["UserError", "evaluate_model"]
