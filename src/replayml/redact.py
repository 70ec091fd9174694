"""Secret redaction for everything a run writes: params, tags, config artifacts, overrides.

A key is secret-like when its last segment is a whole-word token/secret/password/api key name
(`db.password`, `tags.api_token`), so names like `num_tokens` are left alone. Values that came
from `${oc.env:...}` and user-info in URLs are redacted too.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

PLACEHOLDER = "***REDACTED***"
_SECRET = re.compile(
    r"(^|_)(token|secret|password|passwd|pwd|api_?key|apikey|credentials?|private_key|auth)(_|$)"
)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<info>[^/@\s]+)@")


def is_secret_key(key: str) -> bool:
    """True when the last dotted segment of `key` names a secret."""
    last = key.lower().lstrip("+~").split(".")[-1]
    return bool(_SECRET.search(last))


def redact_text(text: str) -> str:
    """Remove user-info from any URL in `text`."""
    return _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{PLACEHOLDER}@", text)


def redact_url(url: str) -> str:
    """A URL with its user:password part replaced by the placeholder."""
    parts = urlsplit(url)
    if not (parts.username or parts.password):
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"{PLACEHOLDER}@{host}", parts.path, parts.query, ""))


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
