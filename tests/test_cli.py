"""The CLI shell: start-up imports, global options, the error boundary, JSON envelope, config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_version(cli):
    from newsclf import __version__

    r = cli("--version")
    assert r.exit_code == 0
    assert r.stdout.strip() == f"newsclf {__version__}"


def test_usage_error_exits_2(cli):
    r = cli("config", "shw")
    assert r.exit_code == 2
    assert "No such command 'shw'" in r.stderr
    assert r.stdout == ""


def test_usage_error_json_is_one_document(cli):
    r = cli("--json", "config", "shw")
    assert r.exit_code == 2
    doc = r.json
    assert doc["status"] == "error" and doc["exit_code"] == 2
    assert "No such command" in doc["errors"][0]


def test_config_show_sources_and_masking(cli, monkeypatch, tmp_path):
    (tmp_path / ".env").write_text("NEWSCLF_BUCKET=from-dotenv\nNEWSCLF_ZONE=europe-west4-a\n")
    monkeypatch.setenv("NEWSCLF_ZONE", "us-central1-a")
    monkeypatch.setenv("WANDB_API_KEY", "sk-very-secret-key")
    r = cli("config", "show", "--json")
    assert r.exit_code == 0
    doc = r.json
    assert doc["newsclf_json_version"] == "1" and doc["command"] == "config show"
    rows = {row["name"]: row for row in doc["data"]["settings"]}
    assert rows["bucket"]["value"] == "from-dotenv" and rows["bucket"]["source"] == ".env NEWSCLF_BUCKET"
    assert rows["zone"]["value"] == "us-central1-a" and rows["zone"]["source"] == "env NEWSCLF_ZONE"
    assert rows["epochs"]["source"] == "default"
    assert rows["wandb_api_key"]["value"] == "********"
    assert "sk-very-secret-key" not in r.stdout + r.stderr
    human = cli("config", "show")
    assert "sk-very-secret-key" not in human.stdout + human.stderr
    assert "from-dotenv" in human.stdout


def test_unknown_variable_warns_with_closest(cli, monkeypatch):
    monkeypatch.setenv("NEWSCLF_BUKET", "x")
    r = cli("config", "show", "--json")
    assert r.exit_code == 0
    assert "Unknown setting NEWSCLF_BUKET is ignored; did you mean NEWSCLF_BUCKET?" in r.stderr
    assert r.json["warnings"] == ["Unknown setting NEWSCLF_BUKET is ignored; did you mean NEWSCLF_BUCKET?"]


def test_invalid_setting_is_one_error_line(cli, monkeypatch):
    monkeypatch.setenv("NEWSCLF_EPOCHS", "many")
    r = cli("config", "show")
    assert r.exit_code == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: Invalid setting NEWSCLF_EPOCHS:")
    assert "Traceback" not in r.stderr


def test_env_file_not_utf8_is_named(cli, tmp_path):
    Path(".env").write_bytes(b"NEWSCLF_BUCKET=my-newsclf-bucket\n# caf\xe9 au lait\nNEWSCLF_EPOCHS=2\n")  # latin-1
    r = cli("--json", "config", "show")
    assert r.exit_code == 1
    message = (
        ".env is not UTF-8 (invalid byte 0xe9 on line 2): re-save it as UTF-8, "
        "e.g. `iconv -f latin1 -t utf-8 .env > .env.new && mv .env.new .env`"
    )
    assert r.stderr == f"Error: {message}\n"
    assert r.json["errors"] == [message]


def test_json_flag_anywhere(cli):
    r = cli("config", "show", "--json")
    assert json.loads(r.stdout)["status"] == "ok"


def test_console_script_runs():
    proc = subprocess.run(
        [sys.executable, "-m", "newsclf", "--json", "config", "shw"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert json.loads(proc.stdout)["exit_code"] == 2
