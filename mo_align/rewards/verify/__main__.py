"""``python -m mo_align.rewards.verify``: the math-verify server, started by :class:`~.client.VerifyClient`."""

from mo_align.rewards.verify.server import serve


if __name__ == "__main__":
    serve()
