"""scripts/contract, step 5: a phone's journey through the generated Python
client, against the running server.

    journey.py BASE_URL MAIL_DIR PACKAGE_PARENT_DIR

register -> the code from the captured mail -> verify the address (signed
in) -> turn on TOTP -> sign out -> sign in (result: mfa_required) -> the
second factor (result: tokens) -> refresh -> GET /v1/me; then an app below
the Android minimum (426, ClientUpgradeRequired), a made-up access token
and a wrong password (401, Problem).

Every answer must parse to the typed model its operation documents for that
status, with every member the server sent known to the model (a member the
model does not have would be silently dropped by the client). Prints one
line per call and exits 1 on any mismatch.
"""

from __future__ import annotations

import base64
import glob
import hashlib
import hmac
import json
import re
import secrets
import struct
import sys
import time
import uuid

base, mail_dir, package_parent = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, package_parent)

from mobile_backend_client import AuthenticatedClient, Client  # noqa: E402
from mobile_backend_client.api.accounts import (  # noqa: E402
    complete_mfa,
    login,
    register,
    verify_email,
)
from mobile_backend_client.api.me import get_me  # noqa: E402
from mobile_backend_client.api.mfa import confirm_totp, setup_totp  # noqa: E402
from mobile_backend_client.api.sessions import logout, refresh_tokens  # noqa: E402
from mobile_backend_client.models import (  # noqa: E402
    ClientPlatform,
    ClientUpgradeRequired,
    CompleteMfaRequest,
    LoginRequest,
    MeResponse,
    MfaRequired,
    Problem,
    ProblemCode,
    RecoveryCodes,
    RefreshRequest,
    RegisterRequest,
    RegistrationAccepted,
    TokenPair,
    TotpCodeRequest,
    TotpSetup,
    TotpSetupRequest,
    VerifyEmailRequest,
)

# openapi-python-client types X-App-Install-Id (`format: uuid`) as a UUID
# but puts the object into the headers as it is, which httpx refuses: a
# Python app passes the text form (Swift and Kotlin clients convert it).
INSTALL_ID = str(uuid.uuid4())
PHONE = {
    "x_client_platform": ClientPlatform.IOS,
    "x_client_version": "1.0.0",
    "x_app_install_id": INSTALL_ID,
}
mismatches: list[str] = []


def unknown_members(model, raw, at: str = "") -> list[str]:
    """Members of `raw` (the JSON sent) that the parsed model does not hold."""
    if not isinstance(raw, dict) or not hasattr(model, "to_dict"):
        return []
    held = model.to_dict()
    out = [f"{at}{k}" for k in raw if k not in held]
    for k, v in raw.items():
        sub = getattr(model, k, None)
        if isinstance(v, dict):
            out += unknown_members(sub, v, f"{at}{k}.")
        elif isinstance(v, list) and isinstance(sub, list):
            for i, (m, r) in enumerate(zip(sub, v)):
                out += unknown_members(m, r, f"{at}{k}[{i}].")
    return out


def call(what: str, module, status: int, model, client=None, **kwargs):
    """One operation through the generated client; `model` None: no body."""
    client = client or Client(base_url=base, raise_on_unexpected_status=True)
    kwargs = {**PHONE, **kwargs}
    try:
        r = module.sync_detailed(client=client, **kwargs)
    except Exception as e:  # a parse failure is a mismatch, not a crash
        mismatches.append(f"{what}: the client raised {type(e).__name__}: {e}")
        print(f"  {what}: MISMATCH ({type(e).__name__}: {e})")
        return None
    raw = json.loads(r.content) if r.content else None
    wrong = []
    if r.status_code != status:
        wrong.append(f"status {r.status_code}, expected {status}: {r.content[:300]!r}")
    if model is None:
        if r.content:
            wrong.append("a body where none is documented")
    elif not isinstance(r.parsed, model):
        wrong.append(f"parsed as {type(r.parsed).__name__}, expected {model.__name__}")
    else:
        extra = unknown_members(r.parsed, raw)
        if extra:
            wrong.append(f"members the model does not know: {extra}")
    label = model.__name__ if model else "no body"
    if wrong:
        mismatches.append(f"{what}: " + "; ".join(wrong))
        print(f"  {what}: {r.status_code} MISMATCH: " + "; ".join(wrong))
    else:
        print(f"  {what}: {r.status_code} {label}")
    return r.parsed


