"""What a request's authentication costs, by credential: a keysafe token, a host
platform's HS256 JWT, and workload tokens (RS256 2048-bit and ES256 P-256) trusted by
a trust file; each JWT presented again (answered from the verified-token cache) and at
first sight (a signature check each).

    .venv/bin/python bench/workload_auth.py [--json FILE] [--quick]

Each case is ``keysafe.server.deps.authenticate_raw`` on a server built by
``create_app`` over an embedded store in a scratch KEYSAFE_HOME (removed at the end),
with the header a client would send; the issuer's keys come from a key file, so no
network is involved. Bounded: ``micro_interleaved`` calibrates each case to about
``target`` seconds per repeat, at most 200,000 calls. Never part of the test suite.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jwt
import yaml
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from _timing import fmt_ns, micro_interleaved
from keysafe.config import load_settings
from keysafe.server.app import create_app
from keysafe.server.auth import VERIFIED_TOKENS
from keysafe.server.deps import authenticate_raw

ISSUER = "https://token.actions.githubusercontent.com"
#: Distinct tokens cycled through at first sight: more than a server remembers.
FIRST_SIGHT = 5000
assert FIRST_SIGHT > VERIFIED_TOKENS


def _jwk(kid: str, key: Any) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        d = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    else:
        d = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    d.update({"kid": kid, "use": "sig"})
    return d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", type=Path, help="write every figure here")
    ap.add_argument("--quick", action="store_true", help="fewer, shorter repeats")
    args = ap.parse_args()
    repeats, target = (3, 0.1) if args.quick else (7, 0.3)

    work = Path(tempfile.mkdtemp(prefix="keysafe-bench-auth-"))
    try:
        keys = {"rs": rsa.generate_private_key(public_exponent=65537, key_size=2048),
                "es": ec.generate_private_key(ec.SECP256R1())}
        (work / "jwks.json").write_text(json.dumps(
            {"keys": [_jwk(kid, k) for kid, k in keys.items()]}))
        (work / "trust.yaml").write_text(yaml.safe_dump({"trusts": [{
            "name": "ci", "issuer": ISSUER, "audience": "keysafe",
            "subject": "repo:acme/app:*", "claims": {"repository": "acme/app"},
            "roles": ["service"], "scopes": ["acme"], "jwks_file": "jwks.json"}]}))
        hs_secret = "h" * 48
        settings = load_settings({"KEYSAFE_HOME": str(work / "home"),
                                  "KEYSAFE_JWT_TRUST_FILE": str(work / "trust.yaml"),
                                  "KEYSAFE_JWT_HS256_SECRET": hs_secret,
                                  "KEYSAFE_KEY_CHECKS": "off"})
        app = create_app(settings)
        st = app.keysafe
        token, _ = st.tokens.create(name="svc", roles=["service"], orgs=["acme"],
                                    created_by="bench")
        now = int(time.time())
        base = {"iss": ISSUER, "aud": "keysafe", "sub": "repo:acme/app:ref:refs/heads/main",
                "iat": now, "exp": now + 3600, "repository": "acme/app"}
        host = jwt.encode({"sub": "u1", "exp": now + 3600, "org": "acme", "role": "service"},
                          hs_secret, algorithm="HS256")
        creds = {
            "keysafe token (ks_...)": token,
            "host JWT, HS256, again": host,
            "workload JWT, RS256, again": jwt.encode(base, keys["rs"], algorithm="RS256",
                                                         headers={"kid": "rs"}),
            "workload JWT, ES256, again": jwt.encode(base, keys["es"], algorithm="ES256",
                                                      headers={"kid": "es"}),
        }
        for label, cred in creds.items():  # each one works before it is timed
            ident = authenticate_raw(st, f"Bearer {cred}", "127.0.0.1", "r")
            assert ident is not None, label
        cases = {label: ("auth(st, h, '127.0.0.1', 'r')",
                         {"auth": authenticate_raw, "st": st, "h": f"Bearer {cred}"})
                 for label, cred in creds.items()}
        # First sight: more distinct tokens than the verified-token cache holds, cycled,
        # so every call verifies a signature.
        fresh = {}
        for alg, kid in (("RS256", "rs"), ("ES256", "es")):
            headers = [f"Bearer {jwt.encode({**base, 'jti': str(i)}, keys[kid], algorithm=alg, headers={'kid': kid})}"  # noqa: E501
                       for i in range(FIRST_SIGHT)]
            fresh[f"workload JWT, {alg}, first sight"] = (
                "auth(st, next(hs), '127.0.0.1', 'r')",
                {"auth": authenticate_raw, "st": st, "hs": itertools.cycle(headers)})
        hosts = [f"Bearer {jwt.encode({'sub': f'u{i}', 'exp': now + 3600, 'org': 'acme', 'role': 'service'}, hs_secret, algorithm='HS256')}"  # noqa: E501
                 for i in range(FIRST_SIGHT)]
        fresh["host JWT, HS256, first sight"] = (
            "auth(st, next(hs), '127.0.0.1', 'r')",
            {"auth": authenticate_raw, "st": st, "hs": itertools.cycle(hosts)})
        cases.update(fresh)
        stats = micro_interleaved(cases, repeats=repeats, target_s=target, max_n=200_000)
        st.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    first = stats["keysafe token (ks_...)"].median
    print(f"{'credential':34} {'median':>10} {'best':>10} {'spread':>7} {'vs ks_':>7}")
    for label, s in stats.items():
        print(f"{label:34} {fmt_ns(s.median):>10} {fmt_ns(s.best):>10} "
              f"{s.spread:>6.0%} {s.median / first:>6.1f}x")
    if args.json:
        args.json.write_text(json.dumps({k: s.to_dict() for k, s in stats.items()},
                                        indent=2))
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
