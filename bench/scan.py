"""Scanning benchmark (issue 7): ``keysafe scan`` beside detect-secrets on real sources.

    .venv/bin/python bench/scan.py                 # download, plant, scan (a few minutes)
    .venv/bin/python bench/scan.py --repeat 1 --json scan.json
    .venv/bin/python bench/scan.py --list-fp       # print every unplanted finding (masked)

1. Corpus: the sdists of the packages in ``PACKAGES`` (pinned versions) are downloaded
   from PyPI (its JSON API for the file URL, then the file, sha256-checked) into
   ``bench/.work/scan/`` (git-ignored) and unpacked, untouched, under ``corpus/``.
2. Planting: secrets of every known format (each rule of ``keysafe.scanning.rules`` and
   each catalog secret without a prefix, found by its variable name) are generated from
   a seeded RNG (random characters in each provider's documented shape; private keys are
   real keys made by ``cryptography``) and written into realistic places in each
   package: a ``.env``, YAML settings, a Kubernetes Secret, docker-compose, a Python
   settings module, a JSON test fixture, a notebook, a shell script, TOML, an INI
   credentials file, JavaScript, and lines inserted into the package's own Python
   modules. Each planted secret's file and line is the ground truth. False-positive
   traps are planted beside them: placeholders (``sk-xxxx``, ``AKIAIOSFODNN7EXAMPLE``,
   ``<your-api-key>``), references (``${VAR}``, ``keysafe://``), UUIDs, hashes, and a
   base64 PNG in a notebook output.
3. History: a git repository made of one package, where a commit adds two files with
   secrets and a later commit deletes them; only ``keysafe scan --git-history`` is run on
   it (detect-secrets has no history mode).
4. Scoring: a finding is a true positive when its (file, line) is a planted secret's;
   anything else is a false positive ("strict"), except that lines of the untouched
   packages holding genuine-looking credentials (``genuine_looking``: private keys,
   JWTs, generated keys assigned to secret names) count for neither side in the
   "reviewed" precision. Both precisions are reported.
   Several findings on one line count once. Time is wall time of the whole command
   (median of ``--repeat`` runs), on the same corpus, one after the other.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import os
import random
import re
import resource
import shutil
import statistics
import string
import subprocess
import sys
import tarfile
import time
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / ".work" / "scan"
BIN = Path(sys.executable).parent

PACKAGES: tuple[tuple[str, str], ...] = (
    ("requests", "2.32.3"),
    ("flask", "3.0.3"),
    ("django", "5.0.6"),
    ("boto3", "1.34.100"),
    ("urllib3", "2.2.2"),
    ("click", "8.1.7"),
    ("jinja2", "3.1.4"),
    ("httpx", "0.27.0"),
    ("sqlalchemy", "2.0.30"),
    ("celery", "5.4.0"),
    ("werkzeug", "3.0.3"),
    ("fastapi", "0.111.0"),
)

#: The review rule for findings on lines nothing was planted on, applied to both tools'
#: findings alike: a line is a *genuine-looking credential* (counted for neither side)
#: when it holds a PEM private key header, a JWT, or a secret-named assignment of a
#: random-looking value of 32+ characters (a generated key, like the ``openssl rand -hex
#: 32`` SECRET_KEY of a tutorial). Anything else unplanted (example passwords in docs,
#: hashes, identifiers, placeholders) is a false positive. Each tool's unplanted lines of
#: each class are listed with ``--list-fp`` for checking by hand.
_PEM = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY")
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}")
_NAMED = re.compile(r"(?i)(?:secret|key|token|passw)[A-Za-z0-9_]*[\"']?\s*[:=]\s*[rb]?[\"']?"
                    r"([A-Za-z0-9+/=_\-!@#$%^&*()]{32,})")


def genuine_looking(line: str) -> bool:
    if _PEM.search(line) or _JWT.search(line):
        return True
    m = _NAMED.search(line)
    if m is None:
        return False
    v = m.group(1)
    counts = {c: v.count(c) for c in set(v)}
    entropy = -sum(n / len(v) * math.log2(n / len(v)) for n in counts.values())
    return entropy >= 3.5 and "xxxx" not in v.lower() and "example" not in v.lower()


A62 = string.ascii_letters + string.digits
HEX = "0123456789abcdef"


# -- download -----------------------------------------------------------------------
def fetch_sdist(name: str, version: str, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    index = f"https://pypi.org/pypi/{name}/json"
    with urllib.request.urlopen(index, timeout=60) as r:
        meta = json.load(r)
    files = meta["releases"].get(version)
    if not files:
        raise SystemExit(f"{name} {version} is not on PyPI")
    sdist = next((f for f in files if f["packagetype"] == "sdist"), None)
    if sdist is None:
        raise SystemExit(f"{name} {version} has no sdist")
    target = dest / sdist["filename"]
    if not target.exists():
        tmp = target.with_suffix(".part")
        url = urllib.parse.urljoin(index, sdist["url"])  # some mirrors give relative URLs
        with urllib.request.urlopen(url, timeout=300) as r, tmp.open("wb") as fh:
            shutil.copyfileobj(r, fh)
        digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
        if digest != sdist["digests"]["sha256"]:
            tmp.unlink()
            raise SystemExit(f"{sdist['filename']}: sha256 mismatch")
        tmp.rename(target)
    return target


def unpack(archive: Path, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as z:
            z.extractall(into)
    else:
        with tarfile.open(archive) as t:
            t.extractall(into, filter="data")
    dirs = [p for p in into.iterdir() if p.is_dir()]
    return dirs[0] if len(dirs) == 1 else into


# -- secrets ------------------------------------------------------------------------
@dataclass
class Planted:
    path: str  # relative to the corpus
    line: int
    kind: str


class Gen:
    """Fake secrets in each provider's shape, from a seeded RNG."""

    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)
        self._pem: list[str] = []

    def s(self, n: int, alphabet: str = A62) -> str:
        return "".join(self.r.choice(alphabet) for _ in range(n))

    def value(self, kind: str) -> str:
        s = self.s
        match kind:
            case "openai":
                return f"sk-proj-{s(74, A62 + '_-')}T3BlbkFJ{s(74, A62 + '_-')}" \
                    if self.r.random() < 0.6 else f"sk-{s(20)}T3BlbkFJ{s(20)}"
            case "anthropic":
                return f"sk-ant-api03-{s(93, A62 + '_-')}AA"
            case "openrouter":
                return f"sk-or-v1-{s(64, HEX)}"
            case "slack_bot":
                return f"xoxb-{s(12, string.digits)}-{s(13, string.digits)}-{s(24)}"
            case "slack_app":
                return f"xapp-1-A{s(10, string.ascii_uppercase + string.digits)}-" \
                       f"{s(13, string.digits)}-{s(64, HEX)}"
            case "slack_webhook":
                return f"https://hooks.slack.com/services/T{s(8, string.ascii_uppercase)}/" \
                       f"B{s(10, string.ascii_uppercase + string.digits)}/{s(24)}"
            case "github":
                return f"ghp_{s(36)}" if self.r.random() < 0.7 else \
                    f"github_pat_11{s(20, string.ascii_uppercase + string.digits)}_{s(59)}"
            case "gitlab":
                return f"glpat-{s(20, A62 + '_-')}"
            case "aws_id":
                return f"AKIA{s(16, string.ascii_uppercase + '234567')}"
            case "aws_secret":
                return s(40, A62 + "/+")
            case "stripe":
                return f"{self.r.choice(['sk_live_', 'rk_live_', 'sk_test_'])}{s(99)}"
            case "stripe_webhook":
                return f"whsec_{s(32)}"
            case "hf":
                return f"hf_{s(34)}"
            case "google":
                return f"AIza{s(35, A62 + '_-')}"
            case "groq":
                return f"gsk_{s(52)}"
            case "notion":
                return f"ntn_{s(46)}"
            case "sendgrid":
                return f"SG.{s(22, A62 + '_-')}.{s(43, A62 + '_-')}"
            case "npm":
                return f"npm_{s(36)}"
            case "pypi":
                return f"pypi-AgEIcHlwaS5vcmc{s(150, A62 + '_-')}"
            case "telegram":
                return f"{s(10, string.digits)}:AA{s(33, A62 + '_-')}"
            case "mailchimp":
                return f"{s(32, HEX)}-us{self.r.randint(1, 21)}"
            case "azure":
                raw = base64.b64encode(self.r.randbytes(64)).decode()
                return f"DefaultEndpointsProtocol=https;AccountName=acct{s(6, 'abcdefgh')};" \
                       f"AccountKey={raw};EndpointSuffix=core.windows.net"
            case "postgres":
                return f"postgresql://app_user:{s(20)}@db.internal.example.net:5432/app"
            case "mysql":
                return f"mysql://root:{s(16)}@10.0.3.4:3306/shop"
            case "mongodb":
                return f"mongodb+srv://svc:{s(18)}@cluster0.abcde.mongodb.net/prod"
            case "redis":
                return f"redis://default:{s(24)}@cache.internal:6379/0"
            case "n8n_jwt":
                hdr = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').decode().rstrip("=")
                body = base64.urlsafe_b64encode(json.dumps(
                    {"sub": s(36, HEX), "iss": "n8n", "aud": "public-api",
                     "iat": 1718000000}).encode()).decode().rstrip("=")
                return f"{hdr}.{body}.{s(43, A62 + '_-')}"
            case "deepgram":
                return s(40, HEX)
            case "elevenlabs":
                return s(32, HEX)
            case "mistral" | "cohere_like":
                return s(32 if kind == "mistral" else 40)
            case "together":
                return s(64, HEX)
            case "livekit_secret":
                return s(43)
            case "db_password":
                return s(6) + self.r.choice("#!%&*") + s(7)
            case "jwt_secret" | "session_secret":
                return s(64, A62 + "-_")
            case "encryption_key":
                return base64.b64encode(self.r.randbytes(32)).decode()
            case "django_secret":
                return "django-insecure-" + s(50, string.ascii_lowercase + string.digits
                                               + "!@#%^&*(-_=+)")
            case "signing_secret":
                return s(32, HEX)
        raise KeyError(kind)

    def pem(self) -> str:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        key = ec.generate_private_key(ec.SECP256R1())
        return key.private_bytes(serialization.Encoding.PEM,
                                 serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()).decode()


