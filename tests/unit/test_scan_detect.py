"""keysafe.scanning's detectors: every known format in realistic context, the catalog's
variable names, false-positive traps, inline allow comments, masking and fingerprints."""

from __future__ import annotations

import base64
import json
import random
import string

import pytest

from keysafe.catalog import Catalog
from keysafe.scanning.detect import Detector
from keysafe.scanning.findings import Finding, fingerprint, mask
from keysafe.scanning.rules import builtin_rules, rules_for

A62 = string.ascii_letters + string.digits
HEX = "0123456789abcdef"
R = random.Random(20240607)


def rs(n: int, alphabet: str = A62) -> str:
    return "".join(R.choice(alphabet) for _ in range(n))


def detector() -> Detector:
    cat = Catalog.builtin()
    return Detector(rules_for(cat), cat)


def scan(text: str, path: str = "app/settings.py") -> list[Finding]:
    return list(detector().scan(text, path).findings)


def pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


# (rule id, file, text before the value, value, text after) — realistic surroundings.
KNOWN: list[tuple[str, str, str, str, str]] = [
    ("openai-api-key", ".env", "OPENAI_API_KEY=", f"sk-proj-{rs(74, A62 + '_-')}", ""),
    ("openai-api-key", "nb.py", 'client = OpenAI(api_key="', f"sk-{rs(20)}T3BlbkFJ{rs(20)}",
     '")'),
    ("anthropic-api-key", "config.yaml", "anthropic:\n  key: ",
     f"sk-ant-api03-{rs(93, A62 + '_-')}AA", ""),
    ("openrouter-api-key", "app.js", 'const key = "', f"sk-or-v1-{rs(64, HEX)}", '";'),
    ("slack-bot-token", "settings.py", 'SLACK_BOT_TOKEN = "',
     f"xoxb-{rs(12, string.digits)}-{rs(13, string.digits)}-{rs(24)}", '"'),
    ("slack-app-token", "app.toml", 'app_token = "',
     f"xapp-1-A{rs(10, string.ascii_uppercase)}-{rs(13, string.digits)}-{rs(64, HEX)}", '"'),
    ("slack-token", "bot.py", 'user_token = "',
     f"xoxp-{rs(12, string.digits)}-{rs(12, string.digits)}-{rs(32)}", '"'),
    ("slack-webhook-url", "deploy.sh", "curl -X POST ",
     f"https://hooks.slack.com/services/T{rs(8, string.ascii_uppercase)}"
     f"/B{rs(10, string.ascii_uppercase)}/{rs(24)}",
     " -d @msg.json"),
    ("github-token", ".github/env", "export GITHUB_TOKEN=", f"ghp_{rs(36)}", ""),
    ("github-token", "ci.yaml", "token: ",
     f"github_pat_11{rs(20, string.ascii_uppercase)}_{rs(59)}", ""),
    ("gitlab-token", "creds.ini", "private_token = ", f"glpat-{rs(20)}", ""),
    ("aws-access-key-id", "settings.py", 'AWS_ACCESS_KEY_ID = "',
     f"AKIA{rs(16, string.ascii_uppercase + '234567')}", '"'),
    ("aws-secret-access-key", "credentials", "aws_secret_access_key = ", rs(40, A62 + "/+"),
     ""),
    ("stripe-secret-key", "billing.py", 'stripe.api_key = "', f"sk_live_{rs(99)}", '"'),
    ("stripe-secret-key", "billing.yaml", "restricted: ", f"rk_test_{rs(40)}", ""),
    ("stripe-webhook-secret", ".env", "STRIPE_WEBHOOK_SECRET=", f"whsec_{rs(32)}", ""),
    ("huggingface-token", "nb.py", 'login(token="', f"hf_{rs(34)}", '")'),
    ("google-api-key", "maps.js", 'const MAPS = "', f"AIza{rs(35, A62 + '_-')}", '";'),
    ("groq-api-key", ".env", "GROQ_API_KEY=", f"gsk_{rs(52)}", ""),
    ("notion-token", "notion.py", 'NOTION = "', f"ntn_{rs(46)}", '"'),
    ("sendgrid-api-key", "mail.py", 'SENDGRID = "', f"SG.{rs(22)}.{rs(43)}", '"'),
    ("npm-token", ".npmrc", "//registry.npmjs.org/:_authToken=", f"npm_{rs(36)}", ""),
    ("pypi-token", "release.sh", "twine upload --password ",
     f"pypi-AgEIcHlwaS5vcmc{rs(120, A62 + '_-')}", " dist/*"),
    ("telegram-bot-token", "bot.env", "TELEGRAM_BOT_TOKEN=",
     f"{rs(10, string.digits)}:AA{rs(33)}", ""),
    ("mailchimp-api-key", "mail.json", '{"mailchimp": "', f"{rs(32, HEX)}-us14", '"}'),
    ("azure-storage-key", "app.config",
     "DefaultEndpointsProtocol=https;AccountName=acme;AccountKey=",
     base64.b64encode(R.randbytes(64)).decode(), ";EndpointSuffix=core.windows.net"),
    ("database-url", ".env", "DATABASE_URL=",
     f"postgresql://app:{rs(20)}@db.internal:5432/prod", ""),
    ("database-url", "compose.yml", "MONGO_URL: ", f"mongodb+srv://svc:{rs(18)}@c0.mongodb.net/x",
     ""),
    ("jwt", "client.py", 'TOKEN = "',
     base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').decode().rstrip("=") + "."
     + base64.urlsafe_b64encode(b'{"sub":"1234567890","name":"svc"}').decode().rstrip("=")
     + "." + rs(43, A62 + "_-"), '"'),
]


