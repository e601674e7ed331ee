"""README.md's settings tables are generated from the settings classes, never kept by hand."""

from roles.settings_doc import README, readme_block, tables


def test_readme_settings_tables_match_the_code():
    assert readme_block(README.read_text()) == tables(), (
        "README.md's settings tables are stale: run `python -m roles.settings_doc --write`"
    )