# Each place: (relative file, builder). A builder gets the generator and returns the file
# text and the planted (line, kind) list. Lines are 1-based.
def _lines_with(entries: list[tuple[str, str | None]]) -> tuple[str, list[tuple[int, str]]]:
    text_lines, truth = [], []
    for line, kind in entries:
        text_lines.append(line)
        if kind:
            truth.append((len(text_lines), kind))
    return "\n".join(text_lines) + "\n", truth


def place_env(g: Gen) -> tuple[str, list[tuple[int, str]]]:
    return _lines_with([
        ("# local development settings", None),
        ("DEBUG=true", None),
        (f"OPENAI_API_KEY={g.value('openai')}", "openai"),
        (f"ANTHROPIC_API_KEY=\"{g.value('anthropic')}\"", "anthropic"),
        (f"DEEPGRAM_API_KEY={g.value('deepgram')}", "deepgram"),
        (f"MISTRAL_API_KEY={g.value('mistral')}", "mistral"),
        (f"DATABASE_URL={g.value('postgres')}", "postgres"),
        ("SENTRY_ENVIRONMENT=development", None),
        ("OPENROUTER_API_KEY=sk-or-v1-your-key-here", None),  # trap
        ("ELEVENLABS_API_KEY=${ELEVENLABS_API_KEY}", None),  # trap
        (f"DB_PASSWORD={g.value('db_password')}", "db_password"),
        ("REQUEST_ID=3f1c8a52-7d4e-4b9a-9c1e-2a7f0d6b5e41", None),  # trap
    ])


