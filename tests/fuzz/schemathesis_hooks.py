"""schemathesis hooks (`SCHEMATHESIS_HOOKS=tests.fuzz.schemathesis_hooks`): the problem check.

`problem_json`: every error response (4xx, 5xx) is an RFC 9457 problem document, as
DESIGN §3 promises: media type `application/problem+json`, an object with the string
members `type`, `title`, `detail` (non-empty) and `status` equal to the HTTP status.
"""

from __future__ import annotations

import orjson
import schemathesis
from schemathesis import Case, CheckContext, Response

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_STRINGS = ("type", "title", "detail")


@schemathesis.check
def problem_json(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """Every error response is an RFC 9457 problem document."""
    del ctx
    if response.status_code < 400:
        return None
    where = f"{case.method} {case.formatted_path} answered {response.status_code}"
    media = response.headers.get("content-type", [""])[0].partition(";")[0].strip().lower()
    if media != PROBLEM_MEDIA_TYPE:
        msg = f"{where} with content-type {media!r}, not {PROBLEM_MEDIA_TYPE}"
        raise AssertionError(msg)
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        msg = f"{where} with a problem body that is not JSON: {exc}"
        raise AssertionError(msg) from None
    if not isinstance(body, dict):
        msg = f"{where} with a problem that is not an object: {body!r}"
        raise AssertionError(msg)  # noqa: TRY004  # schemathesis reports AssertionError as a failure
    for key in PROBLEM_STRINGS:
        if not isinstance(body.get(key), str) or not body[key]:
            msg = f"{where}: the problem's {key!r} is not a non-empty string: {body!r}"
            raise AssertionError(msg)
    if body.get("status") != response.status_code:
        msg = f"{where}: the problem's status is {body.get('status')!r}"
        raise AssertionError(msg)
    return True
