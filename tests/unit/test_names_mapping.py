"""The path <-> store name mapping for GCP Secret Manager and Azure Key Vault.

Properties, proved with generated paths: decoding an encoding gives the path back;
two different paths never get names the store would treat as the same (GCP compares
ids exactly, Azure compares names case-insensitively); the encoding of a prefix is a
prefix of the encoding of exactly the paths that start with it (so list can filter
on encoded names); every name that decodes re-encodes to itself; and names that are
too long, or paths with characters outside the naming rules, are refused with an
error naming the store and the limit.
"""

from __future__ import annotations

import itertools
import re
import string

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from keysafe.backends._names import AZURE, GCP, NameCodec
from keysafe.errors import InvalidName

CODECS = [pytest.param(GCP, id="gcp"), pytest.param(AZURE, id="azure")]
STORE_NAME = {"GCP Secret Manager": re.compile(r"[A-Za-z0-9_-]{1,255}"),
              "Azure Key Vault": re.compile(r"[0-9A-Za-z-]{1,127}")}

PATH_ALPHABET = string.ascii_letters + string.digits + "/._-"
# Any string of path characters (more than the naming template ever produces) ...
raw_paths = st.text(alphabet=PATH_ALPHABET, min_size=1, max_size=40)
# ... and paths shaped like the templates: segments joined by '/', maybe a leading '/'.
segments = st.builds(str.__add__, st.sampled_from(string.ascii_letters + string.digits),
                     st.text(alphabet=PATH_ALPHABET.replace("/", ""), max_size=15))
template_paths = st.builds(
    lambda lead, segs: ("/" if lead else "") + "/".join(segs),
    st.booleans(), st.lists(segments, min_size=1, max_size=5))
paths = st.one_of(raw_paths, template_paths)


def key(codec: NameCodec, name: str) -> str:
    """What the store compares when it decides whether two names are one secret."""
    return name.lower() if codec.case_insensitive else name


def encode_or_skip(codec: NameCodec, path: str) -> str:
    """The name, or skip the example when it is too long (checked in its own test)."""
    assume(len(codec.encode_prefix(path)) <= codec.max_length)
    return codec.encode(path)


@pytest.mark.parametrize("codec", CODECS)
@settings(max_examples=200, deadline=None)
@given(path=paths)
def test_round_trip(codec: NameCodec, path: str) -> None:
    name = encode_or_skip(codec, path)
    assert STORE_NAME[codec.store].fullmatch(name), name
    assert codec.decode(name) == path
    if codec.case_insensitive:
        # The store may hand the name back in any case; it is still the same secret.
        assert codec.decode(name.upper()) == path
        assert codec.decode(name.swapcase()) == path


@pytest.mark.parametrize("codec", CODECS)
@settings(max_examples=200, deadline=None)
@given(a=paths, b=paths)
def test_injective_on_generated_pairs(codec: NameCodec, a: str, b: str) -> None:
    assume(a != b)
    assert key(codec, codec.encode_prefix(a)) != key(codec, codec.encode_prefix(b))


def near(path: str) -> st.SearchStrategy[str]:
    """Paths one small edit away: the pairs most likely to collide."""
    edits = []
    for i, ch in enumerate(path):
        edits.append(path[:i] + ch.swapcase() + path[i + 1:])
        for other in "/._-hduc":
            edits.append(path[:i] + other + path[i + 1:])
        edits.append(path[:i] + path[i + 1:])
        edits.append(path[:i] + "-" + path[i:])
    return st.sampled_from(edits)


@pytest.mark.parametrize("codec", CODECS)
@settings(max_examples=150, deadline=None)
@given(data=st.data(), path=paths)
def test_injective_on_near_misses(codec: NameCodec, data: st.DataObject, path: str) -> None:
    other = data.draw(near(path))
    assume(other and other != path)
    assert key(codec, codec.encode_prefix(path)) != key(codec, codec.encode_prefix(other))


@pytest.mark.parametrize("codec", CODECS)
def test_injective_exhaustively_on_short_paths(codec: NameCodec) -> None:
    # Every path of up to 4 characters over the characters that interact with the
    # escape code (the escape letters, their upper case, and each special character).
    alphabet = "/._-hdcuHDCUa1"
    seen: dict[str, str] = {}
    for n in range(1, 5):
        for chars in itertools.product(alphabet, repeat=n):
            path = "".join(chars)
            k = key(codec, codec.encode(path))
            assert k not in seen, (path, seen.get(k))
            seen[k] = path
            assert codec.decode(k) == path