def place_yaml(g: Gen) -> tuple[str, list[tuple[int, str]]]:
    return _lines_with([
        ("app:", None),
        ("  name: billing", None),
        ("  log_level: info", None),
        ("stripe:", None),
        (f"  secret_key: \"{g.value('stripe')}\"", "stripe"),
        (f"  webhook_secret: {g.value('stripe_webhook')}", "stripe_webhook"),
        ("slack:", None),
        (f"  bot_token: {g.value('slack_bot')}", "slack_bot"),
        (f"  signing_secret: {g.value('signing_secret')}", "signing_secret"),
        ("  channel: \"#alerts\"", None),
        ("llm:", None),
        (f"  groq_api_key: {g.value('groq')}", "groq"),
        ("  together_api_key: <your-together-key>", None),  # trap
        ("  model: llama-3.1-70b", None),
        ("cache:", None),
        (f"  url: {g.value('redis')}", "redis"),
    ])


def place_k8s(g: Gen) -> tuple[str, list[tuple[int, str]]]:
    return _lines_with([
        ("apiVersion: v1", None),
        ("kind: Secret", None),
        ("metadata:", None),
        ("  name: api-credentials", None),
        ("type: Opaque", None),
        ("stringData:", None),
        (f"  HF_TOKEN: {g.value('hf')}", "hf"),
        (f"  GITHUB_TOKEN: \"{g.value('github')}\"", "github"),
        (f"  NOTION_API_TOKEN: {g.value('notion')}", "notion"),
        (f"  AZURE_STORAGE_CONNECTION_STRING: \"{g.value('azure')}\"", "azure"),
        ("  IMAGE_DIGEST: sha256:9b2c4e1f0a8d7c6b5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d",
         None),  # trap
    ])


