"""The one Settings object: the README documents it, bad values are one-line errors, nothing else reads the environment."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from campaignflow import settings
from campaignflow.errors import UserError
from conftest import ROOT, cli


def readme_table() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("| variable | default | meaning |")
    return text[start:text.index("\n\n", start) + 1]


def test_readme_configuration_table_is_the_generated_one():
    generated = subprocess.run([sys.executable, "-m", "campaignflow.settings", "--markdown"], capture_output=True,
                               text=True, check=True, cwd=ROOT).stdout
    assert readme_table() == generated, "README's table is stale: paste `python -m campaignflow.settings --markdown`"


def test_every_field_is_documented_with_its_variable_default_and_meaning():
    rows = {}
    for line in readme_table().splitlines()[2:]:
        variable, default, meaning = (cell.strip() for cell in line.strip("|").split("|", 2))
        rows[variable.strip("`")] = (default, meaning)
    for name, field in settings.Settings.model_fields.items():
        variable = settings.variable(name)
        assert variable in rows, f"{variable} is not in the README's table"
        default, meaning = rows[variable]
        assert default and meaning == field.description
    families = {name for name, _, _ in settings.FAMILIES}
    fields = {settings.variable(name) for name in settings.Settings.model_fields}
    assert set(rows) == fields | families, "the README documents a variable that is not a setting"


def test_settings_follow_the_environment_between_calls(monkeypatch, tmp_path):
    monkeypatch.setenv("CAMPAIGNFLOW_HOME", str(tmp_path / "a"))
    monkeypatch.delenv("CAMPAIGNFLOW_DATABASE_URL", raising=False)
    assert settings.get().store_url() == f"sqlite:///{tmp_path / 'a' / 'campaignflow.db'}"
    assert (tmp_path / "a").is_dir()  # created on first use
    monkeypatch.setenv("CAMPAIGNFLOW_HOME", str(tmp_path / "b"))
    monkeypatch.setenv("CAMPAIGNFLOW_SERVER_PORT", "4999")
    monkeypatch.setenv("CAMPAIGNFLOW_WEB_URL", "")  # empty counts as unset
    config = settings.get()
    assert config.home_dir() == tmp_path / "b" and config.server_port == 4999 and config.web_url is None


def test_secrets_are_not_shown(monkeypatch):
    monkeypatch.setenv("CAMPAIGNFLOW_SECRET", "s3cr3t-value")
    monkeypatch.setenv("CAMPAIGNFLOW_API_TOKEN", "t0ken-value")
    shown = repr(settings.get()) + str(settings.get())
    assert "s3cr3t-value" not in shown and "t0ken-value" not in shown


def test_families_of_variables(monkeypatch):
    monkeypatch.setenv("CAMPAIGNFLOW_CHANNEL_TEAM_CHAT", "json://127.0.0.1:9/")
    monkeypatch.setenv("CAMPAIGNFLOW_CHANNEL_BLANK", "  ")
    monkeypatch.setenv("CAMPAIGNFLOW_META_ACCESS_TOKEN", "abc")
    monkeypatch.setenv("CAMPAIGNFLOW_INGEST_RPS_META", "7")
    assert settings.channel_variables() == {"CAMPAIGNFLOW_CHANNEL_TEAM_CHAT": "json://127.0.0.1:9/"}
    assert settings.credential_variables("meta") == {"access_token": "abc"}
    assert settings.ingest_limit("meta", "rps") == "7" and settings.ingest_limit("ga4", "rps") is None


@pytest.mark.parametrize("variable, value, says", [
    ("CAMPAIGNFLOW_SERVER_PORT", "abc", "CAMPAIGNFLOW_SERVER_PORT='abc' is not valid: input should be a valid integer"),
    ("CAMPAIGNFLOW_INGEST_MAX_MINUTES", "-5", "CAMPAIGNFLOW_INGEST_MAX_MINUTES='-5' is not a number of minutes"),
])
def test_a_bad_value_is_a_one_line_error_naming_the_variable(home, variable, value, says):
    result = cli("server", "status", env={variable: value})
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {says}") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_value_is_a_user_error_in_process(monkeypatch):
    monkeypatch.setenv("CAMPAIGNFLOW_GATE_POLL", "often")
    with pytest.raises(UserError, match="CAMPAIGNFLOW_GATE_POLL='often' is not valid"):
        settings.get()


def test_only_the_settings_module_reads_the_environment():
    readers = re.compile(r"os\.environ\.get|os\.getenv|os\.environ\[[^\]]+\](?!\s*=)|os\.environ\.items")
    found = []
    for package in ("campaignflow", "flows", "tasks", "blocks", "deployments"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == Path(settings.__file__):
                continue
            found += [f"{path.relative_to(ROOT)}:{i}" for i, line in enumerate(path.read_text().splitlines(), 1)
                      if readers.search(line)]
    assert found == [], "read settings through campaignflow.settings.get()"
