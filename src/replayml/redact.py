"""Secret redaction for everything a run writes: params, tags, config artifacts, overrides.

A key is secret-like when its last segment is a whole-word token/secret/password/api key name
(`db.password`, `tags.api_token`), so names like `num_tokens` are left alone. Values that came
from `${oc.env:...}` and user-info in URLs are redacted too.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

PLACEHOLDER = "***REDACTED***"
#: `replayml.redacted_hash.<key>`: a salted hash of a redacted value the model depends on, so a
#: replay can check the value it is given without the value being recorded
FINGERPRINT_TAG = "replayml.redacted_hash."
_SECRET = re.compile(
    r"(^|_)(token|secret|password|passwd|pwd|api_?key|apikey|credentials?|private_key|auth)(_|$)"
)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<info>[^/@\s]+)@")
#: what Hydra's sweeper backslash-escapes in the overrides it logs
_HYDRA_SPECIAL = re.compile(r"([\\()\[\]{}:=, \t])")


def is_secret_key(key: str) -> bool:
    """True when the last dotted segment of `key` names a secret."""
    last = key.lower().lstrip("+~").split(".")[-1]
    return bool(_SECRET.search(last))


def redact_text(text: str) -> str:
    """Remove user-info from any URL in `text`."""
    return _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{PLACEHOLDER}@", text)


def strip_userinfo(url: str) -> str:
    """The URL without any user:password part (for display and links)."""
    parts = urlsplit(url)
    if not (parts.username or parts.password):
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def redact_tree(tree: Any, env_keys: set[str], prefix: str = "") -> Any:
    """A copy of nested dicts/lists with secret and env-sourced keys and URL user-info redacted."""
    if isinstance(tree, dict):
        return {
            k: (
                PLACEHOLDER
                if (is_secret_key(f"{prefix}{k}") or f"{prefix}{k}" in env_keys)
                and tree[k] is not None
                else redact_tree(tree[k], env_keys, f"{prefix}{k}.")
            )
            for k in tree
        }
    if isinstance(tree, list):
        return [redact_tree(v, env_keys, prefix) for v in tree]
    if isinstance(tree, str):
        return redact_text(tree)
    return tree


def redact_override(override: str) -> str:
    """`key=value` with the value redacted when the key is secret-like."""
    key, sep, value = override.partition("=")
    if sep and is_secret_key(key):
        return f"{key}={PLACEHOLDER}"
    return redact_text(override)


def env_interpolated_keys(node: Any, prefix: str = "") -> set[str]:
    """Dotted keys whose raw (unresolved) value uses `${oc.env:...}`."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    keys: set[str] = set()
    if isinstance(node, DictConfig):
        for k in node:
            key = f"{prefix}{k}"
            raw = OmegaConf.to_container(node, resolve=False).get(k)  # type: ignore[union-attr]
            if isinstance(raw, str) and "oc.env" in raw:
                keys.add(key)
            child = node._get_node(k)
            if isinstance(child, DictConfig | ListConfig):
                keys |= env_interpolated_keys(child, key + ".")
    return keys


def secret_values(overrides: list[str], env_values: list[str]) -> set[str]:
    """Literal secret strings to scrub from any output: secret-like override values, values
    that came from the environment through `${oc.env:...}`, and URL passwords."""
    found: set[str] = set()
    for v in env_values:
        if re.fullmatch(r"(?:https?|databricks|postgresql|mysql)[a-z0-9+.-]*://[^\s?#]+", v or ""):
            # an address from the environment (a team server's MLFLOW_TRACKING_URI) is not a
            # secret: printing it keeps run links usable; a password inside it is one (and one
            # with a query string, which may carry a key, stays scrubbed whole)
            found |= {m.group("info").partition(":")[2] for m in _URL_USERINFO.finditer(v)} - {""}
        elif v and len(v) >= 4:
            found.add(v)
    for o in overrides:
        key, sep, value = o.partition("=")
        if sep and is_secret_key(key) and value:
            # and as Hydra's sweeper logs it, special characters backslash-escaped; a sweep's
            # `key=a,b` also as each of its values (the jobs' own overrides)
            found |= {value, _HYDRA_SPECIAL.sub(r"\\\1", value)}
            found |= {part for part in value.split(",") if len(part) >= 4}
        for m in _URL_USERINFO.finditer(o):
            _, _, password = m.group("info").partition(":")
            if password:
                found.add(password)
    return found