def place_compose(g: Gen) -> tuple[str, list[tuple[int, str]]]:
    return _lines_with([
        ("services:", None),
        ("  db:", None),
        ("    image: postgres:16", None),
        ("    environment:", None),
        (f"      - POSTGRES_PASSWORD={g.value('db_password')}", "db_password"),
        ("  worker:", None),
        ("    build: .", None),
        ("    environment:", None),
        (f"      MONGO_URL: \"{g.value('mongodb')}\"", "mongodb"),
        (f"      SENDGRID_API_KEY: {g.value('sendgrid')}", "sendgrid"),
        ("      SMTP_PASSWORD: ${SMTP_PASSWORD}", None),  # trap
    ])


def place_settings_py(g: Gen) -> tuple[str, list[tuple[int, str]]]:
    return _lines_with([
        ('"""Production settings (do not commit!)."""', None),
        ("import os", None),
        ("", None),
        (f"SECRET_KEY = \"{g.value('django_secret')}\"", "django_secret"),
        ("DEBUG = False", None),
        (f"AWS_ACCESS_KEY_ID = \"{g.value('aws_id')}\"", "aws_id"),
        (f"AWS_SECRET_ACCESS_KEY = \"{g.value('aws_secret')}\"", "aws_secret"),
        ("AWS_STORAGE_BUCKET_NAME = \"media-prod\"", None),
        (f"GOOGLE_API_KEY = '{g.value('google')}'", "google"),
        (f"JWT_SECRET = os.environ.get(\"JWT_SECRET\", \"{g.value('jwt_secret')}\")",
         "jwt_secret"),
        ("EXAMPLE_AWS_KEY = \"AKIAIOSFODNN7EXAMPLE\"  # from the AWS docs", None),  # trap
        ("OPENAI_API_KEY = os.environ[\"OPENAI_API_KEY\"]", None),
        ("PASSWORD_RESET_TIMEOUT = 3600", None),
        ("PLACEHOLDER_OPENAI = \"sk-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"", None),
        ("CACHE_KEY_PREFIX = \"myapp_cache_v2_\"", None),
    ])


def place_fixture_json(g: Gen) -> tuple[str, list[tuple[int, str]]]:
    pem = g.pem().replace("\n", "\\n")
    sa = g.s(40, HEX)
    return _lines_with([
        ("{", None),
        ("  \"type\": \"service_account\",", None),
        ("  \"project_id\": \"analytics-prod-42\",", None),
        (f"  \"private_key_id\": \"{sa}\",", None),
        (f"  \"private_key\": \"{pem}\",", "gcp_private_key"),
        ("  \"client_email\": \"etl@analytics-prod-42.iam.gserviceaccount.com\",", None),
        ("  \"client_id\": \"104857392011234567890\",", None),
        (f"  \"npm_token\": \"{g.value('npm')}\",", "npm"),
        (f"  \"mailchimp_api_key\": \"{g.value('mailchimp')}\",", "mailchimp"),
        ("  \"checksum\": \"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\",",
         None),  # trap
        ("  \"api_key\": \"YOUR_API_KEY\"", None),  # trap
        ("}", None),
    ])


def place_notebook(g: Gen) -> tuple[str, list[tuple[int, str]]]:
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + g.r.randbytes(3000)).decode()
    hf, oa = g.value("hf"), g.value("openai")
    cells = [
        {"cell_type": "code", "execution_count": 1, "metadata": {}, "outputs": [],
         "source": ["import os\n", f"os.environ[\"OPENAI_API_KEY\"] = \"{oa}\"\n",
                    "from openai import OpenAI\n"]},
        {"cell_type": "code", "execution_count": 2, "metadata": {},
         "outputs": [{"data": {"image/png": png, "text/plain": ["<Figure>"]},
                      "metadata": {}, "output_type": "display_data"}],
         "source": ["from huggingface_hub import login\n", f"login(token=\"{hf}\")\n"]},
    ]
    doc = {"cells": cells, "metadata": {"kernelspec": {"name": "python3"}},
           "nbformat": 4, "nbformat_minor": 5}
    text = json.dumps(doc, indent=1) + "\n"
    truth = []
    for i, line in enumerate(text.splitlines(), start=1):
        if oa in line:
            truth.append((i, "openai"))
        if hf in line:
            truth.append((i, "hf"))
    return text, truth


