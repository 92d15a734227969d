"""README.md gives no number that docs/RESULTS.md does not print (issue 10).

RESULTS.md is generated from the committed result files (scripts/make_results.py), so a
number README takes from it can be traced to the command that measured it; a number typed
into README by hand cannot. The rules:

- Every decimal number (0.2093, 1.5, 93.7 of "93.7%", 4.84 of "4.84x") in README's text
  appears in RESULTS.md as a whole number (0.22 is not found in 0.2225). Fenced code blocks,
  inline code spans and link targets are not text: settings are written as flags in code
  spans (`--meta_learning_rate=0.0003`), the arXiv id is in a link. A dotted version with
  three parts (Bazel 4.2.3) is not a decimal number.
- A README table row that holds such a number is a row of a RESULTS.md table, quoted with its
  links pointed at docs/RESULTS.md: README quotes generated tables, it does not assemble its
  own.
"""

import os
import re

import repo_paths

README = os.path.join(repo_paths.ROOT, "README.md")
RESULTS = os.path.join(repo_paths.ROOT, "docs", "RESULTS.md")

# Not after a letter, digit or dot, and not followed by more digits or by ".digit" (versions).
DECIMAL = re.compile(r"(?<![\w.])\d+\.\d+(?!\.?\d)")
FENCE = re.compile(r"^ *```.*?^ *```[^\n]*$", re.DOTALL | re.MULTILINE)
CODE_SPAN = re.compile(r"`[^`]+`")  # may run over a line break, as Markdown allows
LINK_TARGET = re.compile(r"\]\([^)]*\)|<https?://[^>]*>")
RESULTS_LINK = "](docs/RESULTS.md#"  # README's links to the page's anchors


def _read(path):
  with open(path, encoding="utf-8") as f:
    return f.read()


def text_of(markdown):
  """The Markdown without code blocks, code spans and link targets: what the rules check."""
  text = FENCE.sub("", markdown)
  text = CODE_SPAN.sub("", text)
  assert "`" not in text, "an unbalanced backtick would hide text from these rules"
  return LINK_TARGET.sub("]", text)


def decimal_numbers(text):
  return DECIMAL.findall(text)


def numbers_missing_from(page, markdown):
  """(number, its line) of each decimal number of markdown that page does not print."""
  printed = set(decimal_numbers(page))
  return [
    (number, line.strip())
    for line in text_of(markdown).splitlines()
    for number in decimal_numbers(line)
    if number not in printed
  ]


def unquoted_table_rows(page, markdown):
  """README table rows holding a decimal number that are no row of the page's tables."""
  page_lines = set(page.splitlines())
  lines = [line.strip() for line in FENCE.sub("", markdown).splitlines()]
  return [
    row
    for row in lines
    if row.startswith("|")
    and decimal_numbers(text_of(row))
    and row.replace(RESULTS_LINK, "](#") not in page_lines
  ]


def test_every_readme_number_is_printed_by_results_md():
  missing = numbers_missing_from(_read(RESULTS), _read(README))
  assert not missing, (
    "README.md gives numbers docs/RESULTS.md does not print (quote RESULTS.md, or write a "
    "setting as a flag in a code span):\n" + "\n".join(f"{n}: {line}" for n, line in missing)
  )


def test_readme_tables_are_quoted_from_results_md():
  rows = unquoted_table_rows(_read(RESULTS), _read(README))
  assert not rows, "README.md table rows not in docs/RESULTS.md:\n" + "\n".join(rows)


def test_the_rules_catch_a_typed_number_and_skip_code_links_and_versions():
  page = "| [MNIST](#mnist) | learned 0.2093 | nag 0.2624 |\n\nspeed 1.41 and 0.2225\n"
  markdown = (
    "It scored 0.2093 (`--meta_learning_rate=0.0003`), see [paper](https://arxiv.org/abs/"
    "1606.04474), Bazel 4.2.3, `python x.py\n--scale=0.5`, 1.41x.\n\n```sh\nrun --p=0.9\n```\n"
  )
  assert numbers_missing_from(page, markdown) == []
  typed = markdown + "About 93.7% of it, and 0.22.\n"
  assert numbers_missing_from(page, typed) == [
    ("93.7", "About 93.7% of it, and 0.22."),
    ("0.22", "About 93.7% of it, and 0.22."),  # a prefix of 0.2225 is not found
  ]
  quoted = "| [MNIST](docs/RESULTS.md#mnist) | learned 0.2093 | nag 0.2624 |\n"
  assert unquoted_table_rows(page, quoted) == []
  edited = quoted.replace("nag 0.2624", "nag 0.2624 (paired)")
  assert unquoted_table_rows(page, edited) == [edited.strip()]
