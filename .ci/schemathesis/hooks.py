"""Schemathesis hooks for scripts/schemathesis: the false positives, narrowly.

Each rule below drops one kind of finding that is not a defect, and says
why the schema cannot express what the server (rightly) does. A rule only
matches the exact problem code the server answers, so a different refusal
of the same request is still a finding.
"""

from __future__ import annotations

import os

import schemathesis

# A refusal of schema-valid data that is right, by (problem `code`, the set
# of `errors[]` entries it may carry as (field, code)). None: no errors[].
_EXPECTED_REFUSALS = {
    # Codes are mailed (or shown once): one the fuzzer makes up is never
    # live (verify_email, reset_password, confirm_email_change).
    ("invalid_code", None),
}
_EXPECTED_FIELD_ERRORS = {
    # A list cursor is minted by the server under a key it holds: a made-up
    # string that matches the schema is still not one the list returned.
    ("cursor", "invalid_cursor"),
    # The date of birth is checked against today (in the past, at least 13
    # years ago, after 1900), which no static schema can say.
    ("date_of_birth", "too_young"),
    ("date_of_birth", "out_of_range"),
    ("date_of_birth", "in_future"),
    # A new password is refused for what no schema can express: its
    # strength score, the common-password list, containing the address,
    # and its length counted after NFKC (composing characters can shorten
    # a string the schema's minLength counted as long enough).
    ("password", "password_too_short"),
    ("password", "password_too_long"),
    ("new_password", "password_too_short"),
    ("new_password", "password_too_long"),
    ("password", "password_common"),
    ("password", "password_contains_email"),
    ("password", "password_too_weak"),
    ("new_password", "password_common"),
    ("new_password", "password_contains_email"),
    ("new_password", "password_too_weak"),
    # Asking for the tier one already has depends on the account's state
    # (`standard` itself is outside the schema's enum).
    ("requested_tier", "tier_not_higher"),
    # A merge patch of `address` is merged into the stored address; where
    # none is stored, the patch must hold every required member, which
    # depends on the account's state, not on the schema (AddressPatch).
    ("address.line1", "missing_field"),
    ("address.city", "missing_field"),
    ("address.postal_code", "missing_field"),
    ("address.country", "missing_field"),
    # Only an approval has an expiry: `expires_in_days` with `deny`. The
    # schema states it in prose; a oneOf on `decision` would say it, at the
    # price of a contract much harder to read for this one rule.
    ("expires_in_days", "not_allowed"),
}


def _problem(response):
    try:
        body = response.json()
    except Exception:
        return None
    return body if isinstance(body, dict) else None


def _is_expected_refusal(response) -> bool:
    problem = _problem(response)
    if problem is None:
        return False
    code = problem.get("code")
    errors = problem.get("errors")
    if response.status_code == 400 and (code, None) in _EXPECTED_REFUSALS and not errors:
        return True
    if response.status_code == 422 and code == "validation_failed" and errors:
        return all(
            isinstance(e, dict) and (e.get("field"), e.get("code")) in _EXPECTED_FIELD_ERRORS
            for e in errors
        )
    return False


# The header values schemathesis.toml fixes under [parameters]: the fixed
# value replaces whatever was generated, so a "negative" case of one of
# these headers reaches the server with the valid value, and its
# acceptance is no finding. (X-Request-Id could not be refused anyway: a
# malformed one is replaced by a generated id, by design.)
_FIXED_HEADERS = {
    "X-Client-Platform": "web",
    "X-Client-Version": "1.0.0",
    "X-Request-Id": "schemathesis",
    "X-App-Install-Id": "3f2b8c1e-6d4a-4f7b-9c2e-8a1d5e7f9b03",
}


def _only_a_fixed_header(message: str, case) -> bool:
    components = [line.strip() for line in message.splitlines() if "Invalid component" in line]
    if len(components) != 1:
        return False
    for name, value in _FIXED_HEADERS.items():
        if components[0].startswith(f"Invalid component: parameter `{name}` in header - "):
            sent = {k.lower(): v for k, v in (case.headers or {}).items()}.get(name.lower())
            return sent == value
    return False


def _only_undeclared_headers(message: str) -> bool:
    # HTTP says a recipient ignores header fields it does not recognise
    # (RFC 9110, section 5.1); proxies and SDKs add their own. The server
    # cannot refuse them, so "an object with unexpected properties" in the
    # headers is not negative data.
    components = [line for line in message.splitlines() if "Invalid component" in line]
    return components == ["Invalid component: in header - object with unexpected properties"] or (
        len(components) == 1 and components[0].strip().endswith("in header - object with unexpected properties")
    )


# Findings known and accepted, each with its reason, would be listed here
# (the script prints them after the run; SCHEMATHESIS_STRICT=1 fails on
# them). None today: the four found while #13 was built (control characters
# echoed in problem text, the client-version pattern, the admin PATCH's
# nulls, an integral float for an integer member) are fixed.
def _merge_patch_address(message: str, case) -> bool:
    """A merge patch (RFC 7396) of PATCH /v1/me may leave out required
    members of `address`: they are kept from the stored address
    (AddressPatch). A negative case built from the plain-JSON schema
    (Address) but sent as a merge patch is rightly accepted."""
    if case.operation.label != "PATCH /v1/me":
        return False
    headers = {k.lower(): v for k, v in (case.headers or {}).items()}
    media = getattr(case, "media_type", None) or headers.get("content-type") or ""
    if "merge-patch" not in media:
        return False
    components = [line.strip() for line in message.splitlines() if "Invalid component" in line]
    return bool(components) and all(
        c.startswith("Invalid component: address -> Missing required property") for c in components
    )


def _known_elsewhere(failure, case, response) -> str | None:
    return None


@schemathesis.hook
def filter_failure(context, failure, case, response) -> bool:
    if failure.code == "ST202" and _is_expected_refusal(response):
        return False
    if failure.code == "ST201" and (
        _only_undeclared_headers(failure.message or "")
        or _only_a_fixed_header(failure.message or "", case)
        or _merge_patch_address(failure.message or "", case)
    ):
        return False
    known = _known_elsewhere(failure, case, response)
    if known is not None:
        log = os.environ.get("SCHEMATHESIS_KNOWN_LOG")
        if log:
            with open(log, "a", encoding="utf-8") as f:
                f.write(f"{failure.code} {case.operation.label}: {known}\n")
        return False
    return True