def place_shell(g: Gen) -> tuple[str, list[tuple[int, str]]]:
    return _lines_with([
        ("#!/usr/bin/env bash", None),
        ("set -euo pipefail", None),
        (f"export GITHUB_TOKEN={g.value('github')}", "github"),
        (f"export TELEGRAM_BOT_TOKEN={g.value('telegram')}", "telegram"),
        (f"curl -X POST -H 'Content-type: application/json' --data '{{\"text\":\"deployed\"}}' "
         f"{g.value('slack_webhook')}", "slack_webhook"),
        ("export API_TOKEN=\"$(vault kv get -field=token secret/ci)\"", None),  # trap
        (f"twine upload --password {g.value('pypi')} dist/*", "pypi"),
    ])


def place_toml(g: Gen) -> tuple[str, list[tuple[int, str]]]:
    return _lines_with([
        ("[server]", None),
        ("port = 8080", None),
        ("[integrations.slack]", None),
        (f"app_token = \"{g.value('slack_app')}\"", "slack_app"),
        ("[integrations.livekit]", None),
        ("api_key = \"APIxk3Rv9TqLm2w\"", None),  # short: an API key ID, not planted
        (f"api_secret = \"{g.value('livekit_secret')}\"", "livekit_secret"),
        ("[crypto]", None),
        (f"encryption_key = \"{g.value('encryption_key')}\"", "encryption_key"),
        ("session_secret = \"keysafe://acme/shared/session_secret\"", None),  # trap
    ])


