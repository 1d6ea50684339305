"""Typed handler inputs through the real proxy: a body that does not validate against the handler's
annotation (a pydantic model here) is a 400 with the validation message, before any step, and the
invocation fails for good (one attempt, no retry)."""

from __future__ import annotations

import pydantic
import pytest

from handlers_sdk import Context, Service
from tests.component.harness import StartHarness

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

RAN: list[str] = []


class Signup(pydantic.BaseModel):
    email: str
    age: pydantic.PositiveInt


svc = Service("Signups")


def welcome(email: str) -> str:
    RAN.append(email)
    return f"welcome {email}"


@svc.handler()
async def register(ctx: Context, signup: Signup) -> Signup:
    await ctx.run("welcome", welcome, signup.email)
    return signup


async def test_a_valid_body_is_decoded_into_the_model_and_the_result_encoded(start: StartHarness) -> None:
    h = await start([svc])
    response = await h.ingress.post("/Signups/register", json={"email": "ada@example.com", "age": 36})
    assert response.status_code == 200 and response.json() == {"email": "ada@example.com", "age": 36}


async def test_an_invalid_body_is_a_terminal_400_before_any_step(start: StartHarness) -> None:
    RAN.clear()
    h = await start([svc])
    response = await h.ingress.post("/Signups/register", json={"email": "ada@example.com", "age": 0})
    assert response.status_code == 400
    assert "Input should be greater than 0" in response.json()["message"]
    view = await h.inspect(response.headers["x-restate-id"])
    assert (view["status"], view["attempt"], view["journal"], RAN) == ("completed", 1, [], [])
