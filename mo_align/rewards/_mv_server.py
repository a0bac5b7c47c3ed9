"""``python -m mo_align.rewards._mv_server``: the math-verify server (see :mod:`mo_align.rewards.verify_pool`)."""

from mo_align.rewards.verify_pool import serve


if __name__ == "__main__":
    serve()
