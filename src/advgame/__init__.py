"""advgame: the attacker-defender game for image classifiers (Hamm & Mehra, arXiv 1711.04368)."""


class UserError(Exception):
    """An error the user can fix (bad params, missing data, unreachable server, corrupt file).

    Stages print its message as one line and exit non-zero, without a traceback.
    """


__all__ = ["UserError"]
