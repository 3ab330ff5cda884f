"""What the client raises: `ApiError` for an answer the API refused (its status, code and
detail), `Unavailable` when no node answered at all."""
from __future__ import annotations


class ApiError(Exception):
    def __init__(self, status: int, body: dict) -> None:
        self.status = status
        self.body = body
        self.code = body.get("error", f"http_{status}")
        self.detail = body.get("detail", "")
        super().__init__(f"{status} {self.code}: {self.detail}")


class Unavailable(Exception):
    """No node of the list answered (down, unreachable, or still shedding load)."""