@pytest.mark.parametrize(("rule", "path", "before", "value", "after"), KNOWN,
                         ids=[f"{k[0]}-{i}" for i, k in enumerate(KNOWN)])
def test_known_format_detected_in_context(rule: str, path: str, before: str, value: str,
                                          after: str) -> None:
    text = f"# header\n{before}{value}{after}\n# footer\n"
    found = scan(text, path)
    assert [f.rule for f in found] == [rule]
    f = found[0]
    assert f.secret.reveal() == value
    assert f.line == 2 + before.count("\n")
    assert text[f.start:f.end] == value


def test_private_key_detected_and_its_line_is_the_header() -> None:
    key = pem()
    found = scan("x = 1\n" + key, "deploy/tls/server.key")
    assert [(f.rule, f.line) for f in found] == [("private-key", 2)]


def test_service_account_json_private_key_detected() -> None:
    doc = {"type": "service_account", "project_id": "p", "private_key": pem(),
           "client_email": "x@p.iam.gserviceaccount.com"}
    text = json.dumps(doc, indent=2)
    found = scan(text, "sa.json")
    assert [f.rule for f in found] == ["private-key"]


def test_every_builtin_rule_has_a_detection_case() -> None:
    tested = {k[0] for k in KNOWN} | {"private-key"}
    assert {r.id for r in builtin_rules()} == tested


@pytest.mark.parametrize(("line", "entry"), [
    (f"DEEPGRAM_API_KEY={rs(40, HEX)}", "deepgram_api_key"),
    (f"MISTRAL_API_KEY={rs(32)}", "mistral_api_key"),
    (f'ELEVENLABS_API_KEY="{rs(32, HEX)}"', "elevenlabs_api_key"),
    (f'COHERE_API_KEY = "{rs(40)}"', "cohere_api_key"),
    (f"  together_api_key: {rs(64, HEX)}", "together_api_key"),
    (f'LIVEKIT_API_SECRET = "{rs(43)}"', "livekit_api_secret"),
    (f"SLACK_SIGNING_SECRET={rs(32, HEX)}", "slack_signing_secret"),
    (f'JWT_SECRET = os.environ.get("JWT_SECRET", "{rs(64)}")', "jwt_secret"),
    (f'settings.SECRET_KEY = "django-insecure-{rs(50, string.ascii_lowercase + "!@#%^&*(-_=+)")}"',
     "secret_key"),
    (f"DATABASE_PASSWORD={rs(6)}#{rs(7)}", "database_password"),
])
def test_catalog_variables_without_a_prefix_found_by_name(line: str, entry: str) -> None:
    found = scan(f"{line}\n", "config/.env" if "=" in line.split()[0] else "config.yaml")
    assert [(f.rule, f.entry) for f in found] == [("high-entropy-assignment", entry)]


