"""What auth's operations take and answer: validated on the way in, and its OpenAPI document."""

from __future__ import annotations

from pydantic import BaseModel, Field

from shoplib.api import Body, matching


class Credentials(Body):
    username: str = matching(r"^[A-Za-z0-9_.-]{1,64}$", "1-64 letters, digits, . _ - only")
    password: str = Field(min_length=1, max_length=256)


class Token(BaseModel):
    access_token: str
    token_type: str
    expires_in: int = Field(description="seconds")


class Principal(BaseModel):
    sub: str
    roles: list[str]
    expires_at: int = Field(description="Unix time")