def code_from_mail(email: str) -> str:
    for _ in range(150):
        for path in glob.glob(f"{mail_dir}/*.json"):
            with open(path) as f:
                mail = json.load(f)
            if mail["to"] == email:
                found = re.search(r"\b(\d{6})\b", mail["text"])
                if found:
                    return found.group(1)
        time.sleep(0.2)
    sys.exit(f"no verification mail for {email}")


def totp(secret_b32: str, step_offset: int = 0) -> str:
    """RFC 6238 with the server's parameters: HMAC-SHA-1, 30 s, 6 digits."""
    key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8), casefold=True)
    counter = int(time.time()) // 30 + step_offset
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    number = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return f"{number % 1_000_000:06d}"


def bearer(token: str) -> AuthenticatedClient:
    return AuthenticatedClient(base_url=base, token=token, raise_on_unexpected_status=True)


email = f"contract-{secrets.token_hex(4)}@example.com"
password = "contract " + secrets.token_urlsafe(18)

print("journey through the generated Python client:")
call("register", register, 202, RegistrationAccepted, body=RegisterRequest(email=email, password=password))
pair = call(
    "verify_email (signs in)",
    verify_email,
    200,
    TokenPair,
    body=VerifyEmailRequest(email=email, code=code_from_mail(email), password=password),
)
if not isinstance(pair, TokenPair):
    sys.exit("cannot go on without a session")
me = bearer(pair.access_token)
setup = call("setup_totp", setup_totp, 200, TotpSetup, client=me, body=TotpSetupRequest(current_password=password))
if not isinstance(setup, TotpSetup):
    sys.exit("cannot go on without a TOTP secret")
call("confirm_totp", confirm_totp, 200, RecoveryCodes, client=me, body=TotpCodeRequest(code=totp(setup.secret)))
call("logout", logout, 204, None, client=me)

challenge = call("login (MFA on)", login, 200, MfaRequired, body=LoginRequest(email=email, password=password))
if not isinstance(challenge, MfaRequired) or challenge.result != "mfa_required":
    sys.exit("cannot go on without the second step's challenge")
# A time step is accepted once per user, and the one that confirmed the
# enrolment is used: the next step's code (the server accepts one step of
# drift either way) completes the sign-in without waiting.
pair = call(
    "complete_mfa",
    complete_mfa,
    200,
    TokenPair,
    body=CompleteMfaRequest(mfa_token=challenge.mfa_token, code=totp(setup.secret, 1)),
)
if not isinstance(pair, TokenPair) or pair.result != "tokens":
    sys.exit("cannot go on without the aal2 session")
pair = call("refresh_tokens", refresh_tokens, 200, TokenPair, body=RefreshRequest(refresh_token=pair.refresh_token))
if isinstance(pair, TokenPair):
    call("get_me", get_me, 200, MeResponse, client=bearer(pair.access_token))

# The refusals a phone must be able to read.
old_app = {"x_client_platform": ClientPlatform.ANDROID, "x_client_version": "1.9.9"}
upgrade = call(
    "get_me from an Android app below the minimum",
    get_me,
    426,
    ClientUpgradeRequired,
    client=bearer(pair.access_token) if isinstance(pair, TokenPair) else None,
    **old_app,
)
if isinstance(upgrade, ClientUpgradeRequired) and upgrade.min_version != "2.0.0":
    mismatches.append(f"426 min_version {upgrade.min_version}, expected 2.0.0")
denied = call("get_me with a made-up token", get_me, 401, Problem, client=bearer("not-a-token"))
if isinstance(denied, Problem) and denied.code is not ProblemCode.INVALID_TOKEN:
    mismatches.append(f"401 code {denied.code!r}, expected invalid_token")
wrong = call(
    "login with a wrong password",
    login,
    401,
    Problem,
    body=LoginRequest(email=email, password=password + "x"),
)
if isinstance(wrong, Problem) and wrong.code is not ProblemCode.INVALID_CREDENTIALS:
    mismatches.append(f"401 code {wrong.code!r}, expected invalid_credentials")

print(f"journey: {len(mismatches)} mismatches")
for m in mismatches:
    print("  " + m)
sys.exit(1 if mismatches else 0)
