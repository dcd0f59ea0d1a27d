"""The shape rules of issue 12, held by the build: no product function over 70 lines
(TigerBeetle's limit), no feature-tag comments marking where a feature was spliced in, and
no module naming a table another module owns."""
from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("events", "engine", "projections", "consumers", "entrypoints", "verifier")
MAX_FUNCTION_LINES = 70
FEATURE_TAG = re.compile(r"^\s*#\s*(notifications|webhooks|metrics|retention|compat|tracing|erasure|fleet|egress)\s*$",
                         re.IGNORECASE)
# table -> the modules that own it (create it, write it, and offer its queries to others)
OWNERS = {
    "events": {"engine/store/sqlite.py", "engine/store/postgres.py", "engine/store/memory.py", "engine/store/base.py"},
    "log_head": {"engine/store/sqlite.py", "engine/store/postgres.py"},
    "relay_position": {"engine/relay.py", "engine/store/postgres.py"},
    "rm_notifications": {"projections/read_models.py", "projections/queries.py"},
}
TABLE_USE = re.compile(r"\b(?:FROM|JOIN|INTO|UPDATE)\s+(\w+)", re.IGNORECASE)


def product_files() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def test_there_are_product_files_to_check():
    assert len(product_files()) > 90


def test_no_product_function_is_longer_than_70_lines():
    long = []
    for path in product_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "functions over 70 lines:\n" + "\n".join(long)


def test_no_feature_tag_comments():
    tagged = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}" for path in product_files()
              for number, line in enumerate(path.read_text().splitlines(), 1) if FEATURE_TAG.match(line)]
    assert not tagged, "feature-tag comments:\n" + "\n".join(tagged)


def sql_tables(source: str) -> list[str]:
    """The tables named in the string literals of a module (its SQL), not in its imports."""
    strings = [t.string for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type == tokenize.STRING]
    return [table for text in strings for table in TABLE_USE.findall(text)]


def test_no_module_names_a_table_another_module_owns():
    trespass = []
    for path in product_files():
        name = str(path.relative_to(ROOT))
        for table in sql_tables(path.read_text()):
            owners = OWNERS.get(table)
            if owners is not None and name not in owners:
                trespass.append(f"{name} names {table}")
    assert not trespass, "\n".join(sorted(set(trespass)))


def test_the_table_rule_sees_a_trespass():
    assert sql_tables('from events import x\nq = "SELECT position FROM log_head WHERE id = 1"') == ["log_head"]
    assert FEATURE_TAG.match("    # notifications") and not FEATURE_TAG.match("# notifications are sent later")