_KNOWN_SECRETS: set[str] = set()
_TOKEN = re.compile(r"(?P<key>[+~]?[\w.\-/]+)=(?P<value>[^\s,\]]+)")


def remember_secrets(values: set[str]) -> None:
    """Add literal secret values that every `RedactingFilter` scrubs from now on."""
    _KNOWN_SECRETS.update(v for v in values if v)


def scrub(text: str) -> str:
    """`text` without known secret values, secret-like `key=value` values or URL user-info."""
    for secret in sorted(_KNOWN_SECRETS, key=len, reverse=True):
        text = text.replace(secret, PLACEHOLDER)
    text = _TOKEN.sub(
        lambda m: (
            f"{m.group('key')}={PLACEHOLDER}" if is_secret_key(m.group("key")) else m.group(0)
        ),
        text,
    )
    return redact_text(text)


def _scrub_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # a malformed call: logging reports it when a handler formats it
        return
    clean = scrub(message)
    if clean != message:
        record.msg, record.args = clean, None


class RedactingFilter(logging.Filter):
    """A logging filter that scrubs secrets from records (for a handler configured by hand;
    `install_log_redaction` covers every handler)."""

    def filter(self, record: logging.LogRecord) -> bool:
        _scrub_record(record)
        return True


def _scrubbing(previous: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _scrub_record(record)
        return record

    make_record.scrubs_secrets = True  # type: ignore[attr-defined]
    return make_record


def install_log_redaction(secrets: set[str]) -> None:
    """Remember `secrets` and scrub them from every log record as it is made, whichever
    handlers Hydra's logging options (`hydra/job_logging=stdout`, `=disabled`, ...) set up."""
    remember_secrets(secrets)
    current = logging.getLogRecordFactory()
    if not getattr(current, "scrubs_secrets", False):
        logging.setLogRecordFactory(_scrubbing(current))


class ScrubbingStream:
    """A text stream that scrubs known secrets from what is written to it (Hydra writes some
    lines, such as a failed job's overrides, straight to `sys.stderr`, not through logging)."""

    scrubs_secrets = True

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(scrub(text) if _KNOWN_SECRETS or "=" in text else text)
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def guard_output(arguments: list[str]) -> None:
    """Before Hydra composes anything: scrub the secret values among the command-line
    `arguments` from every log record (Hydra's own `hydra.verbose` config dump included) and
    from what is written to stdout and stderr."""
    import sys

    install_log_redaction(secret_values(arguments, []))
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not getattr(stream, "scrubs_secrets", False):
            setattr(sys, name, ScrubbingStream(stream))


def fingerprint(value: str, salt: str | None = None) -> str:
    """`salt:sha256(salt + value)`, with a new random salt unless one is given."""
    import hashlib
    import secrets

    salt = salt if salt is not None else secrets.token_hex(8)
    return f"{salt}:{hashlib.sha256((salt + value).encode()).hexdigest()}"


def matches_fingerprint(value: str, recorded: str) -> bool:
    """Whether `value` (as given, or as YAML reads it: `0.10` is the float 0.1) is the value
    whose fingerprint is `recorded`."""
    import yaml

    salt = recorded.partition(":")[0]
    candidates = {value}
    with contextlib.suppress(yaml.YAMLError):
        candidates.add(str(yaml.safe_load(value)))
    return any(fingerprint(c, salt) == recorded for c in candidates)