@pytest.mark.parametrize("codec", CODECS)
@settings(max_examples=200, deadline=None)
@given(path=paths, prefix=paths)
def test_prefix_of_encoding_iff_prefix_of_path(codec: NameCodec, path: str,
                                                prefix: str) -> None:
    name = codec.encode_prefix(path)
    assert name.startswith(codec.encode_prefix(prefix)) == path.startswith(prefix)


@pytest.mark.parametrize("codec", CODECS)
@settings(max_examples=200, deadline=None)
@given(path=paths, data=st.data())
def test_prefix_of_a_path_itself(codec: NameCodec, path: str, data: st.DataObject) -> None:
    cut = data.draw(st.integers(min_value=0, max_value=len(path)))
    assert codec.encode_prefix(path).startswith(codec.encode_prefix(path[:cut]))


@pytest.mark.parametrize("codec", CODECS)
@settings(max_examples=200, deadline=None)
@given(name=st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=1,
                    max_size=30))
def test_any_store_name_decodes_at_most_one_way(codec: NameCodec, name: str) -> None:
    assume(STORE_NAME[codec.store].fullmatch(name))
    path = codec.decode(name)
    if path is not None:
        # Decoding is the inverse of encoding: no second name decodes to this path.
        assert key(codec, codec.encode_prefix(path)) == key(codec, name)


def test_documented_examples() -> None:
    p = "agentfoundry/dev/acme-corp/card-services/openai_api_key"
    assert GCP.encode(p) == "agentfoundry--dev--acme-hcorp--card-hservices--openai_api_key"
    assert AZURE.encode(p) == "agentfoundry--dev--acme-hcorp--card-hservices--openai-uapi-ukey"
    q = "/ragstar/local/org-123/llm/openai-api-key"
    assert GCP.encode(q) == "--ragstar--local--org-h123--llm--openai-hapi-hkey"
    assert AZURE.encode(q) == GCP.encode(q)
    assert AZURE.encode("C/upper.v2") == "-cc--upper-dv2"
    assert GCP.encode("C/upper.v2") == "C--upper-dv2"


def test_case_matters_even_where_the_store_ignores_it() -> None:
    assert AZURE.encode("org/Key").lower() != AZURE.encode("org/key").lower()
    assert GCP.encode("org/Key") != GCP.encode("org/key")


def test_foreign_names_are_not_keysafe_paths() -> None:
    assert GCP.decode("aragora-openai-key") is None  # "-o" is no code word
    assert GCP.decode("trailing-") is None
    assert AZURE.decode("x-c") is None
    assert AZURE.decode("x-c1") is None
    assert GCP.decode("plain_name") == "plain_name"
    assert AZURE.decode("plain_name") is None  # '_' is no Azure name character
    assert AZURE.decode("MySecret") == "mysecret"
    assert GCP.decode("") is None


@pytest.mark.parametrize(("codec", "limit"), [(GCP, 255), (AZURE, 127)])
def test_length_limit_names_the_store_and_the_limit(codec: NameCodec, limit: int) -> None:
    assert len(codec.encode("a" * limit)) == limit
    with pytest.raises(InvalidName) as exc_info:
        codec.encode("a" * (limit + 1))
    msg = str(exc_info.value)
    assert codec.store in msg
    assert f"at most {limit}" in msg
    # '/' costs two characters, so a path under the limit can still be too long.
    with pytest.raises(InvalidName, match=f"{limit + 1} characters"):
        codec.encode("a/" * ((limit + 1) // 3) + "a" * ((limit + 1) % 3))


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("bad", ["a b", "a:b", "ä", "a\nb", "a%2f", "a\\b"])
def test_characters_outside_the_naming_rules_are_refused(codec: NameCodec, bad: str) -> None:
    with pytest.raises(InvalidName, match=codec.store):
        codec.encode(bad)


@pytest.mark.parametrize("codec", CODECS)
def test_empty_path_is_refused(codec: NameCodec) -> None:
    with pytest.raises(InvalidName):
        codec.encode("")
    assert codec.encode_prefix("") == ""
