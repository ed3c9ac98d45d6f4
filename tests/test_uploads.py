"""The file input's value as the browser may forge it, checked before any work."""

from __future__ import annotations

import pytest

from ferdash.inference import MAX_FILES_PER_UPLOAD
from ferdash.panels.uploads import checked_upload_list


@pytest.mark.parametrize("value", ["x", 3, {"datapath": "/etc/passwd"}, b"abc"])
def test_a_value_that_is_no_list_is_refused_whole(value) -> None:
    checked = checked_upload_list(value)
    assert checked.files == [] and checked.notice() == "The upload did not reach the server."


def test_a_huge_list_is_cut_before_any_entry_is_looked_at() -> None:
    entry = {"name": "a.png", "datapath": "/tmp/x"}
    checked = checked_upload_list((entry,) * 20_000)
    assert len(checked.files) == MAX_FILES_PER_UPLOAD and checked.dropped == 20_000 - MAX_FILES_PER_UPLOAD
    assert f"the other {20_000 - MAX_FILES_PER_UPLOAD} were not" in checked.notice()


def test_entries_that_are_not_objects_become_nameless_entries_without_a_file() -> None:
    checked = checked_upload_list([{"name": "a.png", "datapath": "/tmp/a"}, "junk", None, 5])
    assert checked.files[0]["name"] == "a.png"
    assert checked.files[1:] == [{"name": ""}] * 3
    assert checked.notice() is None
