"""The pages as served: markup two pages share is written once (static/parts/) and included when served."""

from __future__ import annotations

import pytest
from webapp.main import INCLUDE, STATIC_DIR, assemble_page


@pytest.mark.parametrize("name", ["index.html", "tweet.html"])
def test_a_page_with_the_product_sheet_gets_it_whole_and_no_include_is_left(name: str) -> None:
    html = assemble_page(name)
    assert not INCLUDE.search(html), "every include is replaced"
    assert html.count('<div id="sheet" class="sheet" hidden>') == 1
    assert html.count('id="pay"') == 1 and html.rstrip().endswith("</html>")


def test_every_page_in_the_static_folder_assembles() -> None:
    for page in sorted(STATIC_DIR.glob("*.html")):
        assert not INCLUDE.search(assemble_page(page.name)), page.name
