"""Nextcloud's ``config.php`` read as data: the ``$CONFIG = array(...)`` literal is parsed,
never executed, so a hostile or broken file can only fail to parse.

Only literals are understood (strings, numbers, booleans, null, nested ``array()`` / ``[]``);
anything else (function calls, constants, concatenation) is a clear error naming the line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from davserver.errors import UserError

_TOKEN = re.compile(r"""
    (?P<ws>\s+|//[^\n]*|\#[^\n]*|/\*.*?\*/)
  | (?P<sq>'(?:[^'\\]|\\.)*')
  | (?P<dq>"(?:[^"\\]|\\.)*")
  | (?P<num>-?\d+(?:\.\d+)?)
  | (?P<arrow>=>)
  | (?P<punct>[(),\[\];=])
  | (?P<word>[A-Za-z_$][A-Za-z0-9_$]*)
""", re.S | re.X)

_DQ_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "v": "\v", "f": "\f", "e": "\x1b",
               "\\": "\\", "$": "$", '"': '"', "0": "\0"}


@dataclass
class NextcloudConfig:
    """The values the importer needs, plus everything else as parsed."""

    secret: str
    instanceid: str
    datadirectory: str | None
    version: str | None
    values: dict = field(default_factory=dict, repr=False)


def _unquote_single(s: str) -> str:
    return re.sub(r"\\([\\'])", r"\1", s[1:-1])


def _unquote_double(s: str) -> str:
    return re.sub(r"\\(.)", lambda m: _DQ_ESCAPES.get(m.group(1), "\\" + m.group(1)), s[1:-1])


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            line = text.count("\n", 0, pos) + 1
            raise UserError(f"config.php line {line}: cannot parse {text[pos:pos + 20]!r}")
        kind = m.lastgroup
        if kind != "ws":
            out.append((kind, m.group(), text.count("\n", 0, pos) + 1))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, tokens: list[tuple[str, str, int]]) -> None:
        self.t = tokens
        self.i = 0

    def peek(self) -> tuple[str, str, int]:
        return self.t[self.i] if self.i < len(self.t) else ("eof", "", -1)

    def take(self, value: str | None = None) -> tuple[str, str, int]:
        tok = self.peek()
        if tok[0] == "eof" or (value is not None and tok[1].lower() != value):
            raise UserError(f"config.php line {tok[2]}: expected {value or 'a value'}, "
                            f"found {tok[1] or 'the end'!r}")
        self.i += 1
        return tok

    def value(self):
        kind, text, line = self.peek()
        if kind == "sq":
            self.i += 1
            return _unquote_single(text)
        if kind == "dq":
            self.i += 1
            if re.search(r"(?<!\\)\$", text):
                raise UserError(f"config.php line {line}: variables in strings are not "
                                "supported")
            return _unquote_double(text)
        if kind == "num":
            self.i += 1
            return float(text) if "." in text else int(text)
        if kind == "word" and text.lower() in ("true", "false", "null"):
            self.i += 1
            return {"true": True, "false": False, "null": None}[text.lower()]
        if kind == "word" and text.lower() == "array":
            self.i += 1
            self.take("(")
            return self.items(")")
        if text == "[":
            self.i += 1
            return self.items("]")
        raise UserError(f"config.php line {line}: only literal values are supported, "
                        f"found {text!r}")

    def items(self, close: str) -> dict | list:
        result: dict = {}
        index = 0
        while self.peek()[1] != close:
            v = self.value()
            if self.peek()[0] == "arrow":
                self.i += 1
                key, v = v, self.value()
                if isinstance(key, int):
                    index = key + 1
            else:
                key, index = index, index + 1
            result[key] = v
            if self.peek()[1] == ",":
                self.i += 1
            elif self.peek()[1] != close:
                self.take(close)
        self.take(close)
        if all(isinstance(k, int) for k in result) and list(result) == list(range(len(result))):
            return list(result.values())
        return result


def parse_config(text: str) -> dict:
    """The ``$CONFIG`` array of a config.php text."""
    body = text.strip()
    if body.startswith("<?php"):
        body = body[5:]
    body = body.rsplit("?>", 1)[0] if body.rstrip().endswith("?>") else body
    toks = _tokens(body)
    p = _Parser(toks)
    config = None
    while p.peek()[0] != "eof":
        kind, text_, _line = p.take()
        if kind == "word" and text_ == "$CONFIG":
            p.take("=")
            config = p.value()
            p.take(";")
    if not isinstance(config, dict):
        raise UserError("config.php has no $CONFIG array")
    return config


def read_config(path: str) -> NextcloudConfig:
    """The secret, instance ID and data directory from a Nextcloud config.php."""
    try:
        with open(path, encoding="utf-8") as f:
            values = parse_config(f.read())
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a text file") from None
    secret = values.get("secret")
    instanceid = values.get("instanceid")
    if not isinstance(secret, str) or not isinstance(instanceid, str):
        raise UserError(f"{path} has no 'secret' or 'instanceid' (is it Nextcloud's "
                        "config/config.php?)")
    datadir = values.get("datadirectory")
    version = values.get("version")
    return NextcloudConfig(secret, instanceid, datadir if isinstance(datadir, str) else None,
                           version if isinstance(version, str) else None, values)
