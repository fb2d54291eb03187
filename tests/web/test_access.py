"""The HTTP face is closed without the printed token, and a browser signs in once."""

from __future__ import annotations

from pathlib import Path

import pytest
from klein import Klein
from treq.testing import StubTreq
from twisted.internet.defer import inlineCallbacks
from twisted.web.resource import IResource

from pibridge.web.access import COOKIE_NAME, AccessGuard, AccessPolicy

TOKEN = "printed-token-123"


def guarded(tmp_path: Path) -> tuple[StubTreq, AccessPolicy]:
    app = Klein()

    @app.route("/api/capabilities")
    def capabilities(request: object) -> bytes:
        return b'{"ok": true}'

    @app.route("/")
    def page(request: object) -> bytes:
        return b"the page"

    policy = AccessPolicy.for_state_dir(tmp_path, TOKEN)
    resource: IResource = AccessGuard(app.resource(), policy)
    return StubTreq(resource), policy


def result_of(deferred: object) -> object:
    results: list[object] = []
    deferred.addBoth(results.append)  # type: ignore[attr-defined]
    assert results, "the in-memory request did not finish"
    return results[0]


@inlineCallbacks
def _get(client: StubTreq, url: str, **kwargs: object):  # type: ignore[no-untyped-def]
    response = yield client.get(url, allow_redirects=False, **kwargs)
    body = yield response.content()
    return response, body


def get(client: StubTreq, url: str, **kwargs: object) -> tuple[object, bytes]:
    return result_of(_get(client, url, **kwargs))  # type: ignore[return-value]


def test_api_without_credentials_is_refused_with_json(tmp_path: Path) -> None:
    client, _ = guarded(tmp_path)
    response, body = get(client, "http://127.0.0.1/api/capabilities")
    assert response.code == 401  # type: ignore[attr-defined]
    assert b'"unauthorised"' in body
    assert TOKEN.encode() not in body


def test_page_without_credentials_says_what_to_do(tmp_path: Path) -> None:
    client, _ = guarded(tmp_path)
    response, body = get(client, "http://127.0.0.1/")
    assert response.code == 401  # type: ignore[attr-defined]
    assert b"Open the URL the server printed" in body


def test_wrong_token_is_refused(tmp_path: Path) -> None:
    client, _ = guarded(tmp_path)
    response, _ = get(client, "http://127.0.0.1/?token=guess")
    assert response.code == 401  # type: ignore[attr-defined]
    response, _ = get(
        client, "http://127.0.0.1/api/capabilities", headers={"authorization": "Bearer guess"}
    )
    assert response.code == 401  # type: ignore[attr-defined]


def test_printed_url_signs_the_browser_in_and_drops_the_token(tmp_path: Path) -> None:
    client, _ = guarded(tmp_path)
    response, _ = get(client, f"http://127.0.0.1/?agent_mode=pi&token={TOKEN}")
    assert response.code == 303  # type: ignore[attr-defined]
    headers = response.headers  # type: ignore[attr-defined]
    assert headers.getRawHeaders("location") == ["/?agent_mode=pi"]
    [cookie] = headers.getRawHeaders("set-cookie")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert TOKEN not in cookie
    value = cookie.split(";")[0].split("=", 1)[1]
    response, body = get(
        client, "http://127.0.0.1/api/capabilities", cookies={COOKIE_NAME.decode(): value}
    )
    assert response.code == 200  # type: ignore[attr-defined]
    assert body == b'{"ok": true}'


def test_bearer_token_lets_programs_in(tmp_path: Path) -> None:
    client, _ = guarded(tmp_path)
    response, body = get(
        client, "http://127.0.0.1/api/capabilities", headers={"authorization": f"Bearer {TOKEN}"}
    )
    assert response.code == 200  # type: ignore[attr-defined]
    assert body == b'{"ok": true}'


def test_cookie_survives_a_restart_but_the_token_changes(tmp_path: Path) -> None:
    first = AccessPolicy.for_state_dir(tmp_path)
    second = AccessPolicy.for_state_dir(tmp_path)
    assert first.token != second.token
    assert first.cookie_value() == second.cookie_value()
    assert (tmp_path / "http" / "cookie.key").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("header", [b"Basic abc", b"Bearer", b"", b"bearer printed-token-12"])
def test_malformed_authorisation_headers_are_refused(tmp_path: Path, header: bytes) -> None:
    policy = AccessPolicy.for_state_dir(tmp_path, TOKEN)
    assert not policy.bearer_matches(header)