def place_ini(g: Gen) -> tuple[str, list[tuple[int, str]]]:
    return _lines_with([
        ("[default]", None),
        (f"aws_access_key_id = {g.value('aws_id')}", "aws_id"),
        (f"aws_secret_access_key = {g.value('aws_secret')}", "aws_secret"),
        ("region = eu-west-1", None),
        ("[gitlab]", None),
        (f"private_token = {g.value('gitlab')}", "gitlab"),
    ])


def place_js(g: Gen) -> tuple[str, list[tuple[int, str]]]:
    return _lines_with([
        ("// client configuration", None),
        ("export const config = {", None),
        (f"  openrouterKey: \"{g.value('openrouter')}\",", "openrouter"),
        (f"  n8nApiKey: \"{g.value('n8n_jwt')}\",", "n8n_jwt"),
        (f"  elevenlabsApiKey: \"{g.value('elevenlabs')}\",", "elevenlabs"),
        ("  mapsKey: process.env.MAPS_KEY,", None),
        ("  sessionId: \"5f8a2b3c-1d4e-4f6a-8b9c-0d1e2f3a4b5c\",", None),  # trap
        (f"  togetherApiKey: \"{g.value('together')}\",", "together"),
        ("};", None),
    ])


def place_pem(g: Gen) -> tuple[str, list[tuple[int, str]]]:
    return g.pem(), [(1, "private_key")]


PLACES = (
    (".env", place_env),
    ("config/settings.yaml", place_yaml),
    ("deploy/secret.yaml", place_k8s),
    ("docker-compose.yml", place_compose),
    ("config/settings_prod.py", place_settings_py),
    ("tests/fixtures/service_account.json", place_fixture_json),
    ("notebooks/exploration.ipynb", place_notebook),
    ("scripts/deploy.sh", place_shell),
    ("config/app.toml", place_toml),
    ("config/aws_credentials.ini", place_ini),
    ("web/config.js", place_js),
    ("deploy/tls/server.key", place_pem),
)

#: Lines inserted into the package's own modules: (template, kind).
INSERTS = (
    ("COHERE_API_KEY = \"{v}\"", "cohere_like"),
    ("    stripe.api_key = \"{v}\"", "stripe"),
    ("_SESSION_SECRET = \"{v}\"  # TODO move to env", "session_secret"),
    ("ANTHROPIC_KEY = \"{v}\"", "anthropic"),
    ("client = Groq(api_key=\"{v}\")", "groq"),
    ("SLACK_BOT_TOKEN = \"{v}\"", "slack_bot"),
)


def plant(pkg_dir: Path, corpus: Path, g: Gen, index: int) -> list[Planted]:
    rel_pkg = pkg_dir.relative_to(corpus).as_posix()
    truth: list[Planted] = []
    # Three places per package in rotation, so each place (and format) appears 3 times.
    chosen = [PLACES[(index * 2 + k) % len(PLACES)] for k in range(3)]
    for rel, builder in chosen:
        text, lines = builder(g)
        target = pkg_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        truth += [Planted(f"{rel_pkg}/{rel}", ln, kind) for ln, kind in lines]
    # One line inserted in one of the package's own Python modules, after its imports.
    modules = sorted(p for p in pkg_dir.rglob("*.py") if "test" not in p.as_posix().lower()
                     and p.stat().st_size > 2000)
    if modules:
        mod = modules[(index * 7) % len(modules)]
        lines = mod.read_text(encoding="utf-8").splitlines(keepends=True)
        at = next((i for i, ln in enumerate(lines) if ln.startswith(("def ", "class "))),
                  len(lines))
        template, kind = INSERTS[index % len(INSERTS)]
        line = template.format(v=g.value(kind))
        if line.startswith("    "):
            line = "def _configure():\n    import stripe\n" + line
        lines.insert(at, line + "\n")
        mod.write_text("".join(lines), encoding="utf-8")
        truth.append(Planted(mod.relative_to(corpus).as_posix(),
                             at + 1 + line.count("\n"), kind))
        # The planted line shifted everything below; nothing else in the module is planted.
    return truth