@pytest.mark.parametrize("line", [
    f'client_secret = "{rs(32)}"',
    f'"api_key": "{rs(40)}",',
    f'db_password = "{rs(5)}%{rs(6)}"',
    f'os.environ["PAYMENTS_TOKEN"] = "{rs(36)}"',
    f"    signingKey: '{rs(48)}',",
])
def test_high_entropy_assignment_to_secret_names(line: str) -> None:
    assert [f.rule for f in scan(line + "\n", "src/app.js")] == ["high-entropy-assignment"]


TRAPS = [
    ("placeholder sk-xxxx", ".env", "OPENAI_API_KEY=sk-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"),
    ("placeholder text", "settings.py", 'OPENAI_API_KEY = "sk-your-openai-api-key-goes-here-123"'),
    ("AWS docs example", "settings.py", 'AWS_ACCESS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"'),
    ("AWS docs secret", "credentials",
     "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    ("angle brackets", "config.yaml", "api_key: <your-api-key>"),
    ("env reference", ".env", "STRIPE_SECRET_KEY=${STRIPE_SECRET_KEY}"),
    ("keysafe reference", ".env", "OPENAI_API_KEY=keysafe://acme/shared/openai_api_key"),
    ("template", "settings.py", 'SECRET_KEY = "{{ secret_key }}"'),
    ("uuid", "settings.py", 'API_TOKEN = "3f1c8a52-7d4e-4b9a-9c1e-2a7f0d6b5e41"'),
    ("identifier", "settings.py", 'SECRET_KEY = "django_tests_secret_key"'),
    ("expression", "settings.py", "api_key = settings.OPENAI_API_KEY_FROM_VAULT2"),
    ("call", "app.py", 'token = get_token("service-account-2024")'),
    ("password hash", "fixtures.py",
     'password = "pbkdf2_sha256$600000$abcDEF123$ZyXwVuTsRqPoNmLkJiHgFeDcBa9876543210abc="'),
    ("tutorial password", "docker-compose.yml", "POSTGRES_PASSWORD=postgres"),
    ("tutorial password 2", "settings.py", 'password = "Secret123!"'),
    ("db url placeholder", ".env", "DATABASE_URL=postgres://user:password@localhost/db"),
    ("db url template", ".env", "DATABASE_URL=postgres://app:${DB_PASSWORD}@db/app"),
    ("cache key", "app.py", 'cache_key = "a8f5f167f44f4964e6c998dee827110c"'),
    ("sha256 digest", "Dockerfile",
     "FROM python@sha256:9b2c4e1f0a8d7c6b5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d"),
    ("max tokens", "app.py", "max_tokens = 4096"),
    ("token url", "app.py", 'TOKEN_URL = "https://oauth2.googleapis.com/token"'),
    ("pem header only", "docs.md", "The file starts with -----BEGIN RSA PRIVATE KEY----- ..."),
]


@pytest.mark.parametrize(("why", "path", "line"), TRAPS, ids=[t[0] for t in TRAPS])
def test_false_positive_traps_not_flagged(why: str, path: str, line: str) -> None:
    assert scan(line + "\n", path) == []


def test_lock_file_hashes_not_flagged(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from keysafe.scanning import scan as run_scan

    lock = {"name": "x", "lockfileVersion": 3, "packages": {"node_modules/a": {
        "version": "1.0.0", "resolved": "https://registry.npmjs.org/a/-/a-1.0.0.tgz",
        "integrity": "sha512-" + base64.b64encode(R.randbytes(64)).decode()}}}
    (tmp_path / "package-lock.json").write_text(json.dumps(lock, indent=2))
    (tmp_path / "poetry.lock").write_text(
        "[[package]]\nname = \"a\"\nfiles = [\n"
        + "".join(f'  {{file = "a-{i}.whl", hash = "sha256:{rs(64, HEX)}"}},\n'
                  for i in range(20)) + "]\n")
    # Even without the built-in skip, integrity and file hashes carry no secret name.
    report = run_scan([tmp_path])
    assert report.findings == []
    assert report.skipped == 2
    text = (tmp_path / "poetry.lock").read_text() + json.dumps(lock)
    assert scan(text, "deps.txt") == []


def test_base64_image_in_notebook_not_flagged() -> None:
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + random.Random(3).randbytes(30000)).decode()
    # Keys that happen to occur inside the blob must not be reported either.
    png = png[:1000] + "AKIA" + "Q" * 16 + png[1020:]
    nb = {"cells": [{"cell_type": "code", "source": ["plt.plot(x)\n"], "outputs": [
        {"data": {"image/png": png}, "output_type": "display_data"}]}]}
    assert scan(json.dumps(nb, indent=1), "analysis.ipynb") == []


def test_base64_data_uri_not_flagged() -> None:
    img = base64.b64encode(random.Random(4).randbytes(5000)).decode()
    assert scan(f'<img src="data:image/png;base64,{img}">\n', "index.html") == []


# -- allow comments ------------------------------------------------------------------
@pytest.mark.parametrize("comment", ["  # keysafe: allow", "  # keysafe:allow",
                                     "  // KEYSAFE: ALLOW test key",
                                     "  # pragma: allowlist secret"])
def test_inline_allow_comment_suppresses(comment: str) -> None:
    key = f"ghp_{rs(36)}"
    result = detector().scan(f'TOKEN = "{key}"{comment}\nOTHER = "{key}"\n', "a.py")
    assert [f.line for f in result.findings] == [2]
    assert result.allowed == 1


def test_allow_comment_on_the_line_before() -> None:
    key = f"ghp_{rs(36)}"
    result = detector().scan(f"# keysafe: allow (a revoked test token)\nGITHUB_TOKEN={key}\n",
                             ".env")
    assert result.findings == ()
    assert result.allowed == 1


# -- masking and fingerprints --------------------------------------------------------
def test_findings_are_masked_everywhere() -> None:
    canary = f"sk-proj-{rs(60)}"
    (f,) = scan(f"OPENAI_API_KEY={canary}\n", ".env")
    assert f.preview == f"sk-p…({len(canary)} chars)"
    for shown in (repr(f), str(f), json.dumps(f.to_dict()), f"{f.secret}", repr(f.secret)):
        assert canary not in shown
        assert canary[4:12] not in shown


def test_mask_never_shows_more_than_a_quarter() -> None:
    assert mask("Xk9#mP2v") == "Xk…(8 chars)"
    assert mask("abc") == "…(3 chars)"


def test_fingerprint_ignores_line_moves_but_not_path_or_value() -> None:
    key = f"ghp_{rs(36)}"
    a = scan(f'T = "{key}"\n', "a.py")[0]
    b = scan(f'\n\n\nT = "{key}"\n', "a.py")[0]
    c = scan(f'T = "{key}"\n', "b.py")[0]
    assert a.fingerprint == b.fingerprint == fingerprint("a.py", key)
    assert c.fingerprint != a.fingerprint
    assert key not in a.fingerprint


def test_team_catalog_pattern_becomes_a_rule(tmp_path) -> None:  # type: ignore[no-untyped-def]
    team = tmp_path / "catalog.toml"
    team.write_text('[[secret]]\nname = "acme_api_key"\ndisplay_name = "Acme API Key"\n'
                    'category = "integrations"\npattern = "acme_[A-Za-z0-9]{32}"\n')
    cat = Catalog.load(team)
    key = f"acme_{rs(32)}"
    found = Detector(rules_for(cat), cat).scan(f"client = Acme('{key}')\n", "a.py").findings
    assert [(f.rule, f.entry) for f in found] == [("catalog-acme-api-key", "acme_api_key")]
