"""Artifact references (pure): which output fields go to the store, what a reference looks like, and how
content comes back as the value it was."""

from __future__ import annotations

import pytest

from agent_engine.contracts.artifacts import (
    JSON,
    TEXT,
    ArtifactRef,
    artifact_id,
    as_ref,
    bucket_of,
    decode,
    dispatch_object,
    encode,
    is_dispatch_copy,
    located,
    locator,
    object_name,
    references,
    too_large,
)

BIG = "x" * 100_000


def ref(content: bytes = b"hello", name: str = "read.content") -> dict[str, object]:
    return ArtifactRef(artifact=artifact_id(content), size=len(content), media_type=TEXT, name=name).model_dump()


def test_an_id_is_the_sha256_of_the_bytes_so_equal_content_has_one_id() -> None:
    assert artifact_id(b"hello") == "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert artifact_id(b"hello") == artifact_id(b"hel" + b"lo") != artifact_id(b"hello!")
    assert object_name(artifact_id(b"hello")).startswith("2cf24dba")


@pytest.mark.parametrize("bad", ["sha256:abc", "md5:" + "0" * 64, "sha256:" + "G" * 64, "../../etc/passwd"])
def test_a_malformed_id_is_refused_with_the_expected_form(bad: str) -> None:
    with pytest.raises(ValueError, match="is not an artifact id"):
        object_name(bad)


def test_each_tenant_has_its_own_bucket_and_a_bad_tenant_name_is_refused() -> None:
    assert bucket_of("acme") == "ae_artifacts_acme" != bucket_of("beta")
    with pytest.raises(ValueError, match="'a.b' is not a tenant name"):
        bucket_of("a.b")


def test_only_a_large_field_is_stored_so_small_fields_stay_routable() -> None:
    output = {"content": BIG, "bytes": 100_000, "truncated": False}
    assert too_large(output, 64 * 1024) == ["content"]
    assert too_large({"a": "small"}, 64 * 1024) == []


def test_many_medium_fields_are_stored_largest_first_until_the_rest_fits() -> None:
    output = {"a": "x" * 30_000, "b": "y" * 40_000, "c": "z" * 20_000, "n": 1}
    assert too_large(output, 64 * 1024) == ["b"]
    assert too_large(output, 10_000) == ["b", "a", "c"]


def test_a_field_that_is_already_a_reference_is_left_alone() -> None:
    assert too_large({"content": ref(), "other": "s" * 50}, 10) == ["other"]


def test_a_reference_is_recognised_only_with_exactly_its_fields() -> None:
    assert as_ref(ref()) == ArtifactRef.model_validate(ref())
    assert as_ref({**ref(), "extra": 1}) is None
    assert as_ref({**ref(), "artifact": "sha256:nothex"}) is None
    assert as_ref("sha256:" + "0" * 64) is None


@pytest.mark.parametrize("value", [BIG, {"rows": [1, 2, {"é": "ü"}]}, [1, "two"], 3.5])
def test_content_comes_back_as_the_value_it_was(value: object) -> None:
    content, media_type = encode(value)
    assert media_type == (TEXT if isinstance(value, str) else JSON)
    assert decode(content, media_type) == value


def test_a_string_is_stored_as_its_own_text_so_artifact_get_gives_the_tools_bytes_back() -> None:
    assert encode("line 1\nline 2\n") == (b"line 1\nline 2\n", TEXT)


def test_references_are_found_anywhere_in_an_event_once_each() -> None:
    one, two = ref(b"1", "a.x"), ref(b"2", "b.y")
    data = {"output": {"x": one, "list": [two, {"deep": one}]}, "node": "n"}
    assert [r.artifact for r in references(data)] == [artifact_id(b"1"), artifact_id(b"2")]
    assert references({"output": {"text": "no refs"}}) == []


def test_a_dispatchs_copy_is_named_by_its_content_and_its_dispatch_so_a_redelivery_names_it_again() -> None:
    hello = artifact_id(b"hello")
    name = dispatch_object(hello, "d-1")
    assert name == dispatch_object(hello, "d-1")  # a redelivered dispatch storing the same content: the same object
    assert name.startswith(object_name(hello) + ".") and len(name) == 64 + 1 + 32
    assert name != dispatch_object(hello, "d-2") != dispatch_object(artifact_id(b"other"), "d-1")
    assert dispatch_object(hello, "../../etc/passwd ✓").split(".")[1].isalnum()  # any id, one safe shape


def test_a_locator_finds_shared_content_by_its_id_and_a_copy_by_its_object() -> None:
    hello = artifact_id(b"hello")
    shared = ArtifactRef.model_validate(ref())
    copy = ArtifactRef.model_validate({**ref(), "object": dispatch_object(hello, "d-1")})
    assert locator(shared) == hello and located(hello) == (hello, object_name(hello))
    assert locator(copy) == "sha256:" + dispatch_object(hello, "d-1")
    assert located(locator(copy)) == (hello, dispatch_object(hello, "d-1"))  # the content id, to check the bytes
    assert not is_dispatch_copy(hello) and is_dispatch_copy(locator(copy))
    with pytest.raises(ValueError, match="is not an artifact id"):
        located(hello + ".zz")


def test_a_shared_reference_is_stored_as_it_always_was_and_a_copy_says_which_object() -> None:
    assert "object" not in ref()  # history recorded before copies replays byte for byte
    copy = {**ref(), "object": dispatch_object(artifact_id(b"hello"), "d-1")}
    assert as_ref(copy) == ArtifactRef.model_validate(copy) and as_ref(copy) is not None


def test_a_reference_cannot_name_another_contents_object() -> None:
    with pytest.raises(ValueError, match="is not a copy of"):
        ArtifactRef.model_validate({**ref(), "object": dispatch_object(artifact_id(b"other"), "d-1")})
    assert as_ref({**ref(), "object": dispatch_object(artifact_id(b"other"), "d-1")}) is None


def test_copies_of_equal_content_are_listed_each_once() -> None:
    hello = artifact_id(b"hello")
    copy = {**ref(), "object": dispatch_object(hello, "d-1")}
    assert [locator(r) for r in references({"a": ref(), "b": copy, "c": [copy]})] == [hello, locator(
        ArtifactRef.model_validate(copy))]
