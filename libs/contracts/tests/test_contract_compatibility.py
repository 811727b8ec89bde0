"""The code's v1 event schemas against the checked-in ones: breaking changes fail, stale files are named."""

from __future__ import annotations

from pathlib import Path

import pytest
from tweetshop_contracts import compat, schema_export

ROOT = schema_export.find_repo_root(Path(__file__).resolve())


def test_no_v1_event_schema_changed_incompatibly() -> None:
    published = schema_export.load_schema_dir(ROOT / schema_export.SCHEMA_DIR)
    assert published, f"no checked-in schemas under {schema_export.SCHEMA_DIR}"
    changes = compat.compare_contracts(published, schema_export.event_schemas())
    breaking = compat.breaking_changes(changes)
    if breaking:
        pytest.fail("The v1 contract changed incompatibly:\n" + compat.report(breaking), pytrace=False)


def test_checked_in_schemas_asyncapi_and_topic_docs_match_the_code() -> None:
    stale = schema_export.stale_files(ROOT)
    if stale:
        changes = [c for c in schema_export.contract_changes(ROOT) if not c.breaking]
        pytest.fail(
            "Generated contract files are stale (compatible changes are fine, but check them in): "
            f"{schema_export.REGENERATE}.\nStale: {', '.join(map(str, stale))}"
            + "".join(f"\n  {change}" for change in changes),
            pytrace=False,
        )