# -- history -------------------------------------------------------------------------
def build_history(src: Path, repo: Path, g: Gen) -> list[Planted]:
    if repo.exists():
        shutil.rmtree(repo)
    shutil.copytree(src, repo)
    env = dict(os.environ, GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@localhost",
               GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@localhost")

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(repo), *args], check=True, env=env,
                       capture_output=True, timeout=300)

    git("init", "-q", "-b", "main")
    git("add", "-A")
    git("commit", "-q", "-m", "import")
    truth: list[Planted] = []
    text, lines = place_env(g)
    (repo / "config").mkdir(exist_ok=True)
    (repo / "config" / "prod.env").write_text(text)
    truth += [Planted("config/prod.env", ln, k) for ln, k in lines]
    text, lines = place_settings_py(g)
    (repo / "config" / "settings_prod.py").write_text(text)
    truth += [Planted("config/settings_prod.py", ln, k) for ln, k in lines]
    git("add", "config")
    git("commit", "-q", "-m", "production config")
    git("rm", "-q", "config/prod.env", "config/settings_prod.py")
    git("commit", "-q", "-m", "remove secrets")
    (repo / "CHANGES.txt").write_text("later work\n")
    git("add", "CHANGES.txt")
    git("commit", "-q", "-m", "later")
    return truth


