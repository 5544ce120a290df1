from pathlib import Path

from medsagan.config import Config
from medsagan.config_docs import markdown

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_the_configuration_reference_is_generated_from_the_config_and_up_to_date():
    written = (DOCS / "configuration.md").read_text()
    assert written == markdown(), "stale: run python -m medsagan.config_docs > docs/configuration.md"


def test_every_key_is_documented_with_its_meaning():
    table = [line for line in markdown().splitlines() if line.startswith("| `")]
    sections = {name: values for name, values in Config().to_dict().items() if isinstance(values, dict)}
    keys = {f"{section}.{key}" for section, values in sections.items() for key in values}
    assert {line.split("`")[1] for line in table} == keys
    assert all(line.rstrip(" |").rsplit("|", 1)[1].strip() for line in table)


def test_every_command_in_the_readme_table_exists_with_the_options_it_shows():
    import re

    import click

    from medsagan.cli import main

    readme = (DOCS.parent / "README.md").read_text()
    rows = [line.split("`")[1] for line in readme.splitlines() if line.startswith("| `medsagan ")]
    assert len(rows) >= 10
    for usage in rows:
        words = usage.split()[1:]
        command = main.get_command(click.Context(main), words[0])
        assert command is not None, usage
        if isinstance(command, click.Group):
            command = command.get_command(click.Context(command), words[1])
        names = {opt for param in command.params for opt in getattr(param, "opts", [])}
        for option in re.findall(r"--[a-z-]+", usage):
            assert option in names, f"{usage}: {option}"