# -- running the tools ---------------------------------------------------------------
def timed(cmd: list[str], **kw: object) -> tuple[float, float, subprocess.CompletedProcess]:
    """(wall seconds, CPU seconds of the command and all its children, result)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, timeout=3600, **kw)  # type: ignore[call-overload]
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, p


def run_keysafe(corpus: Path) -> tuple[float, float, set[tuple[str, int]], list[dict]]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    dt, cpu, p = timed([str(BIN / "keysafe"), "scan", ".", "--format", "json"], cwd=corpus,
                       env=env)
    if p.returncode not in (0, 1):
        raise SystemExit(f"keysafe scan failed ({p.returncode}): {p.stderr.decode()[-2000:]}")
    doc = json.loads(p.stdout)
    found = {(f["path"], f["line"]) for f in doc["findings"]}
    return dt, cpu, found, doc["findings"]


def run_detect_secrets(corpus: Path) -> tuple[float, float, set[tuple[str, int]], list[dict]]:
    dt, cpu, p = timed([str(BIN / "detect-secrets"), "scan", "--all-files"], cwd=corpus)
    if p.returncode != 0:
        raise SystemExit(f"detect-secrets failed: {p.stderr.decode()[-2000:]}")
    doc = json.loads(p.stdout)
    rows = [{"path": path, "line": r["line_number"], "rule": r["type"]}
            for path, results in doc["results"].items() for r in results]
    return dt, cpu, {(r["path"], r["line"]) for r in rows}, rows


def line_text(corpus: Path, path: str, line: int) -> str:
    try:
        lines = (corpus / path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return lines[line - 1] if 0 < line <= len(lines) else ""


def score(found: set[tuple[str, int]], truth: set[tuple[str, int]],
          corpus: Path) -> dict[str, float]:
    unplanted = found - truth
    genuine = {k for k in unplanted if genuine_looking(line_text(corpus, *k))}
    tp = len(found & truth)
    fp_strict = len(unplanted)
    fp = fp_strict - len(genuine)
    return {"tp": tp, "fp": fp, "fp_strict": fp_strict, "genuine_looking": len(genuine),
            "fn": len(truth - found),
            "precision": tp / (tp + fp) if tp + fp else 1.0,
            "precision_strict": tp / (tp + fp_strict) if tp + fp_strict else 1.0,
            "recall": tp / len(truth) if truth else 1.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--list-fp", action="store_true")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    sdists = WORK / "sdists"
    corpus = WORK / "corpus"
    if corpus.exists():
        shutil.rmtree(corpus)
    corpus.mkdir(parents=True)
    g = Gen(args.seed)
    truth: list[Planted] = []
    pkg_dirs: list[Path] = []
    for i, (name, version) in enumerate(PACKAGES):
        archive = fetch_sdist(name, version, sdists)
        pkg = unpack(archive, corpus / f"_{name}")
        final = corpus / pkg.name
        pkg.rename(final)
        shutil.rmtree(corpus / f"_{name}", ignore_errors=True)
        pkg_dirs.append(final)
    for i, pkg in enumerate(pkg_dirs):
        truth += plant(pkg, corpus, g, i)
    files = sum(1 for p in corpus.rglob("*") if p.is_file())
    size = sum(p.stat().st_size for p in corpus.rglob("*") if p.is_file())
    kinds = sorted({t.kind for t in truth})
    print(f"corpus: {len(PACKAGES)} packages, {files} files, {size / 1e6:.1f} MB; "
          f"{len(truth)} planted secrets of {len(kinds)} kinds", file=sys.stderr)
    truth_set = {(t.path, t.line) for t in truth}
    (WORK / "truth.json").write_text(json.dumps([t.__dict__ for t in truth], indent=1))

    results: dict[str, dict] = {}
    for tool, runner in (("keysafe", run_keysafe), ("detect-secrets", run_detect_secrets)):
        times, cpus = [], []
        found: set[tuple[str, int]] = set()
        rows: list[dict] = []
        for _ in range(max(1, args.repeat)):
            dt, cpu, found, rows = runner(corpus)
            times.append(dt)
            cpus.append(cpu)
        sc = score(found, truth_set, corpus)
        missed = sorted({t.kind for t in truth if (t.path, t.line) not in found})
        results[tool] = {**sc, "seconds": statistics.median(times), "times": times,
                         "cpu_seconds": statistics.median(cpus), "cpus": cpus,
                         "missed_kinds": missed}
        if args.list_fp:
            print(f"\n== {tool}: findings not planted ==")
            for r in sorted(rows, key=lambda r: (r["path"], r["line"])):
                if (r["path"], r["line"]) not in truth_set:
                    cls = "genuine" if genuine_looking(line_text(corpus, r["path"], r["line"])) \
                        else "FP"
                    print(f"  {cls:7} {r['path']}:{r['line']}  {r['rule']}  "
                          f"{r.get('preview', '')}")

    # History: keysafe only (detect-secrets scans a tree, not a history).
    hist_repo = WORK / "history"
    pristine = WORK / "pristine"
    shutil.rmtree(pristine, ignore_errors=True)
    hist_src = unpack(fetch_sdist(*PACKAGES[1], sdists), pristine)
    hist_truth = build_history(hist_src, hist_repo, Gen(args.seed + 1))
    t = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    p = subprocess.run([str(BIN / "keysafe"), "scan", "--git-history", "--format", "json"],
                       cwd=hist_repo, capture_output=True, env=env, timeout=3600)
    hist_seconds = time.perf_counter() - t
    doc = json.loads(p.stdout)
    hfound = {(f["path"], f["line"]) for f in doc["findings"]}
    htruth = {(h.path, h.line) for h in hist_truth}
    results["history"] = {"planted": len(htruth), "found": len(hfound & htruth),
                          "other_findings": len(hfound - htruth),
                          "commits_reported": sorted({f["commit"][:12] for f in doc["findings"]
                                                      if (f["path"], f["line"]) in htruth}),
                          "seconds": hist_seconds}

    summary = {"packages": [f"{n}=={v}" for n, v in PACKAGES], "files": files,
               "bytes": size, "planted": len(truth), "kinds": kinds, "results": results}
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
